"""Evaluation: exact disentanglement diagnostics, synthetic ground truth, SAEBench."""
