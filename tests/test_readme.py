"""The README's example runs as written: its "Try it" Python block, taken from README.md, in a fresh process, offline,
with no wandb set-up at all (SAELens's default logger would ask for an API key), from an empty folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from cli_helpers import offline_subprocess_env

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Try it") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block under '## Try it'"
    return match.group(1)


def test_readme_example_runs_offline_as_written(tmp_path: Path) -> None:
    code = readme_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 30  # short enough to read at a glance
    env = {k: v for k, v in offline_subprocess_env(tmp_path).items() if not k.startswith("WANDB")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "topk"  # the saved SAE is a plain SAELens topk SAE
    assert (tmp_path / "sae_out" / "cfg.json").is_file() and not (tmp_path / "wandb").exists()


def test_readme_first_screen_answers_what_whether_and_how() -> None:
    """The first screen (the opening 40 lines) says what it is, whether it helps (measured) and how to start."""
    first = "\n".join(README.read_text().splitlines()[:40])
    assert "SAELens" in first and "## Does it help?" in first and "F1 +0.047 ± 0.003, 3 seeds" in first
    assert "docs/synthbench.md" in first and "make demo" in first and "make test" in first
    assert "pip install -e ." in first and "<this repository>" not in first
    assert len(README.read_text()) < 8_000  # the reference lives in docs/reference.md
