"""The embedded demo at a tiny size: it runs end to end, writes a sane report, and really trains with the ortho loss."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import sae_lens_ortho
from sae_lens_ortho import demo
from sae_lens_ortho.demo import METRICS, DemoSettings, run_demo

# A few seconds on one CPU thread: 16 features in 8 dims, 24 steps of 256.
TINY = dict(
    n_features=16,
    d_in=8,
    d_sae=16,
    k=3,
    n_groups=3,
    group_size=2,
    training_samples=24 * 256,
    batch_size=256,
    lr_decay_steps=0,
    eval_samples=2_000,
    diag_samples=1_000,
    ortho_pair_fraction=0.05,
    progress=False,
)
TINY_ARGV = [
    "--n-features", "16", "--d-in", "8", "--d-sae", "16", "--k", "3", "--n-groups", "3", "--group-size", "2",
    "--samples", str(24 * 256), "--batch-size", "256", "--lr-decay-steps", "0", "--eval-samples", "2000",
    "--diag-samples", "1000", "--ortho-pair-fraction", "0.05", "--seeds", "0", "1", "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_out")
    results = demo.main([*TINY_ARGV, "--out", str(out)])
    return out, results


def test_report_written_with_both_architectures(cli_run):
    out, results = cli_run
    report = (out / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| metric |"))
    assert [c.strip() for c in header.strip("|").split("|")][1:3] == ["topk", "topk_ortho"]
    for label in ("MCC", "uniqueness", "F1", "explained variance", "dead latents", "decoder max \\|cos\\|"):
        assert label in report, label
    # Every row of the results table has as many cells as the header (no stray "|" in a label).
    table = report[report.index(header) :].split("\n\n")[0].splitlines()
    n_cells = lambda line: len(re.split(r"(?<!\\)\|", line))  # noqa: E731
    assert len(table) > 10 and {n_cells(line) for line in table} == {n_cells(header)}
    # The exact settings are in the report, and the command reproduces them.
    assert "`training_samples` | `6144`" in report
    assert "--samples 6144" in report and "--seeds 0 1" in report
    data = json.loads((out / "results.json").read_text())
    assert {r["architecture"] for r in data["runs"]} == {"topk", "topk_ortho"}
    assert sorted({r["seed"] for r in data["runs"]}) == [0, 1]
    assert data["settings"]["k"] == 3


def test_metrics_finite_and_in_range(cli_run):
    _, results = cli_run
    assert len(results.runs) == 4
    for run in results.runs:
        for key in METRICS:
            assert key in run.metrics, (run.architecture, key)
        for key, value in run.metrics.items():
            assert math.isfinite(value), (run.architecture, key, value)
            _, low, high, _ = METRICS.get(key, (key, None, None, None))
            if low is not None:
                assert value >= low - 1e-6, (run.architecture, key, value)
            if high is not None:
                assert value <= high + 1e-6, (run.architecture, key, value)
        assert run.metrics["sae_l0"] == pytest.approx(3.0)  # TopK: exactly k per sample
        assert 0 <= run.metrics["dead_latents"] <= 16
    for gt in results.ground_truth:
        assert all(math.isfinite(v) for v in gt.values())
    summary = results.summary()
    assert set(summary) == {"topk", "topk_ortho", "ground truth"}


def test_ortho_loss_was_active(cli_run):
    _, results = cli_run
    steps = results.settings.training_steps
    assert steps == 24
    for run in results.runs:
        if run.architecture == "topk_ortho":
            assert run.sae_class == "TopKOrthoTrainingSAE"
            assert isinstance(run.sae, sae_lens_ortho.TopKOrthoTrainingSAE)
            assert run.sae.cfg.ortho_coefficient == pytest.approx(1.0)
            assert run.ortho_step == steps == int(run.sae.ortho_step)
        else:
            assert run.sae_class == "TopKTrainingSAE"
            assert run.ortho_step is None


def test_trainer_passes_the_ortho_coefficient(monkeypatch):
    """train_toy_sae goes through SAETrainer: the ortho coefficient arrives in step_input.coefficients."""
    seen: list[dict[str, float]] = []
    orig = sae_lens_ortho.TopKOrthoTrainingSAE.calculate_aux_loss

    def spy(self, step_input, *args, **kwargs):
        seen.append(dict(step_input.coefficients))
        return orig(self, step_input, *args, **kwargs)

    monkeypatch.setattr(sae_lens_ortho.TopKOrthoTrainingSAE, "calculate_aux_loss", spy)
    settings = DemoSettings(**{**TINY, "training_samples": 4 * 256}, architectures=("topk_ortho",),
                            ortho_coefficient=0.7, ortho_warm_up_steps=2)
    run_demo(settings)
    assert len(seen) == 4
    # SAELens's scheduler: value * min(n, W) / W, so 0 at step 0.
    assert [c["ortho"] for c in seen] == pytest.approx([0.0, 0.35, 0.7, 0.7])
    assert all(c["decoder_ortho"] == 0.0 for c in seen)


def test_same_seed_same_start_only_the_ortho_loss_differs():
    """Both architectures start from the same weights and see the same batches: with the ortho coefficient at 0
    the trained weights are identical, with it on they differ."""
    off = run_demo(DemoSettings(**{**TINY, "training_samples": 6 * 256}, ortho_coefficient=0.0))
    on = run_demo(DemoSettings(**{**TINY, "training_samples": 6 * 256}, ortho_coefficient=1.0))
    by_arch = lambda res: {r.architecture: r.sae for r in res.runs}  # noqa: E731
    a, b = by_arch(off)["topk"], by_arch(off)["topk_ortho"]
    torch.testing.assert_close(a.W_dec, b.W_dec, rtol=0, atol=0)
    torch.testing.assert_close(a.W_enc, b.W_enc, rtol=0, atol=0)
    torch.testing.assert_close(by_arch(on)["topk"].W_dec, a.W_dec, rtol=0, atol=0)  # topk is unaffected
    assert not torch.equal(by_arch(on)["topk_ortho"].W_dec, a.W_dec)


def test_settings_validation():
    with pytest.raises(ValueError):
        DemoSettings(n_groups=40, group_size=2, n_features=64)
    with pytest.raises(ValueError):
        DemoSettings(seeds=())
    with pytest.raises(ValueError):
        DemoSettings(training_samples=10, batch_size=1024)
