"""Crash-safe, reproducible training: SAELens's ``LanguageModelSAETrainingRunner`` with what it lacks.

``train(cfg)`` (and ``sae-lens-ortho train``) runs SAELens's own runner, trainer and activations store, adding:

* **Interrupts save a complete checkpoint.** SIGINT / SIGTERM set a flag; at the next step boundary (no step is
  cut in half) the run writes a full checkpoint (SAE weights and config, trainer state, activation scaler, store
  state, runner config) and raises :class:`TrainingInterrupted` naming it. SAELens's own handler writes into a
  folder it never creates and saves no SAE.
* **Atomic checkpoints.** Every checkpoint (periodic, final, interrupt) is written into a hidden temporary folder
  next to its destination and renamed into place once complete (files and folders fsynced first), so a SIGKILL
  or a power cut mid-write leaves either the old state or the whole new checkpoint, never a half one.
* **Resume never swaps or refolds what was trained** (:mod:`sae_lens_ortho.checkpoints`). ``resume_from_checkpoint``
  may name a checkpoint or any folder above checkpoints (e.g. the ``checkpoint_path`` root, which SAELens
  extends with a run id per run); only checkpoints of the same experiment are considered, broken newer ones
  are skipped with a warning naming the file, one line names the checkpoint used, and a finished run's final
  checkpoint only writes a missing output (its output present: refused, the run is finished).
* **Paths checked first, outputs written whole.** ``output_path`` and ``checkpoint_path`` get a real write
  before the model loads (:mod:`sae_lens_ortho.output_paths`); the output is written into a hidden folder and
  renamed into place; SIGINT / SIGTERM during the final writes wait for them to finish.
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
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sae_lens import LanguageModelSAETrainingRunner
from sae_lens.constants import RUNNER_CFG_FILENAME, SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME
from safetensors.torch import save_file

from sae_lens_ortho.checkpoints import (
    CHECKPOINT_FILES,
    COMPLETE_MARKER,
    TMP_PREFIX,
    ResumePlan,
    is_complete_checkpoint,
    is_final,
    latest_checkpoint,
    plan_resume,
    remove_stale_temporaries,
    resolve_resume,
)
from sae_lens_ortho.output_paths import check_writable, write_folder_atomically
from sae_lens_ortho.sae_lens_bridge import wrap_methods  # the trainer patches (checked against SAELens)
from sae_lens_ortho.saes.guard import NonFiniteTrainingError
from sae_lens_ortho.saes.resources import selection_plan

__all__ = [
    "CHECKPOINT_FILES",
    "COMPLETE_MARKER",
    "CheckpointWriteError",
    "CrashSafeTrainingRunner",
    "NonFiniteNormalisationError",
    "TrainingInterrupted",
    "is_complete_checkpoint",
    "latest_checkpoint",
    "preflight",
    "resolve_resume",
    "seed_everything",
    "train",
]

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
    """Run SAELens's ``save_checkpoint`` into a hidden folder, complete it, then rename it to ``name``. A failed
    write (a full disk) removes its temporary folder, so the next attempt has the space back."""
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
    tmp = base / f"{TMP_PREFIX}{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        save(checkpoint_name=tmp.name, base_path=base, wandb_aliases=aliases)
        missing = [f for f in CHECKPOINT_FILES if not (tmp / f).is_file()]
        if missing:
            raise RuntimeError(f"checkpoint {final} is missing {', '.join(missing)} after writing; not installed")
        marker = {
            "n_training_samples": trainer.n_training_samples,
            "n_training_steps": trainer.n_training_steps,
            "final": is_final(final),
            "files": list(CHECKPOINT_FILES),
            "sizes": {f: (tmp / f).stat().st_size for f in CHECKPOINT_FILES},
        }
        (tmp / COMPLETE_MARKER).write_text(json.dumps(marker))
        _fsync_tree(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception) and not isinstance(e, NonFiniteTrainingError):  # torch.save's ENOSPC is a
            # RuntimeError ("unexpected pos"), safetensors' an OSError: say which checkpoint, and the free space
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            free = shutil.disk_usage(base).free if base.exists() else 0
            last = latest_checkpoint(base)
            raise CheckpointWriteError(
                f"checkpoint {final} could not be written ({reason}; {free / 2**20:.1f} MiB free there); its "
                "partial files were removed. "
                + (f"Last complete checkpoint: {last}." if last else "No complete checkpoint exists in this run.")
            ) from e
        raise
    old = None
    if final.exists():  # an incomplete folder of the same name (e.g. from a crashed plain SAELens run)
        old = base / f"{TMP_PREFIX}replaced-{name}-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(base)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (e.g. a full disk); names it and the last complete one."""


class NonFiniteNormalisationError(RuntimeError):
    """The activation-normalisation estimate (taken before step 0) is not finite."""


def _check_normalisation_estimates(scaler: Any) -> None:
    """Make ``scaler``'s estimates raise :class:`NonFiniteNormalisationError` when not finite: a NaN batch among
    the ``n_batches_for_norm_estimate`` read before training used to surface as a bad batch at step 0."""

    def checking(estimate: Any) -> Any:
        def checked(*args: Any, **kwargs: Any) -> Any:
            out = estimate(*args, **kwargs)
            w = scaler.whitening
            values = [torch.as_tensor(float(scaler.scaling_factor or 0.0))]
            values += [w.mean, w.matrix, w.inverse_matrix] if w is not None else []
            if not all(bool(torch.isfinite(v).all()) for v in values):
                raise NonFiniteNormalisationError(
                    "the activation-normalisation estimate (normalize_activations, from the first "
                    "n_batches_for_norm_estimate batches, read before training step 0) is not finite: those "
                    "activations hold NaN/inf; nothing was trained. Fix the model or data (or the dtype)"
                )
            return out

        return checked

    wrap_methods(scaler, {"estimate_scaling_factor": checking, "estimate_whitening": checking})


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
        self.resume_plan: ResumePlan | None = None
        preflight(cfg)
        if cfg.resume_from_checkpoint is not None:
            remove_stale_temporaries(cfg.resume_from_checkpoint)
            self.resume_plan = plan_resume(cfg)
            cfg.resume_from_checkpoint = str(self.resume_plan.checkpoint)
        if seed:
            seed_everything(cfg.seed)
        self.finite_check_every = finite_check_every
        self.stop_signal: int | None = None
        super().__init__(
            cfg, override_dataset=override_dataset, override_model=override_model, override_sae=override_sae
        )

    def run(self) -> Any:
        """SAELens's ``run()`` with SIGINT / SIGTERM deferred throughout: during training they stop at the next
        step boundary with a checkpoint; during the final checkpoint and output writes they wait for the writes
        to finish (the run is then complete)."""
        previous = {s: signal.getsignal(s) for s in _STOP_SIGNALS}

        def request_stop(signum: int, _frame: Any) -> None:
            self.stop_signal = signum  # acted on at the next step boundary, or once the output is written

        for s in _STOP_SIGNALS:
            signal.signal(s, request_stop)
        try:
            sae = super().run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if self.stop_signal is not None:
            print(
                f"sae-lens-ortho: {signal.Signals(self.stop_signal).name} arrived after the last step; the run "
                "finished writing its output first",
                file=sys.stderr,
                flush=True,
            )
        return sae

    def run_trainer_with_interruption_handling(self, trainer: Any) -> Any:
        self._make_crash_safe(trainer)
        if self.resume_plan is not None and self.resume_plan.finished:
            # The final checkpoint's weights are the finished SAE (normalisation folded): no fit(), which would
            # estimate the normalisation again and fold it a second time.
            trainer.set_final_sae_metadata()
            return trainer.sae
        try:
            sae = trainer.fit()
            if hasattr(sae, "ortho_raise_if_nonfinite"):
                sae.ortho_raise_if_nonfinite()  # a bad last step: stop here, before the output is written
            return sae
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
            if latest is None and self.resume_plan is not None:
                latest = self.resume_plan.checkpoint
            self._finish_wandb(exit_code=1)
            detail = f"Last complete checkpoint: {latest}." if latest else "No checkpoint was written before it."
            raise NonFiniteTrainingError(e.step, detail) from None

    def save_final_sae(self, sae: Any, output_path: str, log_feature_sparsity: Any = None) -> None:
        """SAELens's output save (the same files), written whole or not at all (see
        :mod:`sae_lens_ortho.output_paths`); the wandb upload reads the installed files."""

        def write(folder: Path) -> None:
            sae.save_inference_model(str(folder))
            if log_feature_sparsity is not None:
                save_file({"sparsity": log_feature_sparsity}, folder / SPARSITY_FILENAME)
            (folder / RUNNER_CFG_FILENAME).write_text(json.dumps(self.cfg.to_dict()))

        write_folder_atomically(output_path, write)
        if self.cfg.logger.log_to_wandb:
            out = Path(output_path)
            sparsity = out / SPARSITY_FILENAME if log_feature_sparsity is not None else None
            self.cfg.logger.log(
                self,
                out / SAE_WEIGHTS_FILENAME,
                out / SAE_CFG_FILENAME,
                sparsity_path=sparsity,
                wandb_aliases=["final_model"],
            )

    def _make_crash_safe(self, trainer: Any) -> None:
        def atomic(save: Any) -> Any:
            def atomic_save_checkpoint(checkpoint_name: str, base_path: Any = None, wandb_aliases: Any = None) -> None:
                _atomic_save(save, trainer, checkpoint_name, base_path, wandb_aliases)

            return atomic_save_checkpoint

        def counted(checkpoint_if_needed: Any) -> Any:
            def counted_checkpoint_if_needed() -> None:
                # fit() calls this after a step and before counting it: save the count the state really has.
                trainer.n_training_steps += 1
                try:
                    checkpoint_if_needed()
                finally:
                    trainer.n_training_steps -= 1

            return counted_checkpoint_if_needed

        sae = trainer.sae

        def checked_boundary(maybe_reset_sparsity: Any) -> Any:
            def at_step_boundary() -> Any:
                # fit() calls this first in every iteration of its loop: the previous step is complete here.
                if self.stop_signal is not None:
                    raise _StopRequested
                steps = trainer.n_training_steps
                if steps and steps % self.finite_check_every == 0 and hasattr(sae, "ortho_raise_if_nonfinite"):
                    sae.ortho_raise_if_nonfinite()
                return maybe_reset_sparsity()

            return at_step_boundary

        wrap_methods(trainer, {"save_checkpoint": atomic})
        _check_normalisation_estimates(trainer.activation_scaler)
        wrap_methods(trainer, {"_checkpoint_if_needed": counted, "maybe_reset_sparsity": checked_boundary})

    def _finish_wandb(self, exit_code: int) -> None:
        if self.cfg.logger.log_to_wandb:
            import wandb

            if wandb.run is not None:
                wandb.finish(exit_code=exit_code)


def preflight(cfg: Any) -> None:
    """Checks that need no model or data: ``output_path`` and ``checkpoint_path`` can be written (a real write;
    ``ValueError`` naming the field), and the pair selection's memory for one training batch on ``cfg.device``
    (ortho SAEs; raises :class:`~sae_lens_ortho.saes.resources.OrthoMemoryError`)."""
    check_writable("output_path", cfg.output_path)
    check_writable("checkpoint_path", cfg.checkpoint_path)
    sae_cfg = cfg.sae
    if hasattr(sae_cfg, "ortho_coefficient"):
        selection_plan(sae_cfg, cfg.train_batch_size_tokens, cfg.device)


def train(cfg: Any, **kwargs: Any) -> Any:
    """Train ``cfg`` (a ``LanguageModelSAERunnerConfig``) with :class:`CrashSafeTrainingRunner`; returns the SAE.
    ``kwargs`` go to the runner (``override_model``, ``override_dataset``, ``override_sae``, ``seed``,
    ``finite_check_every``). Raises :class:`TrainingInterrupted` after saving on SIGINT / SIGTERM."""
    return CrashSafeTrainingRunner(cfg, **kwargs).run()
