"""``standard_ortho``: SAELens's standard (ReLU + L1) SAE with the ortho losses; saved and loaded as ``standard``.

Its activations are dense-ish (ReLU), so ``ortho_method="auto"`` reads the batch's widest row and picks the
co-firing path when rows are sparse enough, else the chunked scan.
"""

from .ortho import add_ortho

__all__ = ["StandardOrthoTrainingSAE", "StandardOrthoTrainingSAEConfig"]

StandardOrthoTrainingSAE, StandardOrthoTrainingSAEConfig = add_ortho(
    "standard", class_prefix="StandardOrtho", module=__name__
)
