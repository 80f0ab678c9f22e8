"""Helpers of the command-line tests: the console script, an offline environment for it, small valid flags."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

# Small, valid settings for everything that is not under test.
BASE = [
    "--d_in",
    "32",
    "--training_tokens",
    "2048",
    "--train_batch_size_tokens",
    "256",
    "--context_size",
    "64",
    "--n_batches_in_buffer",
    "8",
    "--log_to_wandb",
    "False",
]


def console_script() -> list[str]:
    """The installed ``sae-lens-ortho`` script (or ``python -m sae_lens_ortho_cli``)."""
    script = shutil.which("sae-lens-ortho", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "sae_lens_ortho_cli"]


def offline_subprocess_env(home: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "HF_HOME": str(home / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "COLUMNS": "200",
    }


def run_console(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the console script with ``args`` in a fresh process, offline, from ``cwd`` (also its HOME); exit 0."""
    proc = subprocess.run(
        [*console_script(), *args],
        capture_output=True,
        text=True,
        env={**offline_subprocess_env(cwd), **env},
        timeout=300,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
