"""Crash-safe, reproducible training: SAELens's ``LanguageModelSAETrainingRunner`` with what it lacks.

``train(cfg)`` (and ``sae-lens-ortho train``) runs SAELens's own runner, trainer and activations store, adding:

* **Interrupts save a complete checkpoint.** SIGINT / SIGTERM set a flag; at the next step boundary (no step is
  cut in half) the run writes a full checkpoint (SAE weights and config, trainer state, activation scaler, store
  state, runner config) and raises :class:`TrainingInterrupted` naming it. SAELens's own handler writes into a
  folder it never creates and saves no SAE.
* **Atomic checkpoints.** Every checkpoint (periodic, final, interrupt) is written into a hidden temporary folder
  next to its destination and renamed into place once complete (files and folders fsynced first), so a SIGKILL
  or a power cut mid-write leaves either the old state or the whole new checkpoint, never a half one.
* **Resume from the newest complete checkpoint.** ``resume_from_checkpoint`` may name a checkpoint or any folder
  above checkpoints (e.g. the ``checkpoint_path`` root, which SAELens extends with a run id per run):
  :func:`latest_checkpoint` picks the one with the most training samples among the complete ones.
* **Exact step counts.** SAELens saves periodic checkpoints before it counts the step just taken, so a resumed
  trainer ran one step behind (logging and sparsity windows shifted); checkpoints written here hold the count.
* **Seeding.** ``torch.manual_seed(cfg.seed)`` (and Python's and NumPy's) before the model, the SAE and the
  activations store are built: SAELens never seeds torch, so two runs of one config differed. Now they are
  bit-identical (same device and versions).
* **Guards.** Before the model is loaded, the pair selection's memory is checked against the device
  (:mod:`sae_lens_ortho.saes.resources`); every ``finite_check_every`` steps (and before every save) a
  non-finite step stops the run with :class:`~sae_lens_ortho.saes.guard.NonFiniteTrainingError`, leaving the last
  good checkpoint as the newest one (:mod:`sae_lens_ortho.saes.guard`).

Python use::

    from sae_lens_ortho.training import train

    sae = train(cfg)  # cfg: a LanguageModelSAERunnerConfig; same keyword overrides as the SAELens runner
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sae_lens import LanguageModelSAETrainingRunner
from sae_lens.constants import (
    ACTIVATION_SCALER_CFG_FILENAME,
    ACTIVATIONS_STORE_STATE_FILENAME,
    RUNNER_CFG_FILENAME,
    SAE_CFG_FILENAME,
    SAE_WEIGHTS_FILENAME,
    SPARSITY_FILENAME,
    TRAINER_STATE_FILENAME,
)

from sae_lens_ortho.saes.guard import NonFiniteTrainingError
from sae_lens_ortho.saes.resources import selection_plan

__all__ = [
    "CHECKPOINT_FILES",
    "CrashSafeTrainingRunner",
    "TrainingInterrupted",
    "is_complete_checkpoint",
    "latest_checkpoint",
    "preflight",
    "resolve_resume",
    "seed_everything",
    "train",
]

CHECKPOINT_FILES = (
    SAE_CFG_FILENAME,
    SAE_WEIGHTS_FILENAME,
    SPARSITY_FILENAME,
    TRAINER_STATE_FILENAME,
    ACTIVATION_SCALER_CFG_FILENAME,
    ACTIVATIONS_STORE_STATE_FILENAME,
    RUNNER_CFG_FILENAME,
)
"""The files a checkpoint needs for SAELens's runner to resume from it."""
COMPLETE_MARKER = "checkpoint_complete.json"
"""Written last into checkpoints made here: the step counts and the file list."""
_TMP_PREFIX = ".incomplete-"
_NAME = re.compile(r"^(?:final_)?(\d+)$")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal at a step boundary; ``checkpoint`` holds the complete state (None if no step
    had been taken, so there was nothing to save)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        where = f"saved a complete checkpoint to {checkpoint}" if checkpoint else "no step had been taken"
        super().__init__(f"training interrupted by {signal.Signals(signum).name} after {step} steps; {where}")


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), Python's ``random`` and NumPy's global generator."""
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # numpy is optional here
        pass


def is_complete_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint folder holding every file in :data:`CHECKPOINT_FILES`."""
    path = Path(path)
    return (
        path.is_dir() and not path.name.startswith(_TMP_PREFIX) and all((path / f).is_file() for f in CHECKPOINT_FILES)
    )


def _samples(path: Path) -> int:
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else -1


def latest_checkpoint(root: str | Path, depth: int = 2) -> Path | None:
    """The complete checkpoint under ``root`` (itself, or at most ``depth`` folders down) with the most training
    samples (taken from the folder name, as SAELens names them; ties: final, then the newest); None if none.
    Half-written folders (ours are hidden until complete; SAELens's may miss files) are skipped."""
    root = Path(root)
    if is_complete_checkpoint(root):
        return root
    found: list[Path] = []
    level = [root]
    for _ in range(depth):
        level = [p for d in level if d.is_dir() for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")]
        found += [p for p in level if is_complete_checkpoint(p)]
    if not found:
        return None
    return max(found, key=lambda p: (_samples(p), p.name.startswith("final_"), p.stat().st_mtime))


def _fsync_tree(path: Path) -> None:
    for file in path.iterdir():
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_save(save: Callable[..., None], trainer: Any, name: str, base_path: Any, aliases: Any) -> None:
    """Run SAELens's ``save_checkpoint`` into a hidden folder, complete it, then rename it to ``name``."""
    base = base_path if base_path is not None else trainer.cfg.checkpoint_path
    if base is None:  # no local checkpoint (at most a wandb upload through a temporary folder)
        save(checkpoint_name=name, base_path=base_path, wandb_aliases=aliases)
        return
    base = Path(base)
    final = base / name
    if is_complete_checkpoint(final) and (final / COMPLETE_MARKER).is_file():
        marker = json.loads((final / COMPLETE_MARKER).read_text())
        if marker.get("n_training_samples") == trainer.n_training_samples:
            return  # this exact state is already saved (an interrupt right after a periodic checkpoint)
    tmp = base / f"{_TMP_PREFIX}{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    save(checkpoint_name=tmp.name, base_path=base, wandb_aliases=aliases)
    missing = [f for f in CHECKPOINT_FILES if not (tmp / f).is_file()]
    if missing:
        raise RuntimeError(f"checkpoint {final} is missing {', '.join(missing)} after writing; not installed")
    marker = {
        "n_training_samples": trainer.n_training_samples,
        "n_training_steps": trainer.n_training_steps,
        "files": list(CHECKPOINT_FILES),
    }
    (tmp / COMPLETE_MARKER).write_text(json.dumps(marker))
    _fsync_tree(tmp)
    old = None
    if final.exists():  # an incomplete folder of the same name (e.g. from a crashed plain SAELens run)
        old = base / f"{_TMP_PREFIX}replaced-{name}-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(base)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _StopRequested(Exception):
    pass


class CrashSafeTrainingRunner(LanguageModelSAETrainingRunner):
    """SAELens's runner with crash-safe checkpoints, interrupt checkpoints, resume from the newest complete
    checkpoint, seeding and the ortho guards (see the module docstring). Same arguments as the SAELens runner,
    plus ``seed`` (seed torch with ``cfg.seed`` first; default True) and ``finite_check_every`` (steps between
    reads of the non-finite record; each costs one host sync)."""

    def __init__(
        self,
        cfg: Any,
        override_dataset: Any = None,
        override_model: Any = None,
        override_sae: Any = None,
        *,
        seed: bool = True,
        finite_check_every: int = 100,
    ):
        if finite_check_every < 1:
            raise ValueError(f"finite_check_every must be an integer >= 1, got {finite_check_every}")
        if cfg.resume_from_checkpoint is not None:
            cfg.resume_from_checkpoint = str(resolve_resume(cfg.resume_from_checkpoint))
        preflight(cfg)
        if seed:
            seed_everything(cfg.seed)
        self.finite_check_every = finite_check_every
        self.stop_signal: int | None = None
        super().__init__(
            cfg, override_dataset=override_dataset, override_model=override_model, override_sae=override_sae
        )

    def run_trainer_with_interruption_handling(self, trainer: Any) -> Any:
        self._make_crash_safe(trainer)
        previous = {s: signal.getsignal(s) for s in _STOP_SIGNALS}

        def request_stop(signum: int, _frame: Any) -> None:
            self.stop_signal = signum  # acted on at the next step boundary

        for s in _STOP_SIGNALS:
            signal.signal(s, request_stop)
        try:
            return trainer.fit()
        except _StopRequested:
            assert self.stop_signal is not None
            checkpoint = None
            if trainer.n_training_steps > 0 and self.cfg.checkpoint_path is not None:
                name = str(trainer.n_training_samples)
                trainer.save_checkpoint(checkpoint_name=name)  # atomic (see _make_crash_safe)
                checkpoint = Path(self.cfg.checkpoint_path) / name
            self._finish_wandb(exit_code=128 + self.stop_signal)
            raise TrainingInterrupted(self.stop_signal, trainer.n_training_steps, checkpoint) from None
        except NonFiniteTrainingError as e:
            latest = latest_checkpoint(self.cfg.checkpoint_path) if self.cfg.checkpoint_path else None
            self._finish_wandb(exit_code=1)
            detail = f"Last complete checkpoint: {latest}." if latest else "No checkpoint was written before it."
            raise NonFiniteTrainingError(e.step, detail) from None
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _make_crash_safe(self, trainer: Any) -> None:
        save = trainer.save_checkpoint

        def atomic_save_checkpoint(checkpoint_name: str, base_path: Any = None, wandb_aliases: Any = None) -> None:
            _atomic_save(save, trainer, checkpoint_name, base_path, wandb_aliases)

        trainer.save_checkpoint = atomic_save_checkpoint
        checkpoint_if_needed = trainer._checkpoint_if_needed

        def counted_checkpoint_if_needed() -> None:
            # fit() calls this after a step and before counting it: save the count the state really has.
            trainer.n_training_steps += 1
            try:
                checkpoint_if_needed()
            finally:
                trainer.n_training_steps -= 1

        trainer._checkpoint_if_needed = counted_checkpoint_if_needed
        maybe_reset_sparsity = trainer.maybe_reset_sparsity
        sae = trainer.sae

        def at_step_boundary() -> Any:
            # fit() calls this first in every iteration of its loop: the previous step is complete here.
            if self.stop_signal is not None:
                raise _StopRequested
            steps = trainer.n_training_steps
            if steps and steps % self.finite_check_every == 0 and hasattr(sae, "ortho_raise_if_nonfinite"):
                sae.ortho_raise_if_nonfinite()
            return maybe_reset_sparsity()

        trainer.maybe_reset_sparsity = at_step_boundary

    def _finish_wandb(self, exit_code: int) -> None:
        if self.cfg.logger.log_to_wandb:
            import wandb

            if wandb.run is not None:
                wandb.finish(exit_code=exit_code)


def resolve_resume(path: str | Path) -> Path:
    """A checkpoint to resume from: ``path`` itself when it is a complete checkpoint, else the newest complete one
    below it. Raises ``ValueError`` naming what is missing."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"resume_from_checkpoint: {path} does not exist")
    found = latest_checkpoint(path)
    if found is not None:
        return found
    if any((path / f).exists() for f in CHECKPOINT_FILES):
        missing = [f for f in CHECKPOINT_FILES if not (path / f).is_file()]
        raise ValueError(
            f"resume_from_checkpoint: {path} is an incomplete checkpoint (missing {', '.join(missing)}), e.g. "
            "from a run killed while writing it; pass its parent folder to resume from the newest complete one"
        )
    raise ValueError(f"resume_from_checkpoint: no complete checkpoint in {path} or the folders below it")


def preflight(cfg: Any) -> None:
    """Checks that need no model or data: the pair selection's memory for one training batch on ``cfg.device``
    (ortho SAEs; raises :class:`~sae_lens_ortho.saes.resources.OrthoMemoryError`)."""
    sae_cfg = cfg.sae
    if hasattr(sae_cfg, "ortho_coefficient"):
        selection_plan(sae_cfg, cfg.train_batch_size_tokens, cfg.device)


def train(cfg: Any, **kwargs: Any) -> Any:
    """Train ``cfg`` (a ``LanguageModelSAERunnerConfig``) with :class:`CrashSafeTrainingRunner`; returns the SAE.
    ``kwargs`` go to the runner (``override_model``, ``override_dataset``, ``override_sae``, ``seed``,
    ``finite_check_every``). Raises :class:`TrainingInterrupted` after saving on SIGINT / SIGTERM."""
    return CrashSafeTrainingRunner(cfg, **kwargs).run()
