"""The ``sae-lens-ortho`` command line: SAELens's training CLI with the plugin, plus ``publish``."""

from __future__ import annotations

import argparse
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import sae_lens_ortho  # noqa: F401
from sae_lens_ortho import cli
from sae_lens_ortho.cli import TrainConfigError, main, parse_train_args
from sae_lens_ortho.saes.config import ortho_field_names
from sae_lens_ortho.saes.topk import TopKOrthoTrainingSAEConfig

ORTHO_FLAGS = [f"--{name}" for name in ortho_field_names()]
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


def test_ortho_fields_are_the_expected_flags() -> None:
    assert ORTHO_FLAGS[:9] == [
        "--ortho_coefficient",
        "--ortho_warm_up_steps",
        "--ortho_pair_fraction",
        "--ortho_weighting",
        "--ortho_tau",
        "--ortho_decoder_coefficient",
        "--ortho_decoder_reduction",
        "--ortho_method",
        "--ortho_chunk_size",
    ]
    assert {
        "--ortho_adaptive",
        "--ortho_pair_filter",
        "--ortho_decoder_penalty",
        "--ortho_l1_target_rate",
        "--ortho_decoder_start",
        "--ortho_micro_batch_size",
        "--ortho_manage_every",
        "--ortho_competition_gamma",
        "--ortho_encoder_layer_norm",
    } <= set(ORTHO_FLAGS)
    assert len(ORTHO_FLAGS) == 41


def test_train_help_subprocess_lists_topk_ortho_and_ortho_flags(tmp_path: Path) -> None:
    """The installed console script (or ``python -m sae_lens_ortho.cli``), offline, in a fresh process."""
    script = shutil.which("sae-lens-ortho", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "sae_lens_ortho.cli"]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "COLUMNS": "200",
    }
    proc = subprocess.run(
        [*command, "train", "--help"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "topk_ortho" in out and "--architecture" in out
    assert "TopKOrthoTrainingSAEConfig" in out  # the default architecture's flag group
    for flag in [*ORTHO_FLAGS, "--k", "--d_sae", "--training_tokens", "--train_batch_size_tokens"]:
        assert flag in out, flag
    assert not list(tmp_path.glob("output*")) and not list(tmp_path.glob("checkpoints*"))


def test_module_entry_point_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["sae-lens-ortho", "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("sae_lens_ortho.cli", run_name="__main__")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "publish" in out


def test_top_level_help_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: sae-lens-ortho" in out and "train" in out and "publish" in out and "topk_ortho" in out
    assert main([]) == 2  # no command: usage and an error status
    assert main(["bogus"]) == 2
    assert "unknown command 'bogus'" in capsys.readouterr().err


def test_register_command_is_the_extension_point(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))
    seen: list[list[str]] = []
    cli.register_command("inspect", "inspect an SAE", lambda argv: seen.append(argv) or 0)
    assert main(["inspect", "a", "--b"]) == 0 and seen == [["a", "--b"]]
    out = (main(["--help"]), capsys.readouterr().out)[1]
    assert "inspect an SAE" in out and "run SAEBench suites" in out  # eval is registered by the package
    with pytest.raises(ValueError, match="already registered"):
        cli.register_command("inspect", "other", lambda argv: 1)


def test_train_help_in_process_for_plain_topk(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--architecture", "topk", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "TopKTrainingSAEConfig" in out and "--ortho_coefficient" not in out


def test_parse_train_args_builds_topk_ortho_config() -> None:
    cfg = parse_train_args(
        [
            "--architecture",
            "topk_ortho",
            "--d_sae",
            "128",
            "--k",
            "7",
            "--ortho_coefficient",
            "0.3",
            "--ortho_warm_up_steps",
            "5",
            "--ortho_pair_fraction",
            "0.01",
            "--ortho_weighting",
            "hinge",
            "--ortho_tau",
            "0.2",
            "--ortho_decoder_coefficient",
            "0.05",
            "--ortho_decoder_reduction",
            "sum",
            "--ortho_method",
            "dense",
            "--ortho_chunk_size",
            "64",
            "--model_name",
            "some-model",
            "--hook_name",
            "blocks.1.hook_resid_post",
            *BASE,
        ]
    )
    from sae_lens import LanguageModelSAERunnerConfig

    assert isinstance(cfg, LanguageModelSAERunnerConfig)
    sae = cfg.sae
    assert type(sae) is TopKOrthoTrainingSAEConfig and sae.architecture() == "topk_ortho"
    assert (sae.d_in, sae.d_sae, sae.k) == (32, 128, 7)
    assert (sae.ortho_coefficient, sae.ortho_warm_up_steps, sae.ortho_pair_fraction) == (0.3, 5, 0.01)
    assert (sae.ortho_weighting, sae.ortho_tau, sae.ortho_decoder_coefficient) == ("hinge", 0.2, 0.05)
    assert (sae.ortho_decoder_reduction, sae.ortho_method, sae.ortho_chunk_size) == ("sum", "dense", 64)
    assert (cfg.model_name, cfg.hook_name, cfg.training_tokens, cfg.train_batch_size_tokens) == (
        "some-model",
        "blocks.1.hook_resid_post",
        2048,
        256,
    )
    assert cfg.logger.log_to_wandb is False
    # The runner's config round-trips through its dict form (as runner_cfg.json does).
    again = LanguageModelSAERunnerConfig.from_dict(cfg.to_dict())
    assert type(again.sae) is TopKOrthoTrainingSAEConfig and again.sae.ortho_coefficient == 0.3


@pytest.mark.parametrize("form", [[], ["--architecture=topk_ortho"], ["--sae", "topk_ortho"]])
def test_architecture_defaults_to_topk_ortho(form: list[str]) -> None:
    cfg = parse_train_args([*form, "--ortho_coefficient", "0.7", *BASE])
    assert type(cfg.sae) is TopKOrthoTrainingSAEConfig and cfg.sae.ortho_coefficient == 0.7


def test_abbreviated_architecture_flag_is_refused() -> None:
    # simple_parsing resolves the architecture before argparse expands "--arch": it would silently train the
    # default architecture.
    with pytest.raises(TrainConfigError, match="--architecture in full"):
        parse_train_args(["--arch", "topk", *BASE])


def test_other_architectures_are_not_overridden() -> None:
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    cfg = parse_train_args(["--architecture", "topk", "--sae.dtype", "float32", *BASE])
    assert type(cfg.sae) is TopKTrainingSAEConfig
    with pytest.raises(SystemExit):  # ortho flags do not exist for plain topk
        parse_train_args(["--architecture", "topk", "--ortho_coefficient", "0.3", *BASE])


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--ortho_pair_fraction", "1.5", r"ortho_pair_fraction must be a finite number in \(0, 1\], got 1.5"),
        ("--ortho_pair_fraction", "0", r"ortho_pair_fraction .*\(0, 1\]"),
        ("--ortho_coefficient", "-1", r"ortho_coefficient .*\[0, inf\)"),
        ("--ortho_tau", "2", r"ortho_tau .*\[0, 1\]"),
        ("--ortho_chunk_size", "0", r"ortho_chunk_size must be an integer >= 1"),
    ],
)
def test_out_of_range_values_name_the_field_and_range(
    flag: str, value: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match=expected):
        parse_train_args([flag, value, *BASE])
    assert main(["train", flag, value, *BASE]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sae-lens-ortho train: error: ") and flag.lstrip("-") in err and "Traceback" not in err


def test_bad_flag_values_are_argparse_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(argparse.ArgumentError, match="ortho_weighting"):
        parse_train_args(["--ortho_weighting", "bogus", *BASE])
    assert main(["train", "--ortho_warm_up_steps", "1.5", *BASE]) == 2
    assert "ortho_warm_up_steps" in capsys.readouterr().err


def _no_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    import sae_lens.llm_sae_training_runner as runner_mod

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the runner must not start")

    monkeypatch.setattr(runner_mod, "LanguageModelSAETrainingRunner", refuse)


def test_zero_step_config_is_rejected_before_training(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--d_in", "32", "--training_tokens", "1000", "--train_batch_size_tokens", "4096"]
    with pytest.raises(TrainConfigError) as info:
        parse_train_args(args)
    message = str(info.value)
    assert "training_tokens (1000)" in message and "train_batch_size_tokens (4096)" in message
    assert "0 training steps" in message
    _no_runner(monkeypatch)
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert "training_tokens" in err and "train_batch_size_tokens" in err
    # Exactly one step is fine.
    one_step = ["--training_tokens", "4096", "--train_batch_size_tokens", "4096", "--n_batches_in_buffer", "32"]
    assert parse_train_args(one_step).total_training_steps == 1


def test_buffer_smaller_than_a_batch_is_rejected() -> None:
    # SAELens's mixing buffer holds n_batches_in_buffer * context_size activations and raises at the first batch
    # when that is below train_batch_size_tokens -- SAELens's own defaults (20 * 128 < 4096) included.
    with pytest.raises(TrainConfigError, match=r"= 2560 < train_batch_size_tokens \(4096\)"):
        parse_train_args(["--d_sae", "64"])
    with pytest.raises(TrainConfigError, match=r"n_batches_in_buffer \(2\).*context size \(64\).*train_batch_size"):
        parse_train_args(
            [
                "--n_batches_in_buffer",
                "2",
                "--context_size",
                "64",
                "--train_batch_size_tokens",
                "256",
                "--training_tokens",
                "1024",
            ]
        )


def test_train_runs_sae_lens_runner_with_the_parsed_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sae_lens.llm_sae_training_runner as runner_mod

    runs: list[Any] = []

    class FakeRunner:
        def __init__(self, cfg: Any) -> None:
            self.cfg = cfg

        def run(self) -> None:
            runs.append(self.cfg)

    monkeypatch.setattr(runner_mod, "LanguageModelSAETrainingRunner", FakeRunner)
    assert main(["train", "--ortho_coefficient", "0.4", "--output_path", "somewhere", *BASE]) == 0
    assert len(runs) == 1 and runs[0].sae.ortho_coefficient == 0.4
    assert "sae-lens-ortho publish somewhere" in capsys.readouterr().out


# --- end to end: the CLI trains a real tiny run -----------------------------------------------------------------


def test_cli_train_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real run through ``sae-lens-ortho train``: SAELens's runner, a local parquet dataset loaded by the real
    ``load_dataset``; only the model loader is replaced (the CLI loads models by name from the Hub)."""
    import datasets
    import sae_lens.llm_sae_training_runner as runner_mod
    from datasets import Dataset
    from sae_lens import SAE
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)

    data = tmp_path / "tokens"
    data.mkdir()
    tokens = torch.randint(0, 500, (32, 64), generator=torch.Generator().manual_seed(0))
    Dataset.from_dict({"tokens": tokens.tolist()}).to_parquet(str(data / "train.parquet"))

    torch.manual_seed(0)
    model = HookedTransformer(
        HookedTransformerConfig(
            n_layers=1,
            d_model=32,
            n_ctx=64,
            d_head=8,
            n_heads=4,
            d_mlp=128,
            d_vocab=500,
            act_fn="gelu",
            normalization_type="LN",
        )
    )
    loaded: list[tuple[str, str]] = []

    def load_model(model_class_name: str, model_name: str, **kwargs: Any) -> Any:
        loaded.append((model_class_name, model_name))
        return model

    monkeypatch.setattr(runner_mod, "load_model", load_model)
    out = tmp_path / "final"
    rc = main(
        [
            "train",
            "--model_name",
            "tiny-local",
            "--hook_name",
            "blocks.0.hook_resid_post",
            "--dataset_path",
            str(data),
            "--is_dataset_tokenized",
            "True",
            "--streaming",
            "False",
            "--d_in",
            "32",
            "--d_sae",
            "64",
            "--k",
            "4",
            "--ortho_coefficient",
            "0.3",
            "--ortho_pair_fraction",
            "0.05",
            "--context_size",
            "64",
            "--training_tokens",
            "2048",
            "--train_batch_size_tokens",
            "256",
            "--store_batch_size_prompts",
            "4",
            "--n_batches_in_buffer",
            "8",
            "--log_to_wandb",
            "False",
            "--output_path",
            str(out),
            "--checkpoint_path",
            str(tmp_path / "ckpt"),
            "--verbose",
            "False",
        ]
    )
    assert rc == 0 and loaded == [("HookedTransformer", "tiny-local")]
    assert {p.name for p in out.iterdir()} >= {"cfg.json", "sae_weights.safetensors", "runner_cfg.json"}
    sae = SAE.load_from_disk(out)
    assert sae.cfg.architecture() == "topk" and sae.cfg.metadata.training_architecture == "topk_ortho"
    assert sae.cfg.metadata.training_architecture_details["ortho_coefficient"] == 0.3
    assert sae.cfg.metadata.dataset_path == str(data)
    assert (tmp_path / "datasets_cache").is_dir()  # load_dataset's cache stayed under tmp_path
