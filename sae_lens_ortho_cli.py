"""The ``sae-lens-ortho`` command line: the entry point, light enough to answer ``--help`` without torch.

Importing anything under ``sae_lens_ortho`` runs the package's ``__init__``, which imports torch and SAELens to
register the ``*_ortho`` architectures (the plugin's contract). This top-level module of the same distribution
holds what must not pay for that: the command table, the top-level help, and the parsers of the light commands
(``publish``, ``metrics``). A command's implementation is imported only when the command runs.

Commands (``sae-lens-ortho --help``): ``train`` (:mod:`sae_lens_ortho.cli`), ``eval``
(:mod:`sae_lens_ortho.evals.saebench.cli`), ``publish`` (:mod:`sae_lens_ortho.hub`), ``metrics``
(:mod:`sae_lens_ortho.metrics`).

Adding a command: ``register_command("name", "one-line help", "package.module:function")`` at the bottom of this
module. The function receives the arguments after the command name, parses them itself, and returns the exit
status; it is imported when the command runs, so ``sae-lens-ortho --help`` stays light.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["COMMANDS", "DEFAULT_ARCHITECTURE", "PROG", "Command", "main", "register_command"]

# The library's values (``sae_lens_ortho.cli_help.PROG``, ``sae_lens_ortho.runner_config.DEFAULT_ARCHITECTURE``),
# written out here because importing the package would load torch; tests/test_cli.py checks they agree.
PROG = "sae-lens-ortho"
DEFAULT_ARCHITECTURE = "topk_ortho"
"""``--architecture`` of ``sae-lens-ortho train`` when not given (SAELens's own default is ``standard``)."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    target: str | Callable[[list[str]], int]
    """``"module:function"`` (imported when the command runs) or the function itself. Called with the arguments
    after the command name; returns the exit status."""

    def run(self, argv: list[str]) -> int:
        target = self.target
        if isinstance(target, str):
            module, _, name = target.partition(":")
            target = getattr(importlib.import_module(module), name)
        return target(argv)


COMMANDS: dict[str, Command] = {}
"""Commands by name, in the order ``--help`` lists them. Extend with :func:`register_command`."""


def register_command(name: str, help: str, target: str | Callable[[list[str]], int]) -> None:
    """Add a command (see the module docstring); re-registering the same target is a no-op."""
    if name in COMMANDS and COMMANDS[name].target != target:
        raise ValueError(f"command {name!r} is already registered")
    COMMANDS[name] = Command(name, help, target)


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
        from sae_lens_ortho.cli_help import error

        return error("publish", str(e))
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


# --- metrics ---------------------------------------------------------------------------------------------------


def _metrics_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} metrics",
        description=(
            "Summarise the ortho metrics a training run logged to wandb offline (WANDB_MODE=offline; no account "
            "or server needed) and write PNG training curves: ortho loss, selected-pair correlation, "
            "strength / tau, dead latents, decoder penalty, peak memory."
        ),
    )
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="a wandb offline run folder (wandb/offline-run-*), its run-*.wandb file, or a wandb/ folder (or the "
        "folder holding it: then its newest run)",
    )
    p.add_argument("--out", default=None, help="folder for the PNGs (default: RUN_DIR's run folder/ortho_metrics)")
    p.add_argument("--no-plots", action="store_true", help="print the summary only")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def _metrics(argv: list[str]) -> int:
    args = _metrics_parser().parse_args(argv)
    from sae_lens_ortho.metrics import metrics_command

    return metrics_command(args.run_dir, out=args.out, plots=not args.no_plots, as_json=args.json)


# --- top level -------------------------------------------------------------------------------------------------


def _top_parser() -> argparse.ArgumentParser:
    lines = [f"  {c.name:<10} {c.help}" for c in COMMANDS.values()]
    return argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [-h] [-V] {{{','.join(COMMANDS)}}} ...",
        description="Selective orthogonality constraints for sparse autoencoders, as SAELens training architectures.",
        epilog="commands:\n" + "\n".join(lines) + f"\n\nRun `{PROG} COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sae-lens-ortho")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without installing
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _top_parser().print_help()
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"{PROG} {_version()}")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        _top_parser().print_usage(sys.stderr)
        print(f"{PROG}: error: unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    return command.run(argv[1:])


register_command(
    "train",
    f"train an SAE: SAELens's training CLI with the *_ortho architectures (default {DEFAULT_ARCHITECTURE})",
    "sae_lens_ortho.cli:_train",
)
register_command(
    "eval",
    "run SAEBench suites (core, scr, tpp, absorption, sparse_probing, ...) on SAEs",
    "sae_lens_ortho.evals.saebench.cli:cli_main",
)
register_command(
    "synthbench",
    "train SAE architectures on SynthSAEBench (SAELens synthetic ground truth), paired by seed, and report",
    "sae_lens_ortho.evals.synthetic.synthbench_cli:main",
)
register_command("publish", "upload a run's final SAE to the Hugging Face Hub with a model card", _publish)
register_command("metrics", "summarise a run's ortho metrics from its offline wandb log and plot them", _metrics)


if __name__ == "__main__":
    sys.exit(main())
