"""Every seed recipe: its settings are the paper's, and its example trains end to end offline, saves and reloads."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
from sae_lens import SAE

from sae_lens_ortho.hub import seed_paper_for
from sae_lens_ortho.presets import PRESETS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_example_trains_offline_saves_and_reloads(name, tmp_path, monkeypatch):
    preset = PRESETS[name]()
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--offline", "--out", str(tmp_path)])
    runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    final = tmp_path / "final"
    cfg = json.loads((final / "cfg.json").read_text())
    # Every recipe builds on the standard (ReLU + L1) SAE; a changed encoder (000's LayerNorm, 004's local
    # competition) saves as our own inference architecture.
    changed = preset.sae.ortho_encoder_layer_norm or preset.sae.ortho_competition_gamma > 0
    assert cfg["architecture"] == ("standard_ortho" if changed else "standard")
    assert (name in ("memory_efficient_selective_ortho", "selective_neural_competition")) == changed
    details = cfg["metadata"]["training_architecture_details"]
    assert cfg["metadata"]["training_architecture"] == "standard_ortho"
    assert cfg["metadata"]["ortho_preset"] == name
    assert seed_paper_for(cfg)[1].seed == preset.seed  # the model card names this preset's paper
    for field in ("ortho_coefficient", "ortho_weighting", "ortho_adaptive", "ortho_decoder_penalty"):
        assert details[field] == getattr(preset.sae, field), field
    for field in ("ortho_manage_every", "ortho_micro_batch_size"):  # on in the recipe: on (at toy size) offline
        assert bool(details[field]) == bool(getattr(preset.sae, field)), field
    sae = SAE.load_from_disk(final)
    x = torch.randn(8, sae.cfg.d_in)
    assert torch.isfinite(sae(x)).all()


def test_presets_carry_the_papers_numbers():
    p000 = PRESETS["memory_efficient_selective_ortho"]()
    assert (p000.sae.ortho_pair_fraction, p000.sae.ortho_chunk_size, p000.sae.ortho_tau) == (0.001, 512, 0.5)
    assert p000.sae.d_sae == 64 * 512 and p000.runner["model_name"] == "pythia-70m-deduped"
    assert p000.runner["lr"] == 3e-4 and p000.runner["train_batch_size_tokens"] == 2048
    p001 = PRESETS["adaptive_ortho"]()
    assert p001.sae.ortho_pair_fraction == 0.005 and p001.sae.ortho_adaptive == "recon"
    assert (p001.sae.ortho_strength_init, p001.sae.ortho_strength_min, p001.sae.ortho_strength_max) == (0.05, 0.01, 0.2)
    assert p001.runner["lr"] == 9e-4
    p002 = PRESETS["selective_decorrelation"]()
    assert p002.sae.ortho_weighting == "hinge" and p002.sae.ortho_adaptive == "threshold"
    p003 = PRESETS["controlled_feature_sharing"]()
    assert p003.sae.ortho_decoder_penalty == "grouped" and p003.sae.ortho_groups == 8
    assert (p003.sae.ortho_decoder_start, p003.sae.ortho_decoder_coefficient) == (1.0, 0.5)
    p004 = PRESETS["selective_neural_competition"]()
    assert (p004.sae.ortho_pair_filter, p004.sae.ortho_z, p004.sae.ortho_min_pairs) == ("zscore", 2.0, 10)
    assert (p004.sae.ortho_momentum, p004.sae.ortho_target_corr, p004.sae.ortho_strength_max) == (0.9, 0.1, 0.5)
    assert (
        p004.sae.ortho_competition_gamma,
        p004.sae.ortho_competition_radius,
        p004.sae.ortho_competition_threshold,
        p004.sae.ortho_competition_decay,
    ) == (0.3, 32, 0.1, 0.99)
    assert (
        p004.sae.ortho_manage_every,
        p004.sae.ortho_importance_decay,
        p004.sae.ortho_realloc_threshold,
        p004.sae.ortho_prune_threshold,
        p004.sae.ortho_prune_protect_quantile,
    ) == (100, 0.99, 0.01, 0.8, 0.9)
    assert p000.sae.ortho_encoder_layer_norm and p000.sae.ortho_micro_batch_size == 8 * 128
    for p in (p000, p001, p002, p003, p004):
        assert p.runner["context_size"] == 128 and p.runner["dataset_path"] == "monology/pile-uncopyrighted"
        assert p.runner["n_batches_in_buffer"] * 128 >= p.runner["train_batch_size_tokens"]


def test_every_preset_says_what_it_is_for_what_was_measured_and_how_it_loads():
    """The presets table listed mechanisms only, and the README said their SAEs load anywhere although two save as
    standard_ortho (plain SAELens: KeyError). Each preset now carries the three lines, and docs/reference.md's table
    shows them as the code has them."""
    reference = (EXAMPLES.parent / "docs" / "reference.md").read_text()
    for name, make in PRESETS.items():
        preset = make()
        assert preset.use_for and preset.measured.startswith("not measured"), name
        changed = preset.sae.ortho_encoder_layer_norm or preset.sae.ortho_competition_gamma > 0
        assert ("standard_ortho" in preset.loads and "only with sae-lens-ortho" in preset.loads) == changed, name
        assert preset.loads.endswith("as `standard`") != changed, name
        assert preset.guide() == f"{name}: for {preset.use_for}; measured: {preset.measured}; loads {preset.loads}"
        row = next(line for line in reference.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"| {preset.use_for} |" in row and row.endswith(f"| {preset.loads} |"), name
    assert "| `coactive_decoder_topk` (a recipe, not a preset) |" in reference
