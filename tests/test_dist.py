"""Packaging: ``python -m build`` makes a wheel and an sdist that install into a fresh virtual environment and pass
a smoke test there (import, registration, ``py.typed``, the console script, 10 training steps offline).

The fresh environments take their dependencies from this one (``scripts/check_dist.py --deps env``): what is
checked is what the built artefacts ship. ``--deps index`` (a full install from the package index) is the
script's default and takes minutes.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_dist.py"


def test_wheel_and_sdist_install_and_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("check_dist", SCRIPT)
    assert spec is not None and spec.loader is not None
    check_dist = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_dist)
    assert check_dist.main(["--deps", "env", "--keep", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("built sae_lens_ortho-") and ".whl and " in lines[0] and lines[0].count(".tar.gz") == 1
    results = [json.loads(line) for line in lines[1:]]
    assert [r["artifact"].rsplit(".", 1)[-1] for r in results] == ["whl", "gz"]
    assert all(r["smoke"]["steps"] == 10 for r in results)
