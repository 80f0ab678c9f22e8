"""Which checkpoint a resume uses, and refusing the ones that would silently continue something else.

A checkpoint root (SAELens's ``checkpoint_path``) holds one folder per run id, each with checkpoints named by
their training samples (``final_N`` for the one written after the last step). :func:`plan_resume` picks from
it, for the run being configured:

* only checkpoints whose SAE config (every field but ``device`` and ``metadata``) and experiment fields
  (:data:`RUN_FIELDS`) equal the current run's; when none does, it refuses and names the differing fields
  (another experiment's checkpoint is never continued under this config);
* among those, the newest that is whole: every file present, safetensors and zip files as long as their own
  headers say, JSON parseable, sizes as recorded when it was written; newer broken ones are skipped with a
  warning that names the file (a checkpoint named directly is never replaced by another one);
* a ``final_N`` checkpoint holds weights with the activation normalisation already folded in (and no scaler):
  training on from it would fold it a second time. When the run is finished it only (re)writes a missing
  output; when its output exists it refuses, saying the run is finished; training on past it with
  normalisation is refused, naming the last periodic checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

from sae_lens.constants import (
    ACTIVATION_SCALER_CFG_FILENAME,
    ACTIVATIONS_STORE_STATE_FILENAME,
    RUNNER_CFG_FILENAME,
    SAE_CFG_FILENAME,
    SAE_WEIGHTS_FILENAME,
    SPARSITY_FILENAME,
    TRAINER_STATE_FILENAME,
)

__all__ = [
    "CHECKPOINT_FILES",
    "COMPLETE_MARKER",
    "RUN_FIELDS",
    "TMP_PREFIX",
    "ResumePlan",
    "checkpoint_problem",
    "config_differences",
    "file_problem",
    "is_complete_checkpoint",
    "latest_checkpoint",
    "plan_resume",
    "remove_stale_temporaries",
    "resolve_resume",
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
"""Written last into checkpoints made here: the step counts, the file sizes and whether it is final."""
TMP_PREFIX = ".incomplete-"
RUN_FIELDS = ("model_name", "hook_name", "hook_head_index", "dataset_path", "context_size", "seed")
"""Runner fields that make a checkpoint another experiment when they differ (besides the SAE config)."""
_SAE_FIELDS_IGNORED = ("device", "metadata")
_NAME = re.compile(r"^(?:final_)?(\d+)$")


def _samples(path: Path) -> int:
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else -1


def is_final(path: Path) -> bool:
    """A checkpoint written after the last step (its weights hold the folded activation normalisation)."""
    return path.name.startswith("final_")


def is_complete_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint folder holding every file in :data:`CHECKPOINT_FILES`."""
    path = Path(path)
    return (
        path.is_dir() and not path.name.startswith(TMP_PREFIX) and all((path / f).is_file() for f in CHECKPOINT_FILES)
    )


def _looks_like_checkpoint(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in CHECKPOINT_FILES)


def file_problem(file: Path) -> str | None:
    """Why ``file`` (a safetensors, zip (torch.save) or JSON file) cannot be read whole, or None. Reads headers
    only: a truncated file fails the size its own header implies."""
    try:
        size = file.stat().st_size
        if file.suffix == ".safetensors":
            with open(file, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    return f"{file} is truncated ({size} bytes)"
                (n,) = struct.unpack("<Q", head)
                if n > size - 8:
                    return f"{file} is truncated ({size} bytes; its header alone needs {n + 8})"
                header = json.loads(f.read(n))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            if size != 8 + n + end:
                return f"{file} is truncated or corrupt ({size} bytes; its header says {8 + n + end})"
        elif file.suffix in (".pt", ".pth"):
            with zipfile.ZipFile(file) as z:
                for info in z.infolist():
                    if info.header_offset + info.compress_size > size:
                        return f"{file} is truncated ({size} bytes)"
        elif file.suffix == ".json":
            json.loads(file.read_text())
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, struct.error) as e:
        return f"{file} is truncated or corrupt ({type(e).__name__}: {e})"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from (naming the file), or None."""
    missing = [f for f in CHECKPOINT_FILES if not (path / f).is_file()]
    if missing:
        return f"{path} is an incomplete checkpoint (missing {', '.join(missing)})"
    marker = path / COMPLETE_MARKER
    sizes: dict[str, int] = {}
    if marker.is_file():
        problem = file_problem(marker)
        if problem:
            return problem
        sizes = json.loads(marker.read_text()).get("sizes", {})
    for name in CHECKPOINT_FILES:
        file = path / name
        if name in sizes and file.stat().st_size != sizes[name]:
            return f"{file} is truncated or changed ({file.stat().st_size} bytes, {sizes[name]} when written)"
        problem = file_problem(file)
        if problem:
            return problem
    return None


def _candidates(root: Path, depth: int) -> list[Path]:
    """Checkpoint-like folders at or below ``root`` (hidden temporaries excluded), newest first."""
    if _looks_like_checkpoint(root):
        return [root]
    found: list[Path] = []
    level = [root]
    for _ in range(depth):
        level = [p for d in level if d.is_dir() for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")]
        found += [p for p in level if _looks_like_checkpoint(p)]
    return sorted(found, key=lambda p: (_samples(p), is_final(p), p.stat().st_mtime), reverse=True)


def latest_checkpoint(root: str | Path, depth: int = 2) -> Path | None:
    """The newest whole checkpoint under ``root`` (itself, or at most ``depth`` folders down; by training
    samples from the folder name, as SAELens names them; ties: final, then the newest); None if none."""
    return next((p for p in _candidates(Path(root), depth) if checkpoint_problem(p) is None), None)


def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def current_config(cfg: Any) -> dict[str, Any]:
    """The comparable fields of a runner config: its SAE config (``sae.*``) and :data:`RUN_FIELDS`."""
    return _comparable(_normalised(cfg.to_dict()))


def _comparable(runner: dict[str, Any]) -> dict[str, Any]:
    sae = runner.get("sae", {})
    out = {f"sae.{k}": v for k, v in sae.items() if k not in _SAE_FIELDS_IGNORED}
    out.update({k: runner.get(k) for k in RUN_FIELDS})
    return out


def config_differences(checkpoint: Path, cfg: Any) -> list[str]:
    """``field: checkpoint value -> current value`` for each compared field that differs (empty: same run)."""
    saved = _comparable(json.loads((checkpoint / RUNNER_CFG_FILENAME).read_text()))
    now = current_config(cfg)
    missing = object()
    return [
        f"{k.removeprefix('sae.')}: {saved.get(k, '<unset>')!r} -> {now.get(k, '<unset>')!r}"
        for k in sorted(set(saved) | set(now))
        if saved.get(k, missing) != now.get(k, missing)
    ]


class ResumePlan(NamedTuple):
    checkpoint: Path
    finished: bool
    """The checkpoint is final and the run asks for no more samples: write the output, train nothing."""
    samples: int
    steps: int


def _trainer_counts(checkpoint: Path) -> tuple[int, int]:
    marker = checkpoint / COMPLETE_MARKER
    if marker.is_file():
        m = json.loads(marker.read_text())
        return int(m["n_training_samples"]), int(m["n_training_steps"])
    import torch

    state = torch.load(checkpoint / TRAINER_STATE_FILENAME, map_location="cpu", weights_only=False)
    return int(state["n_training_samples"]), int(state["n_training_steps"])


def resolve_resume(path: str | Path, cfg: Any = None) -> Path:
    """The checkpoint to resume from (see the module docstring); with ``cfg`` only checkpoints of the same
    experiment are considered. Raises ``ValueError`` naming the field, folder or file."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"resume_from_checkpoint: {path} does not exist")
    candidates = _candidates(path, 2)
    if not candidates:
        raise ValueError(f"resume_from_checkpoint: no complete checkpoint in {path} or the folders below it")
    named = candidates == [path]
    if cfg is not None:
        differing: dict[Path, list[str]] = {}
        same = []
        for p in candidates:
            try:
                diff = config_differences(p, cfg)
            except (OSError, ValueError):  # unreadable runner config: judged (and reported) as a broken file below
                diff = []
            (differing.__setitem__(p, diff) if diff else same.append(p))
        if not same:
            newest = candidates[0]
            raise ValueError(
                f"resume_from_checkpoint: {newest} belongs to another experiment; its config differs in "
                f"{'; '.join(differing[newest])} (checkpoint -> current). Resume with the config it was trained with, "
                "or pass the folder of this experiment's own run"
            )
        candidates = same
    skipped = []
    for p in candidates:
        problem = checkpoint_problem(p)
        if problem is None:
            for reason in skipped:
                warnings.warn(f"resume: skipped a newer checkpoint: {reason}", stacklevel=2)
            return p
        if named:  # the user chose this one: never swap in another
            raise ValueError(
                f"resume_from_checkpoint: {problem}, e.g. from a run killed while writing it; pass its parent "
                "folder to resume from the newest whole checkpoint"
            )
        skipped.append(problem)
    raise ValueError(f"resume_from_checkpoint: no whole checkpoint in {path}: " + "; ".join(skipped))


def _runner_output(output_path: str | None) -> Path | None:
    if output_path is None:
        return None
    out = Path(output_path)
    whole = all((out / f).is_file() and file_problem(out / f) is None for f in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME))
    return out if whole else None


def plan_resume(cfg: Any) -> ResumePlan:
    """Choose ``cfg.resume_from_checkpoint``'s checkpoint for the run ``cfg``, print one line naming it, and
    refuse a finished run's (see the module docstring)."""
    checkpoint = resolve_resume(cfg.resume_from_checkpoint, cfg)
    samples, steps = _trainer_counts(checkpoint)
    finished = False
    if is_final(checkpoint):
        if cfg.total_training_tokens <= samples:
            output = _runner_output(cfg.output_path)
            if output is not None:
                raise ValueError(
                    f"resume_from_checkpoint: the run is finished: {checkpoint} is its final checkpoint "
                    f"({samples} of {cfg.total_training_tokens} samples) and {output} holds its SAE; nothing "
                    "to resume (raise training_tokens to train on from its last periodic checkpoint)"
                )
            finished = True
        elif cfg.sae.normalize_activations != "none":
            periodic = [p for p in _candidates(checkpoint.parent, 1) if not is_final(p) and not checkpoint_problem(p)]
            raise ValueError(
                f"resume_from_checkpoint: {checkpoint} is a final checkpoint, whose weights already hold the "
                f"activation normalisation (normalize_activations={cfg.sae.normalize_activations!r}); training on "
                "from it would apply it twice. Resume from a periodic checkpoint"
                + (f": {periodic[0]}" if periodic else " (this run wrote none)")
            )
    what = "writing its output, no training left" if finished else f"{steps} steps, {samples} samples done"
    print(f"sae-lens-ortho: resuming from {checkpoint} ({what})", file=sys.stderr, flush=True)
    return ResumePlan(checkpoint, finished, samples, steps)


def remove_stale_temporaries(root: str | Path, depth: int = 2) -> list[Path]:
    """Remove hidden half-written checkpoint folders (``.incomplete-*-PID``) under ``root`` whose writing
    process is gone (a SIGKILL or a full disk mid-write); they would otherwise hold disk space forever."""
    removed = []
    level = [Path(root)]
    for _ in range(depth):
        children = [p for d in level if d.is_dir() for p in d.iterdir() if p.is_dir()]
        for p in children:
            if p.name.startswith(TMP_PREFIX) and not _alive(p.name.rsplit("-", 1)[-1]):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        level = [p for p in children if not p.name.startswith(".")]
    return removed


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False  # ours from before, in this process: not being written now
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
