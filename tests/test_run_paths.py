"""Output and checkpoint paths are checked before the model loads; failures and stops leave nothing half-written
(issue 23, items 2 and 5), with real file-system conditions (read-only and full tmpfs mounts, where this
machine allows mounting), real NaN batches and a real signal to a real child process.

Before the fix: a read-only ``output_path`` or one that is a file failed after all the training (with
``n_checkpoints=0``, nothing left on disk); a NaN in the last step left an empty ``final/`` and named no
checkpoint; a full disk left a hidden ``.incomplete-*`` folder holding the space; a NaN among the
normalisation-estimate batches was reported as a bad batch at step 0; SIGTERM during the output save killed
the process mid-write.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from child_process import Child
from crash_child import runner_config
from safetensors.torch import load_file
from tiny import tiny_dataset, tiny_model

from sae_lens_ortho.saes.guard import NonFiniteTrainingError
from sae_lens_ortho.training import CrashSafeTrainingRunner, is_complete_checkpoint, train

SHORT = 10


def _mount_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount rights): {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only file system (root ignores permission bits; only a read-only mount refuses root's writes)."""
    yield from _mount_tmpfs(tmp_path / "ro", "ro,size=1m")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB file system: room for one or two tiny checkpoints, not for all of them."""
    yield from _mount_tmpfs(tmp_path / "small", "size=1m")


def _no_model_load(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """SAELens's model loader, recording calls (and returning the tiny model if one is made)."""
    import sae_lens.llm_sae_training_runner as runner_mod

    calls: list[Any] = []
    monkeypatch.setattr(runner_mod, "load_model", lambda *a, **k: calls.append(a) or tiny_model())
    return calls


@pytest.mark.parametrize("field", ["output_path", "checkpoint_path"])
def test_a_read_only_path_fails_before_the_model_loads(
    field: str, read_only_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = _no_model_load(monkeypatch)
    cfg = runner_config(tmp_path, SHORT)
    setattr(cfg, field, str(read_only_dir / "sae"))
    with pytest.raises(ValueError, match=rf"^{field}: .*/ro/sae is not writable .*Read-only file system"):
        train(cfg, override_dataset=tiny_dataset())
    assert loads == []


def test_an_output_path_that_is_a_file_fails_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = _no_model_load(monkeypatch)
    cfg = runner_config(tmp_path, SHORT)
    Path(cfg.output_path).write_text("my notes")
    with pytest.raises(ValueError, match=r"^output_path: .*/final is an existing file"):
        train(cfg, override_dataset=tiny_dataset())
    assert loads == [] and Path(cfg.output_path).read_text() == "my notes"


class _Poisoned(CrashSafeTrainingRunner):
    """The crash-safe runner with NaN written into the ``poison_at``-th batch the trainer reads."""

    poison_at = 0

    def run_trainer_with_interruption_handling(self, trainer: Any) -> Any:
        source = trainer.data_provider

        def batches() -> Iterator[torch.Tensor]:
            i = 0
            while True:
                batch = next(source)
                if i == self.poison_at:
                    batch = batch.clone()
                    batch[0, 0] = float("nan")
                i += 1
                yield batch

        trainer.data_provider = batches()
        return super().run_trainer_with_interruption_handling(trainer)


def test_a_nan_in_the_last_step_names_the_last_checkpoint_and_leaves_no_output(tmp_path: Path) -> None:
    cfg = runner_config(tmp_path, SHORT)  # one periodic checkpoint, after step 5
    runner = _Poisoned(cfg, override_model=tiny_model(), override_dataset=tiny_dataset())
    runner.poison_at = SHORT - 1
    with pytest.raises(NonFiniteTrainingError, match=r"step 9 .*Last complete checkpoint: .*checkpoints/\w+/\d+\."):
        runner.run()
    assert not Path(cfg.output_path).exists()  # not even an empty folder


def test_a_nan_in_the_normalisation_estimate_is_named_as_such(tmp_path: Path) -> None:
    cfg = runner_config(tmp_path, SHORT, normalize=True)
    runner = _Poisoned(cfg, override_model=tiny_model(), override_dataset=tiny_dataset())
    with pytest.raises(RuntimeError, match=r"activation-normalisation estimate .* is not finite"):
        runner.run()


def test_a_full_disk_leaves_no_partial_checkpoint_and_the_run_resumes(small_disk: Path, tmp_path: Path) -> None:
    cfg = runner_config(tmp_path, 60)  # 11 checkpoints: the 1 MiB disk fills up
    cfg.checkpoint_path = str(small_disk / "checkpoints" / Path(cfg.checkpoint_path).name)
    with pytest.raises(RuntimeError, match=r"could not be written \(.*MiB free there\).*Last complete checkpoint: "):
        train(cfg, override_model=tiny_model(), override_dataset=tiny_dataset())
    run = Path(cfg.checkpoint_path)
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []
    assert all(is_complete_checkpoint(p) for p in run.iterdir())
    before = os.statvfs(small_disk)
    assert before.f_bfree * before.f_frsize > 0
    resumed = runner_config(tmp_path / "resumed", 60, str(small_disk / "checkpoints"))
    sae = train(resumed, override_model=tiny_model(), override_dataset=tiny_dataset())
    assert int(sae.ortho_step) == 60


def test_sigterm_during_the_output_save_finishes_the_output(tmp_path: Path) -> None:
    child = Child(tmp_path, "ours", "--steps", str(SHORT), "--pause-in-output", "3")
    child.wait_for(lambda: any(line.startswith("OUTPUT") for line in child.lines), "the output save")
    child.proc.send_signal(signal.SIGTERM)
    assert child.finish() == 0, child.stderr()
    assert "SIGTERM arrived after the last step" in child.stderr()
    weights = load_file(tmp_path / "final" / "sae_weights.safetensors")
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
