"""Synthetic ground-truth benchmark (SAELens synthetic models)."""
