"""The light commands never import torch, SAELens or the ``sae_lens_ortho`` package (``sae-lens-ortho --help``,
``publish --help``, ``metrics --help``): read from Python's own import log of the real console script.

Start-up *times* are measured side by side with SAELens's CLI by ``scripts/cli_startup.py``, not asserted here.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from cli_helpers import run_console

ENTRY = Path(__file__).resolve().parents[1] / "sae_lens_ortho_cli.py"
HEAVY = {"torch", "sae_lens", "sae_lens_ortho", "transformer_lens", "datasets", "wandb", "numpy"}


def imported_modules(args: list[str], home: Path) -> tuple[set[str], str]:
    """Top-level names of every module the command imported (``PYTHONPROFILEIMPORTTIME``), and its stdout."""
    proc = run_console(args, home, PYTHONPROFILEIMPORTTIME="1")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("import time:") and "|" in line]
    assert len(lines) > 10  # the log is there (a broken check would find nothing heavy in an empty log)
    return {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in lines}, proc.stdout


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--help"], "commands:"),
        (["publish", "--help"], "usage: sae-lens-ortho publish"),
        (["metrics", "--help"], "usage: sae-lens-ortho metrics"),
        (["--version"], "sae-lens-ortho 0."),
    ],
)
def test_light_commands_import_nothing_heavy(args: list[str], shown: str, tmp_path: Path) -> None:
    modules, out = imported_modules(args, tmp_path)
    assert shown in out
    assert "sae_lens_ortho_cli" in modules
    assert not modules & HEAVY, sorted(modules & HEAVY)


def test_the_check_sees_heavy_imports(tmp_path: Path) -> None:
    modules, _ = imported_modules(["train", "--help"], tmp_path)  # the heavy command, for contrast
    assert {"torch", "sae_lens", "sae_lens_ortho"} <= modules


def test_the_entry_module_imports_only_the_standard_library_at_load() -> None:
    tree = ast.parse(ENTRY.read_text())
    top = []
    for node in tree.body:  # module level only: commands import their implementation when they run
        if isinstance(node, ast.Import):
            top += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.append(node.module.split(".")[0])
    assert set(top) <= set(sys.stdlib_module_names) | {"__future__"}, top
