"""The README's recipe for your own architecture: register it with SAELens (training and inference), call
``add_ortho``, and reach the result from the CLI with ``--plugin``; ``add_ortho`` says what is missing."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest
from cli_helpers import BASE, run_console
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

from sae_lens_ortho import add_ortho
from sae_lens_ortho.cli import parse_train_args
from sae_lens_ortho.plugins import PluginError, import_plugins, pop_plugin_args
from sae_lens_ortho_cli import main

# The recipe as a user writes it (README "Your own architecture").
MY_ARCH = textwrap.dedent(
    """
    from dataclasses import dataclass

    from sae_lens import register_sae_class, register_sae_training_class
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig

    import sae_lens_ortho


    @dataclass
    class MyTopKSAEConfig(TopKSAEConfig):
        @classmethod
        def architecture(cls) -> str:
            return "mytopk"


    class MyTopKSAE(TopKSAE):
        pass


    @dataclass
    class MyTopKTrainingSAEConfig(TopKTrainingSAEConfig):
        @classmethod
        def architecture(cls) -> str:
            return "mytopk"


    class MyTopKTrainingSAE(TopKTrainingSAE):
        pass


    register_sae_class("mytopk", MyTopKSAE, MyTopKSAEConfig)  # what the trained SAE saves and loads as
    register_sae_training_class("mytopk", MyTopKTrainingSAE, MyTopKTrainingSAEConfig)
    sae_lens_ortho.add_ortho("mytopk")  # registers mytopk_ortho
    """
)


@pytest.fixture
def registries():
    """SAELens's registries as they were before the test (the plugin registers into them)."""
    saved = dict(SAE_TRAINING_CLASS_REGISTRY), dict(SAE_CLASS_REGISTRY)
    yield
    for registry, old in zip((SAE_TRAINING_CLASS_REGISTRY, SAE_CLASS_REGISTRY), saved):
        registry.clear()
        registry.update(old)


def test_add_ortho_says_which_registration_is_missing(registries: None) -> None:
    with pytest.raises(ValueError, match=r"add_ortho\('nothere'\): 'nothere' is not a registered training"):
        add_ortho("nothere")

    class HalfConfig(TopKTrainingSAEConfig):
        @classmethod
        def architecture(cls) -> str:
            return "half"

    SAE_TRAINING_CLASS_REGISTRY["half"] = (TopKTrainingSAE, HalfConfig)  # training only, no inference class
    with pytest.raises(ValueError, match=r"registered for training but not for inference.*register_sae_class\('half'"):
        add_ortho("half")
    assert "half_ortho" not in SAE_TRAINING_CLASS_REGISTRY


def test_a_plugin_architecture_is_reachable_from_the_cli(registries: None, tmp_path: Path) -> None:
    (tmp_path / "my_arch.py").write_text(MY_ARCH)
    # the console script in a fresh process, the plugin found by module name from the working directory
    proc = run_console(["train", "--plugin", "my_arch", "--architecture", "mytopk_ortho", "--help"], tmp_path)
    flat = " ".join(proc.stdout.split())
    listed = re.search(r"the ortho architectures are ([\w, ]+)\. Pass", flat)
    assert listed is not None
    names = listed.group(1).split(", ")
    assert {"topk_ortho", "batchtopk_ortho", "standard_ortho", "jumprelu_ortho", "matryoshka_batchtopk_ortho"} <= set(
        names
    )
    assert names[-1] == "mytopk_ortho"  # the plugin's twin, registered last
    assert "MytopkOrthoTrainingSAEConfig" in flat and "--ortho_coefficient" in flat
    # in process, the plugin given by path; the config it builds saves as the user's inference architecture
    cfg = parse_train_args(["--plugin", str(tmp_path / "my_arch.py"), "--architecture", "mytopk_ortho", *BASE])
    assert cfg.sae.architecture() == "mytopk_ortho" and cfg.sae.ortho_base_architecture == "mytopk"
    assert cfg.sae.get_inference_sae_cfg_dict()["architecture"] == "mytopk"
    sys.modules.pop("my_arch", None)


def test_plugin_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert pop_plugin_args(["--plugin", "a", "--k", "3", "--plugin=b.py"]) == (["a", "b.py"], ["--k", "3"])
    with pytest.raises(PluginError, match="--plugin needs a module name"):
        pop_plugin_args(["--plugin"])
    with pytest.raises(PluginError, match=r"--plugin missing.py: no such file"):
        import_plugins(["missing.py"])
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match="cannot import it: RuntimeError: boom"):
        import_plugins([str(tmp_path / "broken_plugin.py")])
    assert main(["train", "--plugin", "no_such_plugin_module", *BASE]) == 2
    err = capsys.readouterr().err
    assert err == (
        "sae-lens-ortho train: error: --plugin no_such_plugin_module: cannot import it: ModuleNotFoundError: "
        "No module named 'no_such_plugin_module'\n"
    )
