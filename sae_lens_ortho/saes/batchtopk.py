"""``batchtopk_ortho``: SAELens's BatchTopK SAE with the ortho losses; saved as SAELens saves BatchTopK (a
``jumprelu`` SAE with the learned threshold), so it loads without this plugin.

Rows have a variable number of active latents, so the co-firing path reads the batch's widest row each step.
"""

from sae_lens_ortho.saes.ortho import add_ortho

__all__ = ["BatchTopKOrthoTrainingSAE", "BatchTopKOrthoTrainingSAEConfig"]

BatchTopKOrthoTrainingSAE, BatchTopKOrthoTrainingSAEConfig = add_ortho(
    "batchtopk", class_prefix="BatchTopKOrtho", module=__name__
)
