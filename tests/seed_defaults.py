"""The seed papers' penalty as the ortho fields' defaults were before the defaults moved to the decoder: the
activation cosine itself, mean |C| at coefficient 1 in raw units. Tests of the seed mechanisms start from it."""

SEED_DEFAULTS = {
    "ortho_target": "activations",
    "ortho_scale": "none",
    "ortho_weighting": "abs",
    "ortho_coefficient": 1.0,
}
