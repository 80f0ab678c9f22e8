"""Start-up time of the command line, side by side with SAELens's own training CLI (a benchmark, not a test).

Runs each command ``--repeat`` times in a fresh process, interleaved (so a load change on the machine hits all
of them alike), offline, and prints the median and min wall time of each as a Markdown table, plus whether the
light commands imported torch or SAELens (``python -X importtime``)::

    .venv/bin/python scripts/cli_startup.py --repeat 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "sae_lens", "sae_lens_ortho")


def commands() -> dict[str, list[str]]:
    script = shutil.which("sae-lens-ortho", path=str(Path(sys.executable).parent))
    ours = [script] if script else [sys.executable, "-m", "sae_lens_ortho_cli"]
    return {
        "SAELens: python -m sae_lens.llm_sae_training_runner --help": [
            sys.executable,
            "-m",
            "sae_lens.llm_sae_training_runner",
            "--help",
        ],
        "sae-lens-ortho train --help": [*ours, "train", "--help"],
        "sae-lens-ortho --help": [*ours, "--help"],
        "sae-lens-ortho publish --help": [*ours, "publish", "--help"],
        "sae-lens-ortho metrics --help": [*ours, "metrics", "--help"],
        "sae-lens-ortho eval --help": [*ours, "eval", "--help"],
    }


def imports_heavy(command: list[str], env: dict[str, str]) -> bool:
    proc = subprocess.run(command, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, capture_output=True, text=True)
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    return any(name in names for name in HEAVY)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="cli_startup_"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "HF_HOME": str(home / "hf")}
    times: dict[str, list[float]] = {name: [] for name in commands()}
    for _ in range(args.repeat):
        for name, command in commands().items():
            t0 = time.perf_counter()
            subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(next(iter(times.values())))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {args.repeat} runs each, interleaved\n")
    print("| command | median s | min s | / SAELens median | imports torch or SAELens |")
    print("|---|---:|---:|---:|---|")
    for name, ts in times.items():
        heavy = "yes" if imports_heavy(commands()[name], env) else "no"
        median = statistics.median(ts)
        print(f"| `{name}` | {median:.2f} | {min(ts):.2f} | {median / base:.2f}x | {heavy} |")
    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
