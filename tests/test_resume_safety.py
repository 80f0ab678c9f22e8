"""Resume never overwrites or swaps what a user trained (issue 23, items 1, 3, 4), with real child processes,
real signals and real truncated files.

Before the fix: resuming a finished run with activation normalisation folded the factor in a second time and
rewrote the output (b_dec x0.61); resuming from a checkpoint root continued whichever run had the most samples,
even another experiment's; a truncated newest checkpoint was picked (errors naming no file), and one missing
files was skipped without a word.
"""

from __future__ import annotations

import hashlib
import re
import signal
import warnings
from pathlib import Path

import pytest
import torch
from child_process import Child
from crash_child import runner_config
from safetensors.torch import load_file
from tiny import tiny_dataset, tiny_model

from sae_lens_ortho.training import COMPLETE_MARKER, latest_checkpoint, resolve_resume, train

SHORT = 10  # steps: one periodic checkpoint (after step 5), then the final one


def _train(root: Path, resume: Path | None = None, **kw: object) -> object:
    cfg = runner_config(root, SHORT, str(resume) if resume else None, **kw)  # type: ignore[arg-type]
    return train(cfg, override_model=tiny_model(), override_dataset=tiny_dataset())


def _digest(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def _finished_child(root: Path, *args: str) -> None:
    child = Child(root, "ours", "--steps", str(SHORT), *args)  # (a later --steps wins)
    assert child.finish() == 0, child.stderr()


def test_resuming_a_finished_run_refuses_and_leaves_its_output_byte_identical(tmp_path: Path) -> None:
    _finished_child(tmp_path, "--normalize", "--final-checkpoint")
    before = _digest(tmp_path / "final")
    with pytest.raises(ValueError, match=r"the run is finished: .*final_2560 is its final checkpoint"):
        _train(tmp_path, tmp_path / "checkpoints", normalize=True, final_checkpoint=True)
    assert _digest(tmp_path / "final") == before


def test_a_kill_before_the_output_resumes_to_the_uninterrupted_output_without_refolding(tmp_path: Path) -> None:
    """SIGKILL after the final checkpoint, inside the output save: the resume writes the output from the final
    checkpoint, equal to an uninterrupted run's (it used to fold the normalisation a second time)."""
    child = Child(
        tmp_path / "killed",
        "ours",
        "--steps",
        str(SHORT),
        "--normalize",
        "--final-checkpoint",
        "--pause-in-output",
        "60",
    )
    child.wait_for(lambda: any(line.startswith("OUTPUT") for line in child.lines), "the output save")
    child.proc.send_signal(signal.SIGKILL)
    child.finish()
    assert not (tmp_path / "killed" / "final" / "sae_weights.safetensors").exists()  # never installed half-written
    _train(tmp_path / "killed", tmp_path / "killed" / "checkpoints", normalize=True, final_checkpoint=True)
    _train(tmp_path / "reference", normalize=True, final_checkpoint=True)
    resumed = load_file(tmp_path / "killed" / "final" / "sae_weights.safetensors")
    reference = load_file(tmp_path / "reference" / "final" / "sae_weights.safetensors")
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), key


def test_training_on_from_a_final_checkpoint_with_normalisation_is_refused(tmp_path: Path) -> None:
    _finished_child(tmp_path, "--normalize", "--final-checkpoint")
    cfg = runner_config(tmp_path, 2 * SHORT, str(tmp_path / "checkpoints"), normalize=True, final_checkpoint=True)
    with pytest.raises(ValueError, match=r"final checkpoint.*apply it twice.*periodic checkpoint: .*/\d+$"):
        train(cfg, override_model=tiny_model(), override_dataset=tiny_dataset())


def test_resume_from_a_root_never_continues_another_experiment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run A (ortho 0.1) finished and run B (0.9) was stopped, in one checkpoint root: resuming B continues B
    (it used to take A's final checkpoint, B's output holding A's weights); a third config is refused, naming
    the field."""
    _finished_child(tmp_path, "--ortho", "0.1", "--steps", "30", "--final-checkpoint")  # run A: final_7680
    child_b = Child(tmp_path, "ours", "--ortho", "0.9")
    child_b.wait_for(lambda: child_b.steps_seen() >= 5, "5 steps of run B")
    child_b.proc.send_signal(signal.SIGTERM)
    assert child_b.finish() == 128 + signal.SIGTERM, child_b.stderr()
    b_checkpoint = Path(next(line for line in child_b.lines if line.startswith("INTERRUPTED")).split()[1])
    a_final = next((tmp_path / "checkpoints").glob("*/final_*"))
    assert latest_checkpoint(tmp_path / "checkpoints") == a_final  # the most samples: what resume used to take
    cfg_b = runner_config(tmp_path, resume=str(tmp_path / "checkpoints"), ortho=0.9)
    assert resolve_resume(tmp_path / "checkpoints", cfg_b) == b_checkpoint
    capsys.readouterr()
    sae = train(cfg_b, override_model=tiny_model(), override_dataset=tiny_dataset())
    assert f"resuming from {b_checkpoint}" in capsys.readouterr().err
    assert sae.cfg.ortho_coefficient == 0.9
    cfg_c = runner_config(tmp_path, resume=str(tmp_path / "checkpoints"), ortho=0.5)
    with pytest.raises(ValueError, match=r"another experiment.*ortho_coefficient: 0\.\d -> 0\.5"):
        train(cfg_c, override_model=tiny_model(), override_dataset=tiny_dataset())


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run of 15 steps with two periodic checkpoints."""
    root = tmp_path_factory.mktemp("two")
    cfg = runner_config(root, 15)  # n_checkpoints 2
    train(cfg, override_model=tiny_model(), override_dataset=tiny_dataset())
    return root


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", ["truncated", "truncated_plain", "half_deleted"])
def test_a_broken_newest_checkpoint_is_skipped_with_a_line_naming_it(
    damage: str, two_checkpoints: Path, tmp_path: Path
) -> None:
    root = _copy(two_checkpoints, tmp_path / "copy")
    run = next((root / "checkpoints").iterdir())
    older, newest = sorted((p for p in run.iterdir() if not p.name.startswith(".")), key=lambda p: int(p.name))
    if damage.startswith("truncated"):
        if damage == "truncated_plain":  # as SAELens's own runner writes it: no record of the sizes
            (newest / COMPLETE_MARKER).unlink()
        weights = newest / "sae_weights.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        named = "sae_weights.safetensors is truncated"
    else:
        files = sorted(p for p in newest.iterdir() if p.name != COMPLETE_MARKER)
        for f in files[::2]:
            f.unlink()
        named = "incomplete checkpoint (missing"
    with pytest.raises(ValueError, match=re.escape(named)):  # named directly: refused, never swapped for another
        resolve_resume(newest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_resume(root / "checkpoints", runner_config(root, 15)) == older
    assert any(named in str(w.message) and str(newest) in str(w.message) for w in caught), [
        str(w.message) for w in caught
    ]
    sae = train(
        runner_config(root, 15, str(root / "checkpoints")), override_model=tiny_model(), override_dataset=tiny_dataset()
    )
    assert int(sae.ortho_step) == 15
