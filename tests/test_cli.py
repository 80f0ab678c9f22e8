"""``sae-lens-ortho train``'s parsing and help, and the command table of the entry point (``sae_lens_ortho_cli``).

The offline training and evaluation runs are in test_offline_route.py, start-up in test_cli_startup.py."""

from __future__ import annotations

import argparse
import dataclasses
import re
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import BASE, run_console
from simple_parsing.docstring import get_attribute_docstring

import sae_lens_ortho  # noqa: F401
import sae_lens_ortho_cli
from sae_lens_ortho.cli import TrainConfigError, parse_train_args
from sae_lens_ortho.saes.config import OrthoConfig, ortho_field_names
from sae_lens_ortho.saes.standard import StandardOrthoTrainingSAEConfig
from sae_lens_ortho.saes.topk import TopKOrthoTrainingSAEConfig
from sae_lens_ortho_cli import main

ORTHO_FLAGS = [f"--{name}" for name in ortho_field_names()]


def test_ortho_fields_are_the_expected_flags() -> None:
    assert ORTHO_FLAGS[:9] == [
        "--ortho_coefficient",
        "--ortho_warm_up_steps",
        "--ortho_pair_fraction",
        "--ortho_weighting",
        "--ortho_tau",
        "--ortho_select_by",
        "--ortho_select_every",
        "--ortho_scale",
        "--ortho_target",
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
        "--ortho_gate_firing_rate",
        "--ortho_bias_adapt_rate",
    } <= set(ORTHO_FLAGS)
    assert {"--ortho_target", "--ortho_select_by", "--ortho_select_every", "--ortho_scale"} <= set(ORTHO_FLAGS)
    assert len(ORTHO_FLAGS) == 52


def flag_help(help_text: str) -> dict[str, str]:
    """{flag: its help text, whitespace collapsed} from argparse's option listing."""
    entries: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        m = re.match(r"^  (--?[\w.-]+)", line)
        if m:
            current = m.group(1)
            entries[current] = line[m.end() :]
        elif current is not None and line.startswith("    "):
            entries[current] += " " + line
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in entries.items()}


def test_train_help_documents_every_ortho_field(tmp_path: Path) -> None:
    """The console script, offline, in a fresh process: every --ortho_* flag's help is its field's docstring in
    saes/config.py, and the header and --architecture agree on the default."""
    out = run_console(["train", "--help"], tmp_path).stdout
    assert out.startswith("usage: sae-lens-ortho train")
    helps = flag_help(out)
    common = [f.name for f in dataclasses.fields(OrthoConfig)]
    for name in common:
        doc = " ".join(get_attribute_docstring(OrthoConfig, name).docstring_below.split())
        assert doc, f"{name} has no docstring in its mechanism's file"
        assert doc in helps[f"--{name}"], (name, helps[f"--{name}"][:200])
    # The fields of standard_ortho's encoder options are its own: not in topk_ortho's help, documented in its.
    standard_only = [name for name in ortho_field_names() if name not in common]
    assert standard_only and not any(f"--{name}" in helps for name in standard_only)
    standard = flag_help(run_console(["train", "--architecture", "standard_ortho", "--help"], tmp_path).stdout)
    for name in standard_only:
        doc = " ".join(get_attribute_docstring(StandardOrthoTrainingSAEConfig, name).docstring_below.split())
        assert doc and doc in standard[f"--{name}"], (name, standard.get(f"--{name}", "")[:200])
    assert "(default: topk_ortho)" in helps["--sae"] and "default: standard" not in out
    flat = " ".join(out.split())
    assert "defaults to topk_ortho; the ortho architectures are batchtopk_ortho, standard_ortho, topk_ortho" in flat
    for flag in ["-k", "--d_sae", "--training_tokens", "--train_batch_size_tokens", "--plugin"]:
        assert flag in helps, flag
    assert not list(tmp_path.glob("output*")) and not list(tmp_path.glob("checkpoints*"))


def test_module_entry_points_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for module in ("sae_lens_ortho_cli", "sae_lens_ortho.cli"):
        monkeypatch.setattr(sys, "argv", ["sae-lens-ortho", "--help"])
        with pytest.raises(SystemExit) as info:
            runpy.run_module(module, run_name="__main__")
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "train" in out and "publish" in out and "metrics" in out and "eval" in out


def test_the_entry_point_names_the_librarys_program_and_default_architecture() -> None:
    """The light entry point writes the two names out (importing the package loads torch); the library owns them."""
    from sae_lens_ortho.cli_help import PROG
    from sae_lens_ortho.runner_config import DEFAULT_ARCHITECTURE

    assert (sae_lens_ortho_cli.PROG, sae_lens_ortho_cli.DEFAULT_ARCHITECTURE) == (PROG, DEFAULT_ARCHITECTURE)


def test_top_level_help_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: sae-lens-ortho" in out and "train" in out and "publish" in out and "topk_ortho" in out
    assert main([]) == 2  # no command: usage and an error status
    assert main(["bogus"]) == 2
    assert "unknown command 'bogus'" in capsys.readouterr().err
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("sae-lens-ortho ")


def test_register_command_is_the_extension_point(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(sae_lens_ortho_cli, "COMMANDS", dict(sae_lens_ortho_cli.COMMANDS))
    seen: list[list[str]] = []
    sae_lens_ortho_cli.register_command("inspect", "inspect an SAE", lambda argv: seen.append(argv) or 0)
    assert main(["inspect", "a", "--b"]) == 0 and seen == [["a", "--b"]]
    # a "module:function" target is imported only when its command runs
    (tmp_path / "late_command.py").write_text("def run(argv):\n    print('late', *argv)\n    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sae_lens_ortho_cli.register_command("late", "imported when it runs", "late_command:run")
    assert "late_command" not in sys.modules
    out = (main(["--help"]), capsys.readouterr().out)[1]
    assert "inspect an SAE" in out and "imported when it runs" in out and "late_command" not in sys.modules
    assert main(["late", "x"]) == 3 and capsys.readouterr().out == "late x\n"
    with pytest.raises(ValueError, match="already registered"):
        sae_lens_ortho_cli.register_command("inspect", "other", lambda argv: 1)


def test_train_help_in_process_for_plain_topk(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--architecture", "topk", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "TopKTrainingSAEConfig" in out and not re.search(r"^  --ortho_", out, re.M)  # (the summary names them)


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
    with pytest.raises(TrainConfigError, match=r"--ortho_coefficient is a flag of the [*]_ortho architectures only"):
        parse_train_args(["--architecture", "topk", "--ortho_coefficient", "0.3", *BASE])  # plain topk has none


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--ortho_pair_fraction", "1.5", r"ortho_pair_fraction must be a finite number in \(0, 1\], got 1.5"),
        ("--ortho_pair_fraction", "0", r"ortho_pair_fraction .*\(0, 1\]"),
        ("--ortho_coefficient", "-1", r"ortho_coefficient .*\[0, 1000000.0\]"),
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
        parse_train_args(["--d_sae", "128"])  # (SAELens's default k = 100 must fit d_sae)
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
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from datasets import Dataset

    import sae_lens_ortho.training as training

    tokens = tmp_path / "tokens"  # the dataset is checked before anything loads (dataset_checks.py)
    Dataset.from_dict({"tokens": [list(range(64))] * 4}).save_to_disk(str(tokens))

    runs: list[Any] = []
    monkeypatch.setattr(training, "train", runs.append)  # the CLI trains through training.train (crash-safe runner)
    import sae_lens_ortho.local_sources as local_sources

    monkeypatch.setattr(local_sources, "_offline", lambda: False)  # the network edge: gelu-2l is not cached here
    argv = ["train", "--ortho_coefficient", "0.4", "--output_path", "somewhere", "--dataset_path", str(tokens)]
    assert main([*argv, *BASE]) == 0
    assert len(runs) == 1 and runs[0].sae.ortho_coefficient == 0.4
    assert "sae-lens-ortho publish somewhere" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--ortho_coeficient", "0.1"], "unknown flag --ortho_coeficient (did you mean --ortho_coefficient?)"),
        (
            ["--architecture", "topk_orth"],
            "--architecture 'topk_orth' is not a registered training architecture (did you mean topk_ortho?)",
        ),
        (["--sae=batchtopk_orth"], "(did you mean batchtopk_ortho?)"),
        (["--ortho_coefficient=0.1", "stray"], "unexpected value(s) stray"),
    ],
)
def test_train_usage_errors_are_one_line_with_did_you_mean(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    """A misspelled flag was reported after 108 lines of usage (every flag), a misspelled architecture after a
    usage line listing every choice: now the error alone, on one line, with the closest name."""
    assert main(["train", *argv, *BASE]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sae-lens-ortho train: error: "), captured.err[:500]
    assert expected in lines[0] and "usage:" not in captured.out + captured.err


def test_train_help_opens_with_a_summary_and_groups_the_ortho_flags_by_mechanism(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """train --help was 617 lines opening with a 108-line usage and a 3,000-character repr, every ortho flag in
    one list: now a one-line usage, a summary naming each mechanism, and a help group per mechanism."""
    from sae_lens_ortho.describe import FIELD_GROUPS

    grouped = [name for group in FIELD_GROUPS for name in group.fields]
    assert sorted(grouped) == sorted(ortho_field_names())  # every field in exactly one group
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "usage: sae-lens-ortho train [-h] [--plugin MODULE] [--architecture NAME] [--FLAG VALUE ...]"
    summary = out[: out.index("\noptions:")]
    assert len(summary.splitlines()) <= 30 and "CommandLineRunnerConfig(" not in out
    headings = [i for i, line in enumerate(lines) if line and not line.startswith(" ") and line.endswith(":")]
    for group in FIELD_GROUPS:
        assert group.title in summary, group.title
        start = lines.index(f"ortho: {group.title}:")
        end = min((i for i in headings if i > start), default=len(lines))
        section = "\n".join(lines[start:end])
        for name in group.fields:  # topk_ortho's help: standard_ortho's own encoder fields are not in it
            found = re.search(rf"^  --{name}\b", section, re.M)
            assert bool(found) == (name in TopKOrthoTrainingSAEConfig.__dataclass_fields__), (group.title, name)


def test_matryoshka_without_widths_is_one_line_before_anything_loads(capsys: pytest.CaptureFixture[str]) -> None:
    """SAELens accepted an empty matryoshka_widths and failed when the SAE was built, after the model had loaded
    (a traceback in Python): now the config refuses it, naming the field (Python and CLI)."""
    from sae_lens_ortho import LanguageModelSAERunnerConfig

    argv = ["--architecture", "matryoshka_batchtopk_ortho", "--d_sae", "64", "--k", "4", *BASE]
    with pytest.raises(ValueError, match=r"^matryoshka_widths is empty: .*--matryoshka_widths 4 16 64\)$"):
        parse_train_args(argv)
    assert main(["train", *argv]) == 2
    assert capsys.readouterr().err.startswith("sae-lens-ortho train: error: matryoshka_widths is empty")
    with pytest.raises(ValueError, match=r"^matryoshka_widths is empty"):
        LanguageModelSAERunnerConfig(architecture="matryoshka_batchtopk_ortho", d_in=32, d_sae=64, k=4)
    cfg = parse_train_args([*argv, "--matryoshka_widths", "16", "64"])
    assert cfg.sae.matryoshka_widths == [16, 64]
