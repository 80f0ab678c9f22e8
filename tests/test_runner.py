"""End-to-end: SAELens's real ``LanguageModelSAETrainingRunner`` trains ``topk_ortho`` offline.

One 20-step run (module fixture, with a checkpoint after step 11) feeds most tests: the saved inference
SAE, loading it without the plugin, config round-trips, and resuming from the checkpoint.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
import torch
from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner
from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY, get_sae_training_class
from safetensors.torch import load_file, save_file
from tiny import model_activations, tiny_dataset, tiny_model, tiny_runner_config, tiny_tokens, tiny_topk_ortho_cfg

import sae_lens_ortho
from sae_lens_ortho import TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig
from sae_lens_ortho.saes.config import ortho_field_names
from sae_lens_ortho.saes.ortho import ORTHO_BUFFERS, register_training_architecture

pytestmark = [
    pytest.mark.filterwarnings("ignore:The training dataset contains fewer samples"),
    pytest.mark.filterwarnings("ignore:To copy construct from a tensor"),
]

TOTAL_STEPS = 20  # tiny_runner_config: 20 * 1024 tokens in batches of 1024
CKPT_STEPS = 11  # n_checkpoints=1: saved at the first step with n_training_samples > 10240
INFERENCE_KEYS = {"W_enc", "b_enc", "W_dec", "b_dec"}


@dataclass
class Trained:
    cfg: LanguageModelSAERunnerConfig[Any]
    sae: TopKOrthoTrainingSAE
    output: Path
    checkpoint: Path  # the mid-run checkpoint folder
    final_checkpoint: Path


def _train(cfg: LanguageModelSAERunnerConfig[Any]) -> Any:
    return LanguageModelSAETrainingRunner(cfg, override_model=tiny_model(), override_dataset=tiny_dataset()).run()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    tmp = tmp_path_factory.mktemp("trained")
    cfg = tiny_runner_config(tmp, n_checkpoints=1, save_final_checkpoint=True)
    sae = _train(cfg)
    assert cfg.checkpoint_path is not None and cfg.output_path is not None
    ckpt_root = Path(cfg.checkpoint_path)
    return Trained(
        cfg=cfg,
        sae=sae,
        output=Path(cfg.output_path),
        checkpoint=ckpt_root / str(CKPT_STEPS * 1024),
        final_checkpoint=ckpt_root / f"final_{TOTAL_STEPS * 1024}",
    )


# --- a. the final inference SAE ------------------------------------------------------------------------


def test_final_sae_saved_as_plain_topk(trained: Trained) -> None:
    assert isinstance(trained.sae, TopKOrthoTrainingSAE)
    assert int(trained.sae.ortho_step) == TOTAL_STEPS
    # The runner writes the final SAE straight into output_path (not a final/ subfolder).
    assert sorted(p.name for p in trained.output.iterdir()) == [
        "cfg.json",
        "runner_cfg.json",
        "sae_weights.safetensors",
        "sparsity.safetensors",
    ]
    cfg = json.loads((trained.output / "cfg.json").read_text())
    assert cfg["architecture"] == "topk"
    assert not [k for k in cfg if k.startswith("ortho_")]
    assert cfg["d_in"] == 64 and cfg["d_sae"] == 256 and cfg["k"] == 8
    meta = cfg["metadata"]
    assert meta["training_architecture"] == "topk_ortho"
    details = meta["training_architecture_details"]
    for name in [n for n in ortho_field_names() if n in TopKOrthoTrainingSAEConfig.__dataclass_fields__]:
        assert name in details, name
    assert details["ortho_coefficient"] == 0.1
    assert details["ortho_decoder_coefficient"] == 0.01
    assert details["ortho_pair_fraction"] == 0.01
    assert meta["hook_name"] == "blocks.0.hook_resid_post"
    assert 7.5 < meta["l0"] <= 8.0  # TopK k=8: (almost) every token fires 8 latents

    weights = load_file(trained.output / "sae_weights.safetensors")
    assert set(weights) == INFERENCE_KEYS
    # The save folded the decoder norms into the encoder: unit decoder rows.
    torch.testing.assert_close(weights["W_dec"].norm(dim=-1), torch.ones(256), atol=1e-5, rtol=0)


# --- b. the final SAE loads and computes the same thing without the plugin -----------------------------

_LOAD_WITHOUT_PLUGIN = textwrap.dedent(
    """
    import json, sys
    import torch
    from safetensors.torch import load_file, save_file
    from sae_lens import SAE

    sae_dir, x_path, out_path = sys.argv[1:4]
    sae = SAE.load_from_disk(sae_dir, device="cpu")
    sae.eval()
    x = load_file(x_path)["x"]
    with torch.no_grad():
        acts = sae.encode(x)
        save_file({"acts": acts.contiguous(), "decoded": sae.decode(acts), "forward": sae(x)}, out_path)
    loaded = sorted(m for m in sys.modules if m.startswith("sae_lens_ortho"))
    print(json.dumps({"class": type(sae).__name__, "architecture": sae.cfg.architecture(),
                      "plugin_modules": loaded}))
    assert "sae_lens_ortho" not in sys.modules
    """
)


def test_final_sae_loads_and_matches_without_plugin(trained: Trained, tmp_path: Path) -> None:
    x = model_activations(tiny_model(), tiny_tokens(4, seed=7))  # fresh tokens, real activations
    assert x.shape == (4 * 128, 64)
    x_path, out_path = tmp_path / "x.safetensors", tmp_path / "out.safetensors"
    save_file({"x": x}, x_path)

    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_PLUGIN, str(trained.output), str(x_path), str(out_path)],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"class": "TopKSAE", "architecture": "topk", "plugin_modules": []}

    sae = trained.sae
    sae.eval()
    with torch.no_grad():
        expected_acts = sae.encode(x)
        expected = sae(x)
    got = load_file(out_path)
    # Reconstructions are invariant under the decoder-norm folding; tight tolerance.
    torch.testing.assert_close(got["forward"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["decoded"], expected, rtol=1e-5, atol=1e-5)
    # With rescale_acts_by_decoder_norm the training SAE's activations already include the norms,
    # so the folded SAE fires the same latents with the same values.
    torch.testing.assert_close(got["acts"], expected_acts, rtol=1e-4, atol=1e-5)
    l0 = (got["acts"] != 0).sum(-1).float()
    assert float(l0.max()) <= 8 and float(l0.mean()) > 7.5
    # The reconstruction is not trivial (not just b_dec).
    assert float((expected - sae.b_dec.detach()).norm()) > 0.1 * float(x.norm())


# --- c. config round-trips ------------------------------------------------------------------------------


def _sae_fields(cfg: Any) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "metadata"}


def test_runner_config_round_trips(trained: Trained) -> None:
    cfg = trained.cfg
    again = LanguageModelSAERunnerConfig.from_dict(cfg.to_dict())
    assert type(again.sae) is TopKOrthoTrainingSAEConfig
    assert again.sae == cfg.sae
    assert again.to_dict() == cfg.to_dict()
    assert again.checkpoint_path == cfg.checkpoint_path  # from_dict must not append a second run id

    saved = json.loads((trained.output / "runner_cfg.json").read_text())
    assert saved["sae"]["architecture"] == "topk_ortho"
    from_file = LanguageModelSAERunnerConfig.from_dict(saved)
    assert type(from_file.sae) is TopKOrthoTrainingSAEConfig
    assert _sae_fields(from_file.sae) == _sae_fields(cfg.sae)
    assert from_file.sae.ortho_coefficient == 0.1 and from_file.sae.ortho_decoder_coefficient == 0.01
    assert from_file.training_tokens == cfg.training_tokens
    assert from_file.hook_name == cfg.hook_name
    assert from_file.checkpoint_path == cfg.checkpoint_path


def test_sae_config_dict_round_trips() -> None:
    cfg = tiny_topk_ortho_cfg(ortho_weighting="hinge", ortho_tau=0.3, ortho_warm_up_steps=5)
    d = cfg.to_dict()
    assert d["architecture"] == "topk_ortho"
    again = TopKOrthoTrainingSAEConfig.from_dict(json.loads(json.dumps(d)))
    assert type(again) is TopKOrthoTrainingSAEConfig
    assert _sae_fields(again) == _sae_fields(cfg)


# --- d. checkpoints keep, and resume restores, the ortho state ------------------------------------------


def test_checkpoint_holds_ortho_state(trained: Trained) -> None:
    for folder, steps in ((trained.checkpoint, CKPT_STEPS), (trained.final_checkpoint, TOTAL_STEPS)):
        weights = load_file(folder / "sae_weights.safetensors")
        assert set(weights) == INFERENCE_KEYS | {
            "ortho_step",
            "ortho_prev_pair_keys",
            "ortho_strength",
            "ortho_rng_seed",
        }
        assert set(weights) - INFERENCE_KEYS <= set(ORTHO_BUFFERS)
        assert int(weights["ortho_step"]) == steps
        keys = weights["ortho_prev_pair_keys"]
        assert keys.dtype == torch.int64
        assert int((keys >= 0).sum()) > 0  # the last step's selected pairs, not the -1 fill
        cfg = json.loads((folder / "cfg.json").read_text())
        assert cfg["architecture"] == "topk_ortho"  # checkpoints keep the training config
        assert cfg["ortho_coefficient"] == 0.1
    state = torch.load(trained.checkpoint / "trainer_state.pt", weights_only=False)
    assert state["n_training_samples"] == CKPT_STEPS * 1024
    assert state["coefficient_schedulers"]["ortho"]["current_step"] == CKPT_STEPS
    # The final checkpoint's buffers are the in-memory SAE's.
    final = load_file(trained.final_checkpoint / "sae_weights.safetensors")
    assert torch.equal(final["ortho_prev_pair_keys"], trained.sae.ortho_prev_pair_keys)


def test_resume_restores_ortho_state_and_finishes(trained: Trained, tmp_path: Path) -> None:
    ckpt = load_file(trained.checkpoint / "sae_weights.safetensors")
    cfg = tiny_runner_config(tmp_path, resume_from_checkpoint=str(trained.checkpoint))
    runner = LanguageModelSAETrainingRunner(cfg, override_model=tiny_model(), override_dataset=tiny_dataset())
    assert int(runner.sae.ortho_step) == 0  # a fresh SAE before the runner loads the checkpoint

    seen: dict[str, Any] = {}
    fit = runner.run_trainer_with_interruption_handling

    def observe_then_fit(trainer: Any) -> Any:
        # Called by run() after the checkpoint is loaded and before the first step.
        seen["ortho_step"] = runner.sae.ortho_step.clone()
        seen["keys"] = runner.sae.ortho_prev_pair_keys.clone()
        seen["W_enc"] = runner.sae.W_enc.detach().clone()
        seen["n_training_samples"] = trainer.n_training_samples
        return fit(trainer)

    runner.run_trainer_with_interruption_handling = observe_then_fit  # type: ignore[method-assign]
    sae = runner.run()

    assert int(seen["ortho_step"]) == CKPT_STEPS
    assert torch.equal(seen["ortho_step"], ckpt["ortho_step"])
    assert torch.equal(seen["keys"], ckpt["ortho_prev_pair_keys"])
    assert torch.equal(seen["W_enc"], ckpt["W_enc"])
    assert seen["n_training_samples"] == CKPT_STEPS * 1024
    # Training went on from step 11 to the end: 9 more steps.
    assert int(sae.ortho_step) == TOTAL_STEPS
    assert not torch.equal(sae.W_enc.detach(), ckpt["W_enc"])
    out = json.loads((tmp_path / "final" / "cfg.json").read_text())
    assert out["architecture"] == "topk"
    assert out["metadata"]["training_architecture"] == "topk_ortho"
    assert set(load_file(tmp_path / "final" / "sae_weights.safetensors")) == INFERENCE_KEYS


# --- e. a run that takes no step refuses to save --------------------------------------------------------


def test_zero_step_run_raises_and_saves_nothing(tmp_path: Path) -> None:
    cfg = tiny_runner_config(tmp_path, training_tokens=0)
    with pytest.raises(ValueError, match="no training step"):
        _train(cfg)
    output = tmp_path / "final"
    assert not (output / "cfg.json").exists()
    assert not (output / "sae_weights.safetensors").exists()


def test_fewer_tokens_than_one_batch_still_takes_one_step(tmp_path: Path) -> None:
    # SAELens's trainer loops while n_training_samples < training_tokens, so it takes
    # ceil(training_tokens / batch) steps although cfg.total_training_steps rounds down to 0.
    cfg = tiny_runner_config(tmp_path, training_tokens=512)  # < train_batch_size_tokens = 1024
    assert cfg.total_training_steps == 0
    sae = _train(cfg)
    assert int(sae.ortho_step) == 1
    assert json.loads((tmp_path / "final" / "cfg.json").read_text())["architecture"] == "topk"


# --- f. registration is idempotent ----------------------------------------------------------------------


def test_registration_is_idempotent() -> None:
    module = sys.modules["sae_lens_ortho.saes.topk"]
    saved_entry = SAE_TRAINING_CLASS_REGISTRY["topk_ortho"]
    saved_namespace = dict(vars(module))
    try:
        assert importlib.import_module("sae_lens_ortho") is sae_lens_ortho
        register_training_architecture("topk_ortho", TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig)
        reloaded = importlib.reload(module)
        sae_cls, cfg_cls = get_sae_training_class("topk_ortho")
        assert sae_cls is reloaded.TopKOrthoTrainingSAE and cfg_cls is reloaded.TopKOrthoTrainingSAEConfig
        assert cfg_cls.architecture() == "topk_ortho"
        # The reloaded classes still build a working SAE through the registry.
        sae = sae_cls(cfg_cls(d_in=8, d_sae=16, k=2))
        assert sae(torch.randn(3, 8)).shape == (3, 8)
        importlib.reload(module)  # twice
        assert get_sae_training_class("topk_ortho")[0].__qualname__ == "TopKOrthoTrainingSAE"

        class Impostor(TopKOrthoTrainingSAE):
            pass

        with pytest.raises(ValueError, match="already registered"):
            register_training_architecture("topk_ortho", Impostor, TopKOrthoTrainingSAEConfig)
    finally:
        # Put the original classes back, so later tests' isinstance checks see one class.
        vars(module).update(saved_namespace)
        SAE_TRAINING_CLASS_REGISTRY["topk_ortho"] = saved_entry
    assert get_sae_training_class("topk_ortho") == (TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig)
