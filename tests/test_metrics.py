"""``sae-lens-ortho metrics`` on a real offline wandb run: a preset's example trained with its default logging
(presets log to wandb; ``WANDB_MODE=offline`` keeps the run on disk), then the summary and the PNG curves."""

from __future__ import annotations

import json
import runpy
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
import wandb

from sae_lens_ortho.metrics import PANELS, load_run_metrics
from sae_lens_ortho.wandb_offline import WandbLogError, find_run_files, read_history, read_records
from sae_lens_ortho_cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``examples/adaptive_ortho.py --offline`` (seed 001: adaptive strength), 40 steps (4 logging steps), wandb offline."""
    tmp = tmp_path_factory.mktemp("metrics_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_DIR", str(tmp))
        mp.setenv("WANDB_MODE", "offline")
        argv = ["adaptive_ortho.py", "--offline", "--out", str(tmp / "run"), "--training-tokens", str(40 * 1024)]
        mp.setattr(sys, "argv", argv)
        try:
            runpy.run_path(str(EXAMPLES / "adaptive_ortho.py"), run_name="__main__")
        finally:
            if wandb.run is not None:
                wandb.finish()
    (run_file,) = find_run_files(tmp / "wandb")
    _wait_for_exit_record(run_file)
    return run_file.parent


def _wait_for_exit_record(run_file: Path, timeout: float = 120.0) -> None:
    """wandb's writer process may still be appending after ``wandb.finish()`` returns (seen on a loaded machine: the
    summary read 1 of 4 history rows); the run's file is complete once its ``exit`` record is in it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in read_records(run_file)):
                return
        except WandbLogError:
            pass  # a record half written
        if time.monotonic() > deadline:
            raise AssertionError(f"no exit record in {run_file} {timeout:.0f} s after wandb.finish()")
        time.sleep(0.2)


def test_metrics_summary_and_curves(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "curves"
    assert main(["metrics", str(run_dir.parent.parent), "--out", str(out)]) == 0  # the folder holding wandb/
    printed = capsys.readouterr().out
    assert f"run: {run_dir}" in printed and f"wrote {len(PANELS) + 1} PNGs to {out}" in printed
    for panel in PANELS:
        image: Any = matplotlib.image.imread(out / f"{panel.stem}.png")
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # a drawn figure, not blank
    overview: Any = matplotlib.image.imread(out / "training_curves.png")
    assert overview.shape[1] > 2 * overview.shape[0] * 0.6  # the 3 x 2 grid

    # the summary's numbers are the logged values (known answer: recomputed from the raw history)
    rows = [r for r in read_history(run_dir) if "losses/ortho_loss" in r]
    ortho = [float(r["losses/ortho_loss"]) for r in rows]
    assert len(ortho) >= 4
    line = next(l for l in printed.splitlines() if l.startswith("losses/ortho_loss "))
    n, first, last, low, high = line.split()[1:6]
    assert int(n) == len(ortho)
    assert [float(first), float(last), float(low), float(high)] == pytest.approx(
        [ortho[0], ortho[-1], min(ortho), max(ortho)], rel=1e-3
    )
    # the recipe's adaptive strength is logged and stays within its clip range [0.01, 0.2]
    strength = load_run_metrics(run_dir).series["metrics/ortho_strength"][1]
    assert strength and all(0.01 - 1e-6 <= s <= 0.2 + 1e-6 for s in strength)


def test_metrics_json_and_errors(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics", str(run_dir), "--json", "--no-plots"]) == 0
    summary = json.loads(capsys.readouterr().out)
    keys = {m["key"] for m in summary["metrics"]}
    assert {"losses/ortho_loss", "metrics/ortho_selected_corr_mean", "sparsity/dead_features"} <= keys
    assert not (run_dir / "ortho_metrics").exists()
    assert main(["metrics", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sae-lens-ortho metrics: error: no wandb offline run at") and err.count("\n") == 1
