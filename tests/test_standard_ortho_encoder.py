"""standard_ortho's encoder options: seed 000's ReLU(LayerNorm(.)) encoder and seed 004's local competition,
in training (the real per-step hooks of OrthoTrainingSAE, the real SAETrainer) and in the saved inference SAE."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
from sae_lens import SAE
from sae_lens.config import SAETrainerConfig
from sae_lens.registry import SAE_CLASS_REGISTRY, get_sae_class
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.standard_sae import StandardSAEConfig
from sae_lens.training.sae_trainer import SAETrainer
from safetensors.torch import load_file

from sae_lens_ortho import StandardOrthoTrainingSAE, StandardOrthoTrainingSAEConfig
from sae_lens_ortho.core.competition import (
    CoactivationTable,
    empty_coactivation_table,
    forget_features,
    neighborhoods,
    row_width,
    suppression_mask_dense,
    update_coactivation_history,
)
from sae_lens_ortho.evals.saebench.run import load_sae
from sae_lens_ortho.saes.config import ortho_field_names
from sae_lens_ortho.saes.ortho import register_inference_architecture
from sae_lens_ortho.saes.standard_inference import StandardOrthoSAE, StandardOrthoSAEConfig

D_IN, D_SAE, B = 16, 64, 64
# A fast EMA and a low threshold, so neighbourhoods form within a step or two.
COMP = dict(
    ortho_competition_gamma=0.3,
    ortho_competition_radius=8,
    ortho_competition_decay=0.5,
    ortho_competition_threshold=0.05,
)
LN = dict(ortho_encoder_layer_norm=True)
INFERENCE_KEYS = {"W_enc", "b_enc", "W_dec", "b_dec"}


def make(d_in: int = D_IN, d_sae: int = D_SAE, **kw) -> StandardOrthoTrainingSAE:
    torch.manual_seed(0)
    return StandardOrthoTrainingSAE(StandardOrthoTrainingSAEConfig(d_in=d_in, d_sae=d_sae, **kw))


def coefficients(sae) -> dict[str, float]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in sae.get_coefficients().items()}


def batch(seed: int, rows: int = B) -> torch.Tensor:
    return torch.randn(rows, D_IN, generator=torch.Generator().manual_seed(seed))


def forward_step(sae, x: torch.Tensor, n: int = 0, logging: bool = True):
    return sae.training_forward_pass(TrainStepInput(x, coefficients(sae), None, n, logging))


def train(sae, steps: int, lr: float = 1e-2) -> torch.optim.Optimizer:
    opt = torch.optim.Adam(sae.parameters(), lr)
    sae.ortho_bind_optimizer(opt)
    for n in range(steps):
        forward_step(sae, batch(100 + n), n).loss.backward()
        opt.step()
        opt.zero_grad()
    return opt


def table_of(sae) -> CoactivationTable:
    return CoactivationTable(sae.ortho_coact_neighbors.clone(), sae.ortho_coact_history.clone())


# --- (a) the LayerNorm encoder ----------------------------------------------------------------------------


def test_layer_norm_encoder_is_relu_of_a_hand_written_layer_norm():
    sae = make(**LN)
    assert torch.equal(sae.ln_weight, torch.ones(D_SAE)) and torch.equal(sae.ln_bias, torch.zeros(D_SAE))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.ln_weight.copy_(torch.rand(D_SAE, generator=g) + 0.5)
        sae.ln_bias.copy_(torch.randn(D_SAE, generator=g))
        sae.b_enc.copy_(torch.randn(D_SAE, generator=g))
        sae.b_dec.copy_(torch.randn(D_IN, generator=g))
    x = batch(2)
    with torch.no_grad():
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        mu = pre.mean(-1, keepdim=True)
        var = ((pre - mu) ** 2).mean(-1, keepdim=True)  # biased variance, as LayerNorm
        want = (pre - mu) / torch.sqrt(var + 1e-5) * sae.ln_weight + sae.ln_bias
        acts, hidden_pre = sae.encode_with_hidden_pre(x)
    torch.testing.assert_close(hidden_pre, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(acts, want.relu(), rtol=1e-5, atol=1e-5)
    assert 0 < (acts > 0).float().mean() < 1


def test_layer_norm_parameters_exist_only_with_the_option_and_are_trained():
    assert not {"ln_weight", "ln_bias"} & {n for n, _ in make().named_parameters()}
    sae = make(**LN)
    assert {"ln_weight", "ln_bias"} <= {n for n, _ in sae.named_parameters()}
    train(sae, 2)
    assert not torch.equal(sae.ln_weight, torch.ones(D_SAE))
    assert not torch.equal(sae.ln_bias, torch.zeros(D_SAE))


# --- (c) competition in the forward pass: a hand-built case ----------------------------------------------


def identity_sae(**kw) -> StandardOrthoTrainingSAE:
    """d_in = d_sae = 4 with identity encoder / decoder: pre-competition activations are ReLU(x).
    Features 0 and 1 are neighbours (H = 0.5 both ways); 2 and 3 have no neighbours."""
    # ortho_groups: config validation wants it <= d_sae even when the grouped penalty is off.
    sae = make(d_in=4, d_sae=4, ortho_competition_gamma=0.3, ortho_competition_radius=2, ortho_groups=4, **kw)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(4))
        sae.W_dec.copy_(torch.eye(4))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.ortho_coact_neighbors[0, 0], sae.ortho_coact_history[0, 0] = 1, 0.5
        sae.ortho_coact_neighbors[1, 0], sae.ortho_coact_history[1, 0] = 0, 0.5
    return sae


X_HAND = torch.tensor([[2.0, 1.0, 3.0, 0.5], [0.0, 1.0, 3.0, 0.5], [-1.0, 4.0, 3.0, 5.0]])


def test_hand_built_competition_scales_only_the_weaker_neighbour():
    sae = identity_sae()
    want = torch.tensor([[2.0, 0.7, 3.0, 0.5], [0.0, 1.0, 3.0, 0.5], [0.0, 4.0, 3.0, 5.0]])
    with torch.no_grad():
        assert torch.equal(sae.encode(X_HAND), want)  # 3 > 2 and 5 > 4 but not neighbours: untouched
    out = forward_step(sae, X_HAND)  # the real step: the hoods fixed by ortho_before_step
    assert torch.equal(out.feature_acts.detach(), want)
    assert out.metrics["ortho_competition_suppressed_fraction"].item() == pytest.approx(1 / 10)
    assert out.metrics["ortho_competition_mean_radius"].item() == pytest.approx(2 / 4)


def test_strength_is_activation_times_decoder_norm():
    sae = identity_sae()
    with torch.no_grad():
        sae.W_dec[1] *= 3.0  # s_1 = 1 * 3 > s_0 = 2: now feature 0 is the weaker one
        assert torch.equal(sae.encode(X_HAND)[0], torch.tensor([1.4, 1.0, 3.0, 0.5]))
    # The same SAE as an inference SAE, neighbourhoods frozen from the table, decides the same.
    inf = StandardOrthoSAE(StandardOrthoSAEConfig(d_in=4, d_sae=4, competition_gamma=0.3, competition_radius=2))
    state = {k: v for k, v in sae.state_dict().items() if k in INFERENCE_KEYS}
    inf.load_state_dict({**state, "competition_hoods": neighborhoods(sae.coactivation_table(), 0.1)})
    with torch.no_grad():
        assert torch.equal(inf.encode(X_HAND), sae.encode(X_HAND))
        sae.fold_W_dec_norm()  # a -> a |d|, |d| -> 1: the strengths, hence the decisions, are unchanged
        assert torch.allclose(sae.encode(X_HAND)[0], torch.tensor([1.4, 3.0, 3.0, 0.5]))


# --- (d) the co-activation table in training --------------------------------------------------------------


def test_step_updates_the_table_and_competes_in_the_step_start_neighbourhoods():
    sae = make(**COMP)
    out1 = forward_step(sae, batch(3))
    # First step: empty neighbourhoods, no competition; the table is the EMA of this batch's co-firing.
    acts1 = out1.feature_acts.detach()
    assert torch.equal(acts1, out1.hidden_pre.detach().relu())
    assert out1.metrics["ortho_competition_suppressed_fraction"].item() == 0
    want = update_coactivation_history(empty_coactivation_table(D_SAE, 8), *acts1.topk(row_width(acts1), dim=1), 0.5)
    assert torch.equal(sae.ortho_coact_neighbors, want.neighbors)
    assert torch.equal(sae.ortho_coact_history, want.history)

    hoods = neighborhoods(want, 0.05)
    assert (hoods < D_SAE).any()
    out2 = forward_step(sae, batch(4))
    pre = out2.hidden_pre.detach().relu()
    mask = suppression_mask_dense(pre, hoods, sae.W_dec.detach().norm(dim=-1))
    assert mask.any() and (~mask & (pre > 0)).any()
    assert torch.equal(out2.feature_acts.detach(), pre * torch.where(mask, 0.7, 1.0))
    frac = mask.sum().item() / (pre > 0).sum().item()
    assert out2.metrics["ortho_competition_suppressed_fraction"].item() == pytest.approx(frac)
    radius = (hoods < D_SAE).sum(1).float().mean().item()
    assert out2.metrics["ortho_competition_mean_radius"].item() == pytest.approx(radius)
    assert not torch.equal(sae.ortho_coact_history, want.history)  # the second step moved it again
    assert "ortho_competition_mean_radius" not in forward_step(sae, batch(5), logging=False).metrics


def test_table_survives_state_dict_and_checkpoint_round_trips(tmp_path: Path):
    sae = make(**LN, **COMP)
    train(sae, 3)
    assert (sae.ortho_coact_neighbors >= 0).any()
    state = sae.state_dict()
    assert {"ortho_coact_neighbors", "ortho_coact_history", "ln_weight", "ln_bias"} <= set(state)
    fresh = make(**LN, **COMP)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.ortho_coact_neighbors, sae.ortho_coact_neighbors)
    assert torch.equal(fresh.ortho_coact_history, sae.ortho_coact_history)
    sae.save_model(tmp_path)  # what SAELens's checkpoints write
    loaded = StandardOrthoTrainingSAE.load_from_disk(tmp_path)
    assert isinstance(loaded, StandardOrthoTrainingSAE)
    assert torch.equal(loaded.ortho_coact_neighbors, sae.ortho_coact_neighbors)
    assert torch.equal(loaded.ortho_coact_history, sae.ortho_coact_history)
    x = batch(6)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), sae.encode(x))


def test_micro_batches_compete_in_the_same_neighbourhoods_as_the_whole_batch():
    full, micro = make(**COMP), make(**COMP, ortho_micro_batch_size=16)
    for sae in (full, micro):
        forward_step(sae, batch(7))  # fill the table
        sae.zero_grad()  # accumulated_forward already backpropagated that step's earlier micro-batches
    outs = []
    for sae in (full, micro):
        out = forward_step(sae, batch(8))
        out.loss.backward()
        outs.append(out)
    assert outs[0].metrics["ortho_competition_suppressed_fraction"] > 0
    assert torch.equal(outs[0].feature_acts.detach(), outs[1].feature_acts.detach())
    assert torch.equal(full.ortho_coact_neighbors, micro.ortho_coact_neighbors)
    assert torch.equal(full.ortho_coact_history, micro.ortho_coact_history)
    torch.testing.assert_close(
        outs[0].metrics["ortho_competition_suppressed_fraction"],
        outs[1].metrics["ortho_competition_suppressed_fraction"],
    )
    torch.testing.assert_close(micro.W_enc.grad, full.W_enc.grad, rtol=1e-4, atol=1e-6)


def test_reinit_forgets_features_and_resets_their_layer_norm_and_adam_state():
    sae = make(**LN, **COMP)
    opt = train(sae, 3)
    mask = torch.zeros(D_SAE, dtype=torch.bool)
    named = sae.ortho_coact_neighbors[sae.ortho_coact_neighbors >= 0]
    mask[named[:2]] = True  # features that are in some neighbourhood table
    before = table_of(sae)
    w, b = sae.ln_weight.detach().clone(), sae.ln_bias.detach().clone()
    moments = {p: {k: opt.state[p][k].clone() for k in ("exp_avg", "exp_avg_sq")} for p in (sae.ln_weight, sae.ln_bias)}
    assert all((m[mask] != 0).all() for ms in moments.values() for m in ms.values())
    with torch.no_grad():
        sae.ortho_on_reinit(mask)
    want = forget_features(before, mask)
    assert torch.equal(sae.ortho_coact_neighbors, want.neighbors) and torch.equal(sae.ortho_coact_history, want.history)
    assert not torch.equal(want.neighbors, before.neighbors)
    assert torch.equal(sae.ln_weight[mask], torch.ones(2)) and torch.equal(sae.ln_bias[mask], torch.zeros(2))
    assert torch.equal(sae.ln_weight[~mask], w[~mask]) and torch.equal(sae.ln_bias[~mask], b[~mask])
    for p, ms in moments.items():
        for k, old in ms.items():
            assert (opt.state[p][k][mask] == 0).all()
            assert torch.equal(opt.state[p][k][~mask], old[~mask])


# --- fold_W_dec_norm -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [LN, COMP, {**LN, **COMP}], ids=["ln", "competition", "both"])
def test_fold_keeps_the_function_of_the_training_sae(options):
    sae = make(**options)
    train(sae, 3)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(D_SAE, 1, generator=torch.Generator().manual_seed(9)) + 0.5)  # uneven norms
        x = batch(10)
        acts, out = sae.encode(x), sae(x)
        W_enc = sae.W_enc.clone()
        norms = sae.fold_and_get_W_dec_norm()
        torch.testing.assert_close(sae(x), out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae.encode(x), acts * norms, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(D_SAE))
    assert torch.equal(sae.W_enc, W_enc) == bool(options.get("ortho_encoder_layer_norm"))  # LN: folded into the affine


# --- (b) the saved inference SAE ------------------------------------------------------------------------------


@pytest.mark.parametrize("unit_norm", [False, True], ids=["plain", "unit_norm_decoder"])
@pytest.mark.parametrize("options", [LN, COMP, {**LN, **COMP}], ids=["ln", "competition", "both"])
def test_saved_inference_sae_computes_what_the_training_sae_computes(options, unit_norm, tmp_path: Path):
    sae = make(**options, ortho_unit_norm_decoder=unit_norm)
    train(sae, 3)
    x = torch.randn(2, 40, D_IN, generator=torch.Generator().manual_seed(11))  # [batch, pos, d_in], as a hook sees
    with torch.no_grad():
        acts, out = sae.encode(x), sae(x)
        recon = sae.decode(acts)
    sae.save_inference_model(tmp_path)

    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "standard_ortho"
    assert cfg["encoder_layer_norm"] == bool(options.get("ortho_encoder_layer_norm", False))
    assert cfg["competition_gamma"] == options.get("ortho_competition_gamma", 0.0)
    assert cfg["competition_radius"] == sae.cfg.ortho_competition_radius
    assert not [k for k in cfg if k.startswith("ortho_")]
    assert cfg["metadata"]["training_architecture"] == "standard_ortho"
    assert set(ortho_field_names()) <= set(cfg["metadata"]["training_architecture_details"])
    keys = set(load_file(tmp_path / "sae_weights.safetensors"))
    want_keys = set(INFERENCE_KEYS)
    if options.get("ortho_encoder_layer_norm"):
        want_keys |= {"ln_weight", "ln_bias"}
    if options.get("ortho_competition_gamma"):
        want_keys.add("competition_hoods")
    assert keys == want_keys

    inf = SAE.load_from_disk(tmp_path)
    assert type(inf) is StandardOrthoSAE
    with torch.no_grad():
        if options.get("ortho_competition_gamma"):
            assert torch.equal(inf.competition_hoods, neighborhoods(sae.coactivation_table(), 0.05))
            assert (inf.competition_hoods < D_SAE).any()
            assert not torch.equal(acts, inf.hook_sae_acts_pre(inf._ortho_hidden_pre(inf.process_sae_in(x))).relu())
        close = dict(rtol=1e-5, atol=1e-5)
        if unit_norm:  # the save folded the last step's norms into the encoder side: same function
            torch.testing.assert_close(inf.encode(x), sae.encode(x), rtol=0, atol=0)
            torch.testing.assert_close(inf(x), out, **close)
            torch.testing.assert_close(inf.decode(inf.encode(x)), recon, **close)
        else:  # nothing folded: bit-identical
            assert torch.equal(inf.encode(x), acts)
            assert torch.equal(inf.decode(inf.encode(x)), recon)
            assert torch.equal(inf(x), out)
        folded = SAE.load_from_disk(tmp_path, fold_W_dec_norm=True)
        torch.testing.assert_close(folded.W_dec.norm(dim=-1), torch.ones(D_SAE))
        torch.testing.assert_close(folded(x), out, **close)
        norms = inf.W_dec.norm(dim=-1)
        torch.testing.assert_close(folded.encode(x), inf.encode(x) * norms, **close)


def test_loading_needs_the_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    sae = make(**LN)
    train(sae, 1)
    sae.save_inference_model(tmp_path)
    monkeypatch.delitem(SAE_CLASS_REGISTRY, "standard_ortho")  # as in a process that never imported the plugin
    with pytest.raises(KeyError, match="standard_ortho"):
        SAE.load_from_disk(tmp_path)


def test_without_an_option_it_still_saves_as_plain_standard(tmp_path: Path):
    sae = make()
    assert sae.cfg.get_inference_config_class() is StandardSAEConfig
    assert sae.cfg.get_inference_sae_cfg_dict()["architecture"] == "standard"
    assert make(**COMP).cfg.get_inference_config_class() is StandardOrthoSAEConfig
    train(sae, 1)
    sae.save_inference_model(tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == "standard"
    assert set(load_file(tmp_path / "sae_weights.safetensors")) == INFERENCE_KEYS


# --- (e) the real SAETrainer, end to end ----------------------------------------------------------------------


def test_trains_with_the_real_trainer_checkpoints_saves_and_reloads(tmp_path: Path):
    sae = make(**LN, **COMP, ortho_unit_norm_decoder=True, normalize_activations="expected_average_only_in")
    g = torch.Generator().manual_seed(12)
    data = iter(lambda: 5 * torch.randn(B, D_IN, generator=g), None)  # an endless stream of batches
    cfg = SAETrainerConfig(
        total_training_samples=5 * B,
        train_batch_size_samples=B,
        lr=1e-2,
        lr_end=1e-2,
        n_batches_for_norm_estimate=2,
        save_final_checkpoint=True,
        checkpoint_path=str(tmp_path / "ckpt"),
    )
    trained = SAETrainer(cfg=cfg, sae=sae, data_provider=data).fit()
    assert int(trained.ortho_step) == 5
    assert trained.cfg.normalize_activations == "none"  # the trainer folded its scaling factor
    assert (trained.ortho_coact_neighbors >= 0).any()

    ckpt = tmp_path / "ckpt" / f"final_{5 * B}"
    checkpoint = StandardOrthoTrainingSAE.load_from_disk(ckpt)
    assert torch.equal(checkpoint.ortho_coact_history, trained.ortho_coact_history)
    assert torch.equal(checkpoint.ln_weight, trained.ln_weight)
    with pytest.raises(ValueError, match=r"training\* checkpoint"):  # same architecture name, training weights
        SAE.load_from_disk(ckpt)
    converted, kind = load_sae(ckpt)  # the plugin's loader converts a checkpoint as the runner saves it
    assert kind == "checkpoint" and isinstance(converted, StandardOrthoSAE)

    x = 5 * batch(13)
    with torch.no_grad():
        out = trained(x)
    trained.save_inference_model(tmp_path / "final")
    inf = SAE.load_from_disk(tmp_path / "final")
    assert isinstance(inf, StandardOrthoSAE) and inf.cfg.encoder_layer_norm and inf.cfg.competition_gamma == 0.3
    with torch.no_grad():
        torch.testing.assert_close(inf(x), out, rtol=1e-5, atol=1e-4)
        assert torch.equal(inf.encode(x), trained.encode(x))
        torch.testing.assert_close(converted(x), out, rtol=1e-5, atol=1e-4)


# --- registration ----------------------------------------------------------------------------------------------


def test_inference_registration_is_idempotent_and_survives_a_reload():
    module = sys.modules["sae_lens_ortho.saes.standard_inference"]
    saved_entry = SAE_CLASS_REGISTRY["standard_ortho"]
    saved_namespace = dict(vars(module))
    try:
        register_inference_architecture("standard_ortho", StandardOrthoSAE, StandardOrthoSAEConfig)
        reloaded = importlib.reload(module)
        assert get_sae_class("standard_ortho") == (reloaded.StandardOrthoSAE, reloaded.StandardOrthoSAEConfig)

        class Impostor(StandardOrthoSAE):
            pass

        with pytest.raises(ValueError, match="already registered"):
            register_inference_architecture("standard_ortho", Impostor, StandardOrthoSAEConfig)
    finally:
        vars(module).update(saved_namespace)
        SAE_CLASS_REGISTRY["standard_ortho"] = saved_entry
    assert get_sae_class("standard_ortho") == (StandardOrthoSAE, StandardOrthoSAEConfig)


@pytest.mark.filterwarnings("ignore:The training dataset contains fewer samples")
def test_language_model_runner_saves_standard_ortho(tmp_path: Path):
    from sae_lens import LanguageModelSAETrainingRunner
    from tiny import D_MODEL, model_activations, tiny_dataset, tiny_model, tiny_runner_config, tiny_tokens

    sae_cfg = StandardOrthoTrainingSAEConfig(
        d_in=D_MODEL, d_sae=128, l1_coefficient=1.0, **LN, **COMP, ortho_unit_norm_decoder=True
    )
    cfg = tiny_runner_config(tmp_path, sae_cfg, training_tokens=5 * 1024)
    trained = LanguageModelSAETrainingRunner(cfg, override_model=tiny_model(), override_dataset=tiny_dataset()).run()
    assert int(trained.ortho_step) == 5
    saved = json.loads((tmp_path / "final" / "cfg.json").read_text())
    assert saved["architecture"] == "standard_ortho" and saved["competition_gamma"] == 0.3
    x = model_activations(tiny_model(), tiny_tokens(2, seed=7))
    inf = SAE.load_from_disk(tmp_path / "final")
    with torch.no_grad():
        assert torch.equal(inf.encode(x), trained.encode(x))
        torch.testing.assert_close(inf(x), trained(x), rtol=1e-5, atol=1e-4)


def test_a_training_checkpoint_is_not_mistaken_for_the_inference_sae(tmp_path: Path):
    # Both carry architecture "standard_ortho"; only the checkpoint's weights hold ortho_* training buffers.
    sae = make(**LN, **COMP)
    train(sae, 1)
    sae.save_model(tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == "standard_ortho"
    with pytest.raises(ValueError, match=r"training\* checkpoint"):
        SAE.load_from_disk(tmp_path)
