"""Clear errors instead of bare KeyErrors when loading (issue 11, item 7)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from sae_lens import SAE, TrainingSAE
from sae_lens.saes.sae import TrainStepInput

from sae_lens_ortho import (
    BatchTopKOrthoTrainingSAE,
    BatchTopKOrthoTrainingSAEConfig,
    StandardOrthoTrainingSAE,
    StandardOrthoTrainingSAEConfig,
    TopKOrthoTrainingSAE,
    TopKOrthoTrainingSAEConfig,
    add_ortho,
)
from sae_lens_ortho.hub import model_card

CASES: list[tuple[Any, Any, dict[str, Any]]] = [
    (TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig, dict(k=2)),
    (BatchTopKOrthoTrainingSAE, BatchTopKOrthoTrainingSAEConfig, dict(k=2)),
    (StandardOrthoTrainingSAE, StandardOrthoTrainingSAEConfig, {}),
    (StandardOrthoTrainingSAE, StandardOrthoTrainingSAEConfig, dict(ortho_encoder_layer_norm=True)),
]


def _trained(sae_cls: Any, cfg_cls: Any, kw: dict[str, Any]) -> Any:
    sae = sae_cls(cfg_cls(d_in=8, d_sae=16, **kw))
    coefficients = {"ortho": 1.0, "decoder_ortho": 0.0, "l1": 1.0}
    sae.training_forward_pass(TrainStepInput(torch.randn(4, 8), coefficients, None, 0, False))
    return sae


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: c[1].architecture() + ("+ln" if c[2].get("ortho_encoder_layer_norm") else "")
)
def test_sae_load_from_disk_on_a_checkpoint_says_what_to_do(
    case: tuple[Any, Any, dict[str, Any]], tmp_path: Path
) -> None:
    sae = _trained(*case)
    sae.save_model(tmp_path)  # what SAELens's trainer writes into a checkpoint
    with pytest.raises(ValueError, match=r"training\*? (architecture|checkpoint).*TrainingSAE\.load_from_disk"):
        SAE.load_from_disk(tmp_path)
    loaded = TrainingSAE.load_from_disk(tmp_path)  # the way that works
    assert type(loaded) is type(sae)


def test_add_ortho_architectures_get_the_same_error(tmp_path: Path) -> None:
    sae_cls, cfg_cls = add_ortho("jumprelu")
    sae = sae_cls(cfg_cls(d_in=8, d_sae=16))
    sae.training_forward_pass(
        TrainStepInput(torch.randn(4, 8), {"ortho": 1.0, "decoder_ortho": 0.0, "l0": 1.0}, None, 0, False)
    )
    sae.save_model(tmp_path)
    with pytest.raises(ValueError, match="'jumprelu_ortho' is a sae_lens_ortho \\*training\\* architecture"):
        SAE.load_from_disk(tmp_path)


def test_a_standard_ortho_sae_names_the_package_without_the_plugin(tmp_path: Path) -> None:
    sae = _trained(StandardOrthoTrainingSAE, StandardOrthoTrainingSAEConfig, dict(ortho_encoder_layer_norm=True))
    sae.save_inference_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "standard_ortho"
    assert cfg["metadata"]["required_package"] == "sae-lens-ortho"
    hint = cfg["metadata"]["loading_hint"]
    assert "not on PyPI" in hint and "pip install -e" in hint and "pip install sae-lens-ortho" not in hint
    assert "import sae_lens_ortho" in cfg["metadata"]["loading_hint"]
    # Without the plugin SAELens still fails (its KeyError), and the folder's cfg says why.
    code = (
        "import json, sys; from sae_lens import SAE\n"
        f"p = {str(tmp_path)!r}\n"
        "try:\n    SAE.load_from_disk(p)\nexcept KeyError as e:\n"
        "    print('KeyError', e, json.load(open(p + '/cfg.json'))['metadata']['loading_hint'])\n"
        "assert 'sae_lens_ortho' not in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert "KeyError 'standard_ortho'" in out.stdout and "not on PyPI: install it from its source" in out.stdout
    # With it, the saved SAE loads.
    assert type(SAE.load_from_disk(tmp_path)).__name__ == "StandardOrthoSAE"
    card = model_card(cfg)
    assert "import sae_lens_ortho" in card and "install it from its source" in card  # not on PyPI (hub.py)
    plain = _trained(StandardOrthoTrainingSAE, StandardOrthoTrainingSAEConfig, {})
    plain.save_inference_model(tmp_path / "plain")
    plain_cfg = json.loads((tmp_path / "plain" / "cfg.json").read_text())
    assert plain_cfg["architecture"] == "standard" and "import sae_lens_ortho" not in model_card(plain_cfg)
