"""Crash-safe training (issue 11, item 4) with real signals to a real child process, and reproducible CLI runs
(item 8).

The child (``crash_child.py``) trains ``topk_ortho`` through SAELens's real runner on the tiny offline model.
SIGTERM / SIGINT must leave a complete checkpoint that a resume from the checkpoint root picks and finishes;
a SIGKILL in the middle of a checkpoint write must leave nothing that resume would pick up half-written.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from child_process import Child
from safetensors.torch import load_file

from sae_lens_ortho.training import (
    CHECKPOINT_FILES,
    COMPLETE_MARKER,
    is_complete_checkpoint,
    latest_checkpoint,
    resolve_resume,
)

STEPS = 60  # crash_child's default run length; a checkpoint every 5 steps


def _complete(root: Path) -> list[Path]:
    return sorted(p for p in (root / "checkpoints").glob("*/*") if is_complete_checkpoint(p))


def _resume_and_finish(root: Path) -> None:
    """Resume in this process (same config as the child's) from the checkpoint root, to the end of the run."""
    from crash_child import runner_config
    from tiny import tiny_dataset, tiny_model

    from sae_lens_ortho.training import train

    sae = train(
        runner_config(root, resume=str(root / "checkpoints")),
        override_model=tiny_model(),
        override_dataset=tiny_dataset(),
    )
    assert int(sae.ortho_step) == STEPS
    assert (root / "final" / "sae_weights.safetensors").is_file()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupt_saves_a_complete_checkpoint_that_resume_finishes(sig: signal.Signals, tmp_path: Path) -> None:
    child = Child(tmp_path, "ours")
    child.wait_for(lambda: len(_complete(tmp_path)) >= 1 and child.steps_seen() >= 10, "a checkpoint and 10 steps")
    child.proc.send_signal(sig)
    rc = child.finish()
    assert rc == 128 + sig, child.stderr()
    interrupted = [line for line in child.lines if line.startswith("INTERRUPTED")]
    assert interrupted and interrupted[0] != "INTERRUPTED None", child.lines
    saved = Path(interrupted[0].split(maxsplit=1)[1])
    assert is_complete_checkpoint(saved) and (saved / COMPLETE_MARKER).is_file()
    marker = json.loads((saved / COMPLETE_MARKER).read_text())
    assert marker["n_training_steps"] * 256 == marker["n_training_samples"]  # saved at a step boundary
    state = torch.load(saved / "trainer_state.pt", weights_only=False)
    assert state["n_training_steps"] == marker["n_training_steps"]
    weights = load_file(saved / "sae_weights.safetensors")
    assert int(weights["ortho_step"]) == marker["n_training_steps"]  # the SAE and the trainer agree
    assert latest_checkpoint(tmp_path / "checkpoints") == saved  # the newest complete one
    if sig == signal.SIGTERM:  # (one resume is enough to show the checkpoint works; SIGINT's is the same file set)
        _resume_and_finish(tmp_path)


_MODEL: dict[str, Any] = {}


def _cli_here(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> int:
    """``sae-lens-ortho train`` in this process, SAELens's model loader pointed at the tiny model."""
    import sae_lens.llm_sae_training_runner as runner_mod
    from tiny import tiny_model

    from sae_lens_ortho_cli import main

    # One model object for every run: building a HookedTransformer with a seed re-seeds torch's global RNG (as
    # TransformerLens does), which would hide a missing seed; models loaded by name do not.
    model = _MODEL.setdefault("model", tiny_model())
    monkeypatch.setattr(runner_mod, "load_model", lambda *a, **k: model)
    import sae_lens_ortho.local_sources as local_sources

    # The CLI's model-name check (a folder or a TransformerLens name) would refuse the tiny model's name.
    monkeypatch.setattr(local_sources, "check_model_source", lambda *a, **k: None)
    return main(argv)


def test_cli_sigint_saves_and_exits_130_and_resumes_from_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crash_child import cli_args

    child = Child(tmp_path, "cli")
    child.wait_for(lambda: len(_complete(tmp_path)) >= 1 and child.steps_seen() >= 10, "a checkpoint and 10 steps")
    child.proc.send_signal(signal.SIGINT)
    assert child.finish() == 130, child.stderr()
    assert "resume with --resume_from_checkpoint" in child.stderr()
    newest = latest_checkpoint(tmp_path / "checkpoints")
    assert newest is not None and int(newest.name) > int(_complete(tmp_path)[0].name)
    assert _cli_here(monkeypatch, cli_args(tmp_path, resume=str(tmp_path / "checkpoints"))) == 0  # as printed
    assert (tmp_path / "final" / "sae_weights.safetensors").is_file()


def test_sigkill_during_a_checkpoint_write_leaves_only_complete_checkpoints(tmp_path: Path) -> None:
    child = Child(tmp_path, "ours", "--pause-in-write", "3")
    child.wait_for(lambda: any(line.startswith("WRITING") for line in child.lines), "the third checkpoint write")
    child.proc.send_signal(signal.SIGKILL)
    assert child.finish() == -signal.SIGKILL
    run = next((tmp_path / "checkpoints").iterdir())
    visible = [p for p in run.iterdir() if not p.name.startswith(".")]
    hidden = [p for p in run.iterdir() if p.name.startswith(".")]
    assert len(visible) == 2 and all(is_complete_checkpoint(p) for p in visible), [p.name for p in run.iterdir()]
    assert len(hidden) == 1 and not is_complete_checkpoint(hidden[0])  # the write in progress, never installed
    assert not (hidden[0] / "activations_store_state.safetensors").exists()  # killed mid-write indeed
    newest = latest_checkpoint(tmp_path / "checkpoints")
    assert newest == max(visible, key=lambda p: int(p.name))
    assert resolve_resume(tmp_path / "checkpoints") == newest
    _resume_and_finish(tmp_path)
    assert not hidden[0].exists()  # the killed write's leftover is removed by the resume (issue 23, item 5)


def test_resolve_resume_names_what_an_incomplete_checkpoint_lacks(tmp_path: Path) -> None:
    partial = tmp_path / "run" / "1024"
    partial.mkdir(parents=True)
    (partial / "cfg.json").write_text("{}")
    with pytest.raises(ValueError, match=r"incomplete checkpoint.*missing sae_weights\.safetensors"):
        resolve_resume(partial)
    with pytest.raises(ValueError, match=r"no whole checkpoint.*run/1024 is an incomplete checkpoint"):
        resolve_resume(tmp_path)
    for name in CHECKPOINT_FILES:
        (partial / name).write_text("x")
    with pytest.raises(ValueError, match=r"cfg\.json is truncated or corrupt"):  # read, not only named
        resolve_resume(tmp_path)


def test_seeded_cli_runs_are_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 8: two `sae-lens-ortho train` runs with the same --seed, one after the other in this process (SAELens
    never seeded torch: the second run started from another RNG state and differed by max |dW_dec| ~0.5)."""
    from crash_child import cli_args

    finals = []
    for name in ("a", "b"):
        torch.randn(7)  # the process's RNG has moved on between the runs, as it would in any real session
        assert _cli_here(monkeypatch, cli_args(tmp_path / name, steps=20)) == 0
        finals.append(load_file(tmp_path / name / "final" / "sae_weights.safetensors"))
    assert finals[0].keys() == finals[1].keys()
    for key in finals[0]:
        assert torch.equal(finals[0][key], finals[1][key]), key
