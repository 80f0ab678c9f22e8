"""Test-wide environment: offline, and nothing written to the home directory.

The variables are set when pytest imports this file, before any test module is collected, because
``huggingface_hub`` and ``datasets`` read ``HF_HOME`` / ``HF_HUB_OFFLINE`` once, at import. They point
into one temporary directory that is removed (and the old values restored) when the session ends.

Fixtures:

* ``offline_env`` (session, autouse): the dict of variables set here, e.g. ``offline_env["WANDB_DIR"]``.
* an autouse fixture that resets wandb after each test (``wandb.teardown``): wandb reads ``WANDB_DIR`` and its
  other variables once per process, at the first ``wandb.init``, so without it a test's own ``WANDB_DIR`` would be
  ignored after any earlier test (a preset's example, say) had logged a run;
* ``wandb_dir`` (function): points ``WANDB_DIR`` at a fresh per-test folder and returns the folder that
  wandb writes its runs into (``<WANDB_DIR>/wandb``), so a test finds exactly its own offline runs.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="sae_lens_ortho_tests_"))

OFFLINE_ENV: dict[str, str] = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_CONSOLE": "off",  # do not wrap stdout/stderr (pytest captures them)
    "WANDB_DIR": str(_ROOT / "wandb_dir"),
    "WANDB_CACHE_DIR": str(_ROOT / "wandb_cache"),
    "WANDB_DATA_DIR": str(_ROOT / "wandb_data"),
    "WANDB_CONFIG_DIR": str(_ROOT / "wandb_config"),
    "HF_HOME": str(_ROOT / "hf_home"),
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

_SAVED = {name: os.environ.get(name) for name in OFFLINE_ENV}
for _name, _value in OFFLINE_ENV.items():
    if _name.endswith(("_DIR", "_HOME")):
        Path(_value).mkdir(parents=True, exist_ok=True)
    os.environ[_name] = _value


def pytest_unconfigure(config: pytest.Config) -> None:  # noqa: ARG001
    for name, old in _SAVED.items():
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
    shutil.rmtree(_ROOT, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def offline_env() -> dict[str, str]:
    """The offline variables, re-asserted for the session (a test may have changed one without monkeypatch)."""
    for name, value in OFFLINE_ENV.items():
        os.environ[name] = value
    return dict(OFFLINE_ENV)


@pytest.fixture(autouse=True)
def _fresh_wandb_process_settings():
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is None:
        wandb.teardown()


@pytest.fixture
def wandb_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``WANDB_DIR`` for this test; returns ``<WANDB_DIR>/wandb``, where offline runs appear."""
    root = tmp_path / "wandb_root"
    root.mkdir()
    monkeypatch.setenv("WANDB_DIR", str(root))
    monkeypatch.setenv("WANDB_MODE", "offline")
    return root / "wandb"


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch):
    """The tiny SynthSAEBench scale (``tests/synth_tiny.py``), registered as ``--config tiny`` for the test."""
    from synth_tiny import TINY

    from sae_lens_ortho.evals.synthetic import scales

    monkeypatch.setitem(scales.SCALES, "tiny", TINY)
    return TINY
