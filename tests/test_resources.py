"""Resource guards and late failures, caught at construction or before the memory runs out (issue 11, item 6)."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sae_lens.saes.sae import TrainStepInput
from torch import Tensor

import sae_lens_ortho.saes.resources as resources
from sae_lens_ortho import (
    BatchTopKOrthoTrainingSAEConfig,
    StandardOrthoTrainingSAE,
    StandardOrthoTrainingSAEConfig,
    TopKOrthoTrainingSAE,
    TopKOrthoTrainingSAEConfig,
)
from sae_lens_ortho.core.footprint import (
    SelectionMemoryError,
    decoder_penalty_bytes,
    decoder_selection_bytes,
    sparse_selection_bytes,
)
from sae_lens_ortho.core.grouping import assign_and_update, grouped_decoder_penalty, init_centroids
from sae_lens_ortho.core.memory import peak_allocated_bytes
from sae_lens_ortho.core.pairs import choose_method, top_decoder_pairs
from sae_lens_ortho.core.penalties import (
    chunk_max_cos_penalty,
    decoder_gram_penalty,
    n_ranked_pairs,
    select_pairs_for_penalty,
    selected_decoder_cosines,
)
from sae_lens_ortho.saes.resources import OrthoMemoryError, selection_plan

GiB = 2**30


# --- validated at construction ---------------------------------------------------------------------------------


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers() -> None:
    cfg = TopKOrthoTrainingSAEConfig(
        d_in=np.int64(8),
        d_sae=np.int64(32),
        k=np.int32(4),
        ortho_coefficient=np.float32(0.5),
        ortho_pair_fraction=np.float64(0.01),
        ortho_warm_up_steps=np.int64(10),
        ortho_tau=np.float16(0.25),
        ortho_unit_norm_decoder=np.bool_(True),
    )
    assert cfg.ortho_coefficient == 0.5 and type(cfg.ortho_coefficient) is float
    assert type(cfg.ortho_warm_up_steps) is int and type(cfg.d_sae) is int and type(cfg.k) is int
    assert cfg.ortho_unit_norm_decoder is True
    json.dumps(cfg.to_dict())  # cfg.json stays plain JSON
    TopKOrthoTrainingSAE(cfg)
    StandardOrthoTrainingSAEConfig(
        d_in=8, d_sae=32, ortho_manage_every=np.int64(5), ortho_l1_target_rate=np.float32(0.1)
    )


@pytest.mark.parametrize("cfg_cls", [TopKOrthoTrainingSAEConfig, BatchTopKOrthoTrainingSAEConfig])
def test_k_above_d_sae_is_refused_naming_both(cfg_cls: type) -> None:
    with pytest.raises(ValueError, match=r"k must be .* \(0, d_sae=16\].*got 17"):
        cfg_cls(d_in=8, d_sae=16, k=17)
    cfg_cls(d_in=8, d_sae=16, k=16)  # k = d_sae is fine


def test_dense_selection_beyond_its_key_range_is_refused_and_auto_never_picks_it() -> None:
    with pytest.raises(ValueError, match=r"ortho_method='dense' supports d_sae <= 65536.*d_sae=70000"):
        StandardOrthoTrainingSAEConfig(d_in=4, d_sae=70_000, ortho_method="dense")
    assert choose_method(2000, 70_000) == "sparse"  # 64 k > n used to pick the dense scan, which then crashed
    # End to end at that size: auto used to choose the dense scan and fail at step 1.
    torch.manual_seed(0)
    sae = TopKOrthoTrainingSAE(TopKOrthoTrainingSAEConfig(d_in=4, d_sae=70_000, k=1_100, ortho_pair_fraction=1e-6))
    out = sae.training_forward_pass(
        TrainStepInput(torch.randn(2, 4), {"ortho": 1.0, "decoder_ortho": 0.0}, None, 0, False)
    )
    out.loss.backward()
    assert torch.isfinite(out.losses["ortho_loss"])


def test_a_micro_batch_larger_than_the_batch_warns_at_the_first_step() -> None:
    sae = StandardOrthoTrainingSAE(StandardOrthoTrainingSAEConfig(d_in=8, d_sae=32, ortho_micro_batch_size=64))
    step = TrainStepInput(torch.randn(16, 8), {"ortho": 1.0, "decoder_ortho": 0.0, "l1": 1.0}, None, 0, False)
    with pytest.warns(UserWarning, match=r"ortho_micro_batch_size \(64\) >= the training batch \(16 rows\)"):
        sae.training_forward_pass(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sae.training_forward_pass(step)  # once per run


# --- memory, from the config and the batch size ---------------------------------------------------------------


def _free(monkeypatch: pytest.MonkeyPatch, n_bytes: int) -> None:
    """Pretend the device has ``n_bytes`` free (the one reading of the hardware)."""
    monkeypatch.setattr(resources, "available_bytes", lambda device: n_bytes)


def test_the_issue_size_fails_early_with_the_figure_and_the_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """d_sae 65,536, k 512, batch 2,048: ~30 GB of co-firing products, which died in the allocator at step 1."""
    _free(monkeypatch, 16 * GiB)
    cfg = TopKOrthoTrainingSAEConfig(ortho_coefficient=0.1, d_in=8, d_sae=65_536, k=512, ortho_method="sparse")
    with pytest.raises(OrthoMemoryError) as info:
        selection_plan(cfg, 2048, "cpu")
    message = str(info.value)
    assert "or set ortho_method='dense' (estimated 6.6 GiB, fits)" in message
    assert "27.5 GiB" in message and "16.0 GiB are free" in message  # the estimate and the free memory
    assert "2048 x 512*511/2 = 267,911,168 co-firing products" in message
    assert "train_batch_size_tokens" in message and "k (the products grow with k^2)" in message
    assert sparse_selection_bytes(2048, 512, 0).bytes > 16 * 10**9
    # ortho_method="auto" (the default) takes the dense scan there instead, saying so.
    with pytest.warns(UserWarning, match="uses the dense pair selection"):
        assert (
            selection_plan(
                TopKOrthoTrainingSAEConfig(ortho_coefficient=0.1, d_in=8, d_sae=65_536, k=512), 2048, "cpu"
            ).method
            == "dense"
        )
    _free(monkeypatch, 4 * GiB)  # and when neither fits, the error names both
    with pytest.raises(OrthoMemoryError, match=r"ortho_method='dense' \(estimated 6.6 GiB, does not fit either\)"):
        selection_plan(TopKOrthoTrainingSAEConfig(ortho_coefficient=0.1, d_in=8, d_sae=65_536, k=512), 2048, "cpu")


def test_auto_takes_the_path_that_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    # k 32 of 1024 latents: auto picks the dense scan (64 k > n), which at batch 8192 needs ~1.7 GB (its 8192 x 8192
    # row Gram); the co-firing path needs ~0.45 GB.
    cfg = TopKOrthoTrainingSAEConfig(ortho_coefficient=0.1, d_in=8, d_sae=1024, k=32)
    _free(monkeypatch, 8 * GiB)
    assert selection_plan(cfg, 8192, "cpu").method == "dense"
    _free(monkeypatch, 1 * GiB)
    with pytest.warns(UserWarning, match="ortho_method='auto' uses the sparse pair selection"):
        assert selection_plan(cfg, 8192, "cpu").method == "sparse"
    explicit = TopKOrthoTrainingSAEConfig(ortho_coefficient=0.1, d_in=8, d_sae=1024, k=32, ortho_method="dense")
    with pytest.raises(OrthoMemoryError, match=r"or set ortho_method='sparse' \(estimated .* fits\)"):
        selection_plan(explicit, 8192, "cpu")


def test_the_first_training_step_checks_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    _free(monkeypatch, 2**20)  # 1 MiB free
    sae = TopKOrthoTrainingSAE(
        TopKOrthoTrainingSAEConfig(ortho_coefficient=0.1, d_in=8, d_sae=4096, k=64, ortho_method="sparse")
    )
    step = TrainStepInput(torch.randn(512, 8), {"ortho": 1.0, "decoder_ortho": 0.0}, None, 0, False)
    with pytest.raises(OrthoMemoryError, match="pair selection needs about"):
        sae.training_forward_pass(step)


def test_per_batch_cap_for_activations_of_unknown_width() -> None:
    g = torch.Generator().manual_seed(0)
    acts = torch.rand(64, 256, generator=g) * (torch.rand(64, 256, generator=g) < 0.2)  # ~50 non-zeros per row
    free = select_pairs_for_penalty(acts, 0.01, method="auto")
    capped = select_pairs_for_penalty(acts, 0.01, method="auto", max_cofiring_products=1000)
    dense = select_pairs_for_penalty(acts, 0.01, method="dense")
    assert torch.equal(capped.keys[capped.valid], dense.keys[dense.valid])  # the cap sent it to the dense scan
    assert free.keys.numel() == capped.keys.numel()
    with pytest.raises(SelectionMemoryError, match="more than the 1,000 that fit"):
        select_pairs_for_penalty(acts, 0.01, method="sparse", max_cofiring_products=1000)


def test_the_runner_checks_before_loading_the_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tiny import tiny_runner_config

    from sae_lens_ortho.training import CrashSafeTrainingRunner

    _free(monkeypatch, 1 * GiB)
    cfg = tiny_runner_config(
        tmp_path,
        TopKOrthoTrainingSAEConfig(ortho_coefficient=0.1, d_in=64, d_sae=65_536, k=512),
        model_name="not-a-model",
    )
    # Without the check the runner would try to load "not-a-model" (offline: an error of another kind).
    with pytest.raises(OrthoMemoryError, match="for a batch of 1024 rows"):
        CrashSafeTrainingRunner(cfg)


# --- every penalty form is planned (issue 23, item 6) ----------------------------------------------------------


def test_chunk_max_with_one_chunk_fails_naming_ortho_decoder_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """d_sae 65,536 in 1 chunk: a [65,536 x 65,536] block of cosines, which died at step 1 ("can't allocate")."""
    _free(monkeypatch, 16 * GiB)
    cfg = TopKOrthoTrainingSAEConfig(
        d_in=512, d_sae=65_536, k=64, ortho_decoder_coefficient=0.1, ortho_decoder_penalty="chunk_max",
        ortho_decoder_chunks=1,
    )  # fmt: skip
    with pytest.raises(OrthoMemoryError) as info:
        selection_plan(cfg, 1024, "cpu")
    message = str(info.value)
    assert "ortho_decoder_penalty='chunk_max' needs about 96.8 GiB" in message and "16.0 GiB are free" in message
    assert "raise ortho_decoder_chunks" in message and "ortho_decoder_penalty='gram' (estimated" in message
    chunks = int(re.search(r"; (\d+) fit\)", message).group(1))  # type: ignore[union-attr]
    selection_plan(replace(cfg, ortho_decoder_chunks=chunks), 1024, "cpu")  # the suggestion fits
    with pytest.raises(OrthoMemoryError):
        selection_plan(replace(cfg, ortho_decoder_chunks=chunks // 2), 1024, "cpu")  # and is the least that does


def test_grouped_with_many_groups_fails_naming_ortho_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """8,192 groups at d_in 512: 8,192 [512 x 512] Grams (8 GiB, twice over in the forward pass)."""
    _free(monkeypatch, 16 * GiB)
    cfg = TopKOrthoTrainingSAEConfig(
        d_in=512, d_sae=16_384, k=64, ortho_decoder_coefficient=0.1, ortho_decoder_penalty="grouped",
        ortho_groups=8192,
    )  # fmt: skip
    with pytest.raises(OrthoMemoryError) as info:
        selection_plan(cfg, 1024, "cpu")
    message = str(info.value)
    assert "ortho_decoder_penalty='grouped' needs about 16.7 GiB" in message
    groups = int(re.search(r"at most ([\d,]+) fit", message).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 4096 < groups < 8192
    selection_plan(replace(cfg, ortho_groups=groups), 1024, "cpu")
    with pytest.raises(OrthoMemoryError):
        selection_plan(replace(cfg, ortho_groups=groups + 1), 1024, "cpu")
    # The annealed penalty (seed 003) is on even at coefficient 0.
    with pytest.raises(OrthoMemoryError, match="lower ortho_groups"):
        selection_plan(replace(cfg, ortho_decoder_coefficient=0.0, ortho_decoder_start=0.1), 1024, "cpu")


def test_selection_by_decoder_is_planned_and_refused_beyond_its_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # d_sae 70,000 used to fail at step 1 advising "the sparse method", which does not exist for decoder pairs.
    with pytest.raises(ValueError, match=r"ortho_select_by='decoder' .* d_sae <= 65536, got d_sae=70000; use "):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=70_000, k=8, ortho_select_by="decoder")
    _free(monkeypatch, 2 * GiB)
    cfg = TopKOrthoTrainingSAEConfig(d_in=512, d_sae=65_536, k=64, ortho_coefficient=0.1, ortho_select_by="decoder")
    with pytest.raises(OrthoMemoryError) as info:
        selection_plan(cfg, 1024, "cpu")
    message = str(info.value)
    assert "decoder pair selection (ortho_select_by='decoder') needs about 2.1 GiB" in message
    assert "ortho_chunk_size (now 512)" in message and "ortho_select_by='activations'" in message
    assert "train_batch_size_tokens" not in message  # it does not depend on the batch
    assert "644.0 MiB of them planned for the gram decoder penalty" in message  # its metric runs in the same step
    selection_plan(replace(cfg, ortho_chunk_size=64), 1024, "cpu")


def test_metrics_only_work_that_does_not_fit_is_skipped_on_logging_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """ortho_coefficient=0: logging steps still ran the pair selection (and the decoder penalty) for their metrics,
    which the plan did not count; now it does, and skips them with a warning where they would not fit."""
    cfg = TopKOrthoTrainingSAEConfig(
        d_in=8, d_sae=4096, k=64, ortho_method="sparse", ortho_decoder_penalty="chunk_max", ortho_decoder_chunks=1
    )
    step = TrainStepInput(torch.randn(512, 8), {"ortho": 0.0, "decoder_ortho": 0.0}, None, 0, True)
    logged = TopKOrthoTrainingSAE(cfg).training_forward_pass(step).metrics
    assert "ortho_penalty" in logged and "ortho_decoder_penalty" in logged  # where they fit, they are logged
    _free(monkeypatch, 2**20)
    with pytest.warns(UserWarning) as seen:
        plan = selection_plan(cfg, 512, "cpu")
    assert plan.skipped_diagnostics == ("decoder_penalty", "pairs")
    messages = " ".join(str(w.message) for w in seen)
    assert "skip the ortho_decoder_penalty metric: ortho_decoder_coefficient is 0" in messages
    assert "skip the pair-selection metrics" in messages and "for a batch of 512 rows" in messages
    with pytest.warns(UserWarning, match="logging steps will skip"):
        logged = TopKOrthoTrainingSAE(cfg).training_forward_pass(step).metrics
    assert "ortho_penalty" not in logged and "ortho_decoder_penalty" not in logged
    with pytest.raises(OrthoMemoryError, match="pair selection needs about"):  # with the penalty on, it fails
        selection_plan(replace(cfg, ortho_coefficient=0.1), 512, "cpu")


@pytest.mark.parametrize(
    ("form", "fields"),
    [
        ("gram", {}),
        ("chunk_max", {"ortho_decoder_chunks": 1}),
        ("chunk_max", {"ortho_decoder_chunks": 8}),
        ("grouped", {"ortho_groups": 8}),
        ("grouped", {"ortho_groups": 256}),
        ("select_by_decoder", {"ortho_select_by": "decoder", "ortho_pair_fraction": 0.01}),
    ],
)
def test_the_decoder_estimates_bound_the_measured_peak(form: str, fields: dict[str, Any]) -> None:
    """Each estimate against torch's own accounting of one forward and backward (high side, within 3x)."""
    n, d = 2048, 64
    cfg = TopKOrthoTrainingSAEConfig(d_in=d, d_sae=n, k=8, **fields)
    W = torch.randn(n, d, requires_grad=True)
    if form == "select_by_decoder":
        m = n_ranked_pairs(n, cfg.ortho_pair_fraction)
        estimate = decoder_selection_bytes(n, d, m, cfg.ortho_chunk_size).bytes

        def loss() -> Tensor:
            with torch.no_grad():
                keys = top_decoder_pairs(W, m, cfg.ortho_chunk_size)
            return selected_decoder_cosines(W, keys.clamp_min(0)).pow(2).mean()
    else:
        estimate = decoder_penalty_bytes(form, n, d, groups=cfg.ortho_groups, chunks=cfg.ortho_decoder_chunks).bytes
        centroids = init_centroids(W, cfg.ortho_groups)

        def loss() -> Tensor:
            if form == "grouped":
                assignment, _ = assign_and_update(W, centroids)
                return grouped_decoder_penalty(W, assignment, cfg.ortho_groups)
            if form == "chunk_max":
                return chunk_max_cos_penalty(W, cfg.ortho_decoder_chunks)
            return decoder_gram_penalty(W)

    def step() -> None:
        loss().backward()
        W.grad = None

    peak, _ = peak_allocated_bytes(step, "cpu", warm_calls=1)
    assert peak <= estimate <= 3 * peak, (peak, estimate)


def test_the_runner_refuses_a_decoder_penalty_that_cannot_fit_before_loading_the_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tiny import tiny_runner_config

    from sae_lens_ortho.training import CrashSafeTrainingRunner

    _free(monkeypatch, 1 * GiB)
    sae_cfg = TopKOrthoTrainingSAEConfig(
        d_in=64, d_sae=16_384, k=8, ortho_decoder_coefficient=0.1, ortho_decoder_penalty="chunk_max",
        ortho_decoder_chunks=1,
    )  # fmt: skip
    with pytest.raises(OrthoMemoryError, match="raise ortho_decoder_chunks"):
        CrashSafeTrainingRunner(tiny_runner_config(tmp_path, sae_cfg, model_name="not-a-model"))
