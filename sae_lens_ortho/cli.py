"""The ``sae-lens-ortho`` command line.

Subcommands (see ``sae-lens-ortho --help``):

* ``train ARGS...``: SAELens's own training CLI (``sae_lens.llm_sae_training_runner``) with this plugin imported,
  so ``--architecture topk_ortho`` and the ortho fields are flags. ``--architecture`` defaults to ``topk_ortho``
  here (SAELens's default is ``standard``). Runs that would take no training step are refused before any model or
  dataset is loaded.
* ``publish RUN_DIR HF_REPO_ID``: upload a run's final SAE with a model card (:mod:`sae_lens_ortho.hub`).

Adding a subcommand (e.g. ``eval``): write ``def _eval(argv: list[str]) -> int`` and
``register_command("eval", "one-line help", _eval)`` next to the others at the bottom of this module. A handler
receives the arguments after its name, parses them itself, and returns the exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COMMANDS",
    "DEFAULT_ARCHITECTURE",
    "Command",
    "TrainConfigError",
    "main",
    "parse_train_args",
    "register_command",
    "validate_train_config",
]

PROG = "sae-lens-ortho"
DEFAULT_ARCHITECTURE = "topk_ortho"


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Callable[[list[str]], int]
    """Called with the arguments after the command name; returns the exit status."""


COMMANDS: dict[str, Command] = {}
"""Subcommands by name, in the order ``--help`` lists them. Extend with :func:`register_command`."""


def register_command(name: str, help: str, run: Callable[[list[str]], int]) -> None:
    """Add a subcommand (the extension point for ``eval`` and later commands)."""
    if name in COMMANDS and COMMANDS[name].run is not run:
        raise ValueError(f"command {name!r} is already registered")
    COMMANDS[name] = Command(name, help, run)


def _error(command: str, message: str) -> int:
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)
    return 2


# --- train -----------------------------------------------------------------------------------------------------


class TrainConfigError(ValueError):
    """A training configuration that parses but cannot produce a trained SAE."""


def _names_architecture(arg: str) -> bool:
    """Whether a command-line token sets the SAE architecture: ``--architecture``, its alias ``--sae``, or their
    ``=value`` forms (``--sae.dtype`` and the like do not)."""
    return arg.split("=", 1)[0] in ("--sae", "--architecture")


def _with_default_architecture(args: Sequence[str]) -> list[str]:
    args = list(args)
    for arg in args:
        flag = arg.split("=", 1)[0]
        if 4 <= len(flag) < len("--architecture") and "--architecture".startswith(flag):
            # simple_parsing picks the architecture before argparse expands abbreviations: SAELens's own CLI would
            # silently train its default architecture with the rest of the flags.
            raise TrainConfigError(f"write --architecture in full (got {flag}): abbreviations of it are not honoured")
    if not args:
        args = ["--help"]  # SAELens's CLI shows its help when called without arguments; keep that
    if not any(_names_architecture(a) for a in args):
        args = ["--architecture", DEFAULT_ARCHITECTURE, *args]
    return args


def validate_train_config(cfg: Any) -> None:
    """Refuse a runner config that cannot train: no step at all, or a mixing buffer smaller than one batch.

    SAELens would otherwise start (load the model and dataset) and then save an untrained SAE, or fail deep in the
    activations store.
    """
    tokens, batch = cfg.training_tokens, cfg.train_batch_size_tokens
    if batch <= 0:
        raise TrainConfigError(f"train_batch_size_tokens must be positive, got {batch}")
    if tokens < batch:
        raise TrainConfigError(
            f"training_tokens ({tokens}) < train_batch_size_tokens ({batch}): the run would take "
            f"{tokens // batch} training steps and save an untrained SAE. Raise --training_tokens to at least "
            f"--train_batch_size_tokens (each step consumes train_batch_size_tokens tokens)."
        )
    seqpos = getattr(cfg, "seqpos_slice", (None,)) or (None,)
    context = len(range(cfg.context_size)[slice(*seqpos)])
    buffer = cfg.n_batches_in_buffer * context
    if buffer < batch:
        raise TrainConfigError(
            f"n_batches_in_buffer ({cfg.n_batches_in_buffer}) x training context size ({context}) = {buffer} < "
            f"train_batch_size_tokens ({batch}): SAELens's activation buffer cannot hold one training batch. Raise "
            "--n_batches_in_buffer or --context_size, or lower --train_batch_size_tokens."
        )


def parse_train_args(args: Sequence[str]) -> Any:
    """Parse ``sae-lens-ortho train`` arguments into a validated ``LanguageModelSAERunnerConfig``.

    Exactly SAELens's ``_parse_cfg_args`` with the plugin imported (``--architecture`` defaulting to
    ``topk_ortho``), then :func:`validate_train_config`. Raises ``ValueError`` (a config field out of range,
    :class:`TrainConfigError`) or ``argparse.ArgumentError`` (a bad flag value); ``--help`` exits.
    """
    from sae_lens.llm_sae_training_runner import _parse_cfg_args

    import sae_lens_ortho  # noqa: F401  (registers the *_ortho training architectures)

    cfg = _parse_cfg_args(_with_default_architecture(args))
    validate_train_config(cfg)
    return cfg


def _train(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv) or not argv:
        print(
            f"{PROG} train: SAELens's training CLI with the sae_lens_ortho architectures registered. "
            f"--architecture defaults to {DEFAULT_ARCHITECTURE} (SAELens: standard); "
            f"pass --architecture NAME --help for that architecture's flags.\n"
        )
    try:
        cfg = parse_train_args(argv)
    except (ValueError, argparse.ArgumentError) as e:
        return _error("train", str(e))
    from sae_lens.llm_sae_training_runner import LanguageModelSAETrainingRunner

    LanguageModelSAETrainingRunner(cfg=cfg).run()  # what sae_lens.llm_sae_training_runner._run_cli does
    if cfg.output_path is not None:
        print(
            f"{PROG} train: final SAE saved to {cfg.output_path}\n"
            f"  publish it with: {PROG} publish {cfg.output_path} <hf_user>/<repo>"
        )
    return 0


# --- publish ---------------------------------------------------------------------------------------------------


def _publish_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} publish",
        description=(
            "Upload a trained run's final SAE to the Hugging Face Hub with SAELens's uploader, plus a model card "
            "(README.md) naming the training architecture, its hyperparameters and the seed paper it follows. "
            "Training checkpoints are refused. Authenticate with HF_TOKEN or `hf auth login`."
        ),
    )
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="the runner's output_path (cfg.json + sae_weights.safetensors) or a run folder holding final/",
    )
    p.add_argument("repo_id", metavar="HF_REPO_ID", help="Hub model repo, owner/name (created if missing)")
    p.add_argument(
        "--sae-id",
        default=None,
        help="folder in the repo, the sae_id of SAE.from_pretrained(repo, sae_id) (default: the hook name)",
    )
    p.add_argument("--revision", default="main", help="branch to upload to, created if missing (default: main)")
    p.add_argument("--private", action="store_true", help="create the repo private (if it does not exist yet)")
    p.add_argument("--overwrite", action="store_true", help="replace an SAE already published under the same sae_id")
    readme = p.add_mutually_exclusive_group()
    readme.add_argument(
        "--overwrite-readme",
        action="store_const",
        dest="readme",
        const="overwrite",
        help="replace the repo's README.md with this SAE's card (default: only if there is none)",
    )
    readme.add_argument("--no-readme", action="store_const", dest="readme", const="skip", help="upload no model card")
    p.set_defaults(readme="if_missing")
    p.add_argument(
        "--dry-run", action="store_true", help="print the folder, destination and model card; upload nothing"
    )
    return p


def _publish(argv: list[str]) -> int:
    args = _publish_parser().parse_args(argv)
    from sae_lens_ortho.hub import PublishError, publish_run

    try:
        result = publish_run(
            args.run_dir,
            args.repo_id,
            sae_id=args.sae_id,
            revision=args.revision,
            private=args.private,
            overwrite=args.overwrite,
            readme=args.readme,
            dry_run=args.dry_run,
        )
    except PublishError as e:
        return _error("publish", str(e))
    if not result.uploaded:
        print(f"would upload {result.folder} to {result.repo_id} (revision {result.revision}) as {result.sae_id!r}")
        print("model card:\n")
        print(result.readme)
        return 0
    print(f"published {result.folder} to {result.url}")
    if result.readme_paths:
        print(f"model card: {', '.join(result.readme_paths)}")
    if result.revision == "main":
        print(f'load with: SAE.from_pretrained("{result.repo_id}", "{result.sae_id}")')
    return 0


# --- top level -------------------------------------------------------------------------------------------------


def _top_parser() -> argparse.ArgumentParser:
    lines = [f"  {c.name:<10} {c.help}" for c in COMMANDS.values()]
    return argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [-h] {{{','.join(COMMANDS)}}} ...",
        description="Selective orthogonality constraints for sparse autoencoders, as SAELens training architectures.",
        epilog="commands:\n" + "\n".join(lines) + f"\n\nRun `{PROG} COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _top_parser().print_help()
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from sae_lens_ortho import __version__

        print(f"{PROG} {__version__}")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        _top_parser().print_usage(sys.stderr)
        print(f"{PROG}: error: unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    return command.run(argv[1:])


register_command(
    "train", "train an SAE: SAELens's training CLI with the *_ortho architectures (default topk_ortho)", _train
)
register_command("publish", "upload a run's final SAE to the Hugging Face Hub with a model card", _publish)


def _eval(argv: list[str]) -> int:
    from sae_lens_ortho.evals.saebench.cli import cli_main  # imports SAEBench only when an evaluation runs

    return cli_main(argv)


register_command("eval", "run SAEBench suites (core, scr, tpp, absorption, sparse_probing, ...) on SAEs", _eval)


if __name__ == "__main__":
    sys.exit(main())
