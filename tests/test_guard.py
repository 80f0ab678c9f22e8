"""Non-finite inputs never reach the weights or the ortho state, and training stops naming the step
(issue 11, item 2). A NaN in one batch, or an fp16 overflow, used to write NaN into every parameter silently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from probes import RecordOps
from sae_lens.saes.sae import TrainingSAE, TrainStepInput
from safetensors.torch import load_file
from test_hot_path import SYNCING
from trainer_harness import BATCH, D_IN, D_SAE, STATEFUL, batches, fit_batches, poisoned, stateful_id, trainer_config

from sae_lens_ortho import (
    TopKOrthoTrainingSAE,
    TopKOrthoTrainingSAEConfig,
)
from sae_lens_ortho.saes.guard import NonFiniteTrainingError


@pytest.mark.parametrize("case", STATEFUL, ids=stateful_id)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_bad_batch_leaves_weights_and_state_finite_and_the_run_stops_naming_the_step(
    case: tuple[Any, Any, dict[str, Any]], bad: float, tmp_path: Path
) -> None:
    sae_cls, cfg_cls, kw = case
    torch.manual_seed(0)
    sae: TrainingSAE[Any] = sae_cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, **kw))
    data = poisoned(batches(10, BATCH, D_IN), step=6, value=bad)
    cfg = trainer_config(BATCH, 10, tmp_path / "ckpt", n_checkpoints=2)  # checkpoints after steps 4 and 7
    with pytest.raises(NonFiniteTrainingError, match="training step 6") as info:
        fit_batches(sae, data, cfg)
    assert info.value.step == 6
    for name, p in sae.named_parameters():
        assert torch.isfinite(p).all(), name
    for name, b in sae.named_buffers():
        if b.is_floating_point():
            assert torch.isfinite(b).all(), name
    # The checkpoint before the bad step is intact and loadable; none was written after it.
    good = tmp_path / "ckpt" / str(4 * BATCH)
    weights = load_file(good / "sae_weights.safetensors")
    assert int(weights["ortho_step"]) == 4 and all(
        torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()
    )
    later = tmp_path / "ckpt" / str(7 * BATCH)
    assert not (later / "sae_weights.safetensors").exists()


@pytest.mark.parametrize("case", STATEFUL, ids=stateful_id)
def test_a_bad_step_changes_no_buffer_but_the_step_count(case: tuple[Any, Any, dict[str, Any]]) -> None:
    sae_cls, cfg_cls, kw = case
    torch.manual_seed(0)
    sae = sae_cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, **kw))
    good, bad = batches(2, BATCH, D_IN)
    coefficients = {"ortho": 1.0, "decoder_ortho": 0.5, "l1": 1.0}
    sae.training_forward_pass(TrainStepInput(good, coefficients, None, 0, False)).loss.backward()
    before = {k: v.clone() for k, v in sae.named_buffers()}
    bad[0, 0] = float("nan")
    out = sae.training_forward_pass(TrainStepInput(bad, coefficients, None, 1, False))
    assert not torch.isfinite(out.loss)
    sae.zero_grad()
    out.loss.backward()
    for name, value in sae.named_buffers():
        if name == "ortho_step":
            assert int(value) == 2
        else:
            assert torch.equal(value, before[name]), name
    for name, p in sae.named_parameters():
        assert p.grad is None or torch.equal(p.grad, torch.zeros_like(p.grad)), name
    with pytest.raises(NonFiniteTrainingError, match="step 1"):  # read on the next logging step
        sae.training_forward_pass(TrainStepInput(good, coefficients, None, 2, True))


def test_fp16_autocast_overflow_is_caught_too(tmp_path: Path) -> None:
    """An fp16 forward pass that overflows (here: fp16 autocast around SAELens's step, on large inputs)."""
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(0)
    sae = TopKOrthoTrainingSAE(TopKOrthoTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=6))
    data = batches(6, BATCH, D_IN)
    data[3] = data[3] * 3e4  # finite in float32; the fp16 matmuls overflow 65504
    trainer = SAETrainer(cfg=trainer_config(BATCH, 6, None), sae=sae, data_provider=iter(data))
    trainer.autocast_if_enabled = torch.autocast("cpu", dtype=torch.float16)  # SAELens's own autocast seam
    trainer.fit()  # no checkpoint and no logging step: nothing reads the record during the run
    assert all(torch.isfinite(p).all() for p in sae.parameters())
    assert sae.ortho_first_nonfinite_step() == 3
    with pytest.raises(NonFiniteTrainingError, match="step 3"):  # the final save reads it
        sae.save_inference_model(tmp_path / "final")
    assert not (tmp_path / "final" / "sae_weights.safetensors").exists()


def test_plain_steps_are_unaffected_and_sync_free() -> None:
    """The guard adds no host synchronisation (the flag is device-side) and changes nothing on finite steps."""
    torch.manual_seed(0)
    sae = TopKOrthoTrainingSAE(TopKOrthoTrainingSAEConfig(d_in=D_IN, d_sae=512, k=4, ortho_method="sparse"))
    x = batches(1, BATCH, D_IN)[0]
    coefficients = {"ortho": 1.0, "decoder_ortho": 0.0}
    sae.training_forward_pass(TrainStepInput(x, coefficients, None, 0, False)).loss.backward()  # warm up
    sae.zero_grad()
    with RecordOps() as ops:
        out = sae.training_forward_pass(TrainStepInput(x, coefficients, None, 1, False))
        out.loss.backward()
    assert not ops.seen & SYNCING, sorted(ops.seen & SYNCING)
    assert sae.W_enc.grad is not None and sae.W_enc.grad.abs().sum() > 0
    assert sae.ortho_first_nonfinite_step() is None
