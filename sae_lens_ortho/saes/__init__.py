"""Thin SAELens adapters: the ortho config and mixin, and one file per architecture family."""
