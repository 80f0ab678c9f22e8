"""``sae-lens-ortho train``: SAELens's training CLI with the plugin's architectures, and a route that works offline.

The command line's entry point is the light top-level module :mod:`sae_lens_ortho_cli` (``--help`` without
torch); it imports this module only when ``train`` runs (the library never imports the entry point;
``python -m sae_lens_ortho.cli`` runs it as a script).

``train`` parses exactly what SAELens's own CLI (``sae_lens.llm_sae_training_runner``) parses, built the same way
at parse time from SAELens's training registry, so every registered architecture is a choice of
``--architecture`` (``--plugin my_module`` imports a module that registers more first). The differences:
``--architecture`` defaults to ``topk_ortho``; every ``--ortho_*`` flag's help is its field's docstring in
``saes/config.py`` (SAELens's parser keeps only class-docstring ``Args`` entries), grouped by mechanism after a short
summary, and a mistyped flag or architecture is one line with a "did you mean" (``cli_help.py``); and runs that
would take no training step, or whose dataset cannot be read (``dataset_checks.py``), are refused before any
model or dataset is loaded. The run goes through :func:`sae_lens_ortho.training.train`:
torch seeded with ``--seed``, atomic checkpoints, a checkpoint on SIGINT / SIGTERM (exit status 128 + signal),
``--resume_from_checkpoint`` taking a checkpoint root.

Offline: ``--model_name`` may be a local Hugging Face model folder (loaded into TransformerLens, with its
tokenizer) and ``--dataset_path`` a local dataset (a ``save_to_disk`` folder, e.g. from SAELens's pretokenizer,
or a parquet / json / text folder); see :mod:`sae_lens_ortho.local_sources`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sae_lens_ortho.cli_help import PROG, error
from sae_lens_ortho.runner_config import DEFAULT_ARCHITECTURE

__all__ = [
    "DEFAULT_ARCHITECTURE",
    "TrainConfigError",
    "build_train_parser",
    "parse_train_args",
    "validate_train_config",
]


class TrainConfigError(ValueError):
    """A training configuration that parses but cannot produce a trained SAE."""


def _check_architecture_args(args: Sequence[str]) -> None:
    """``--architecture`` written in full and naming a registered training architecture, said on one line before
    anything is parsed (argparse would print its usage, with every choice, first)."""
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    from sae_lens_ortho.cli_help import did_you_mean

    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if 4 <= len(flag) < len("--architecture") and "--architecture".startswith(flag):
            # simple_parsing picks the architecture before argparse expands abbreviations: SAELens's own CLI would
            # silently train its default architecture with the rest of the flags.
            raise TrainConfigError(f"write --architecture in full (got {flag}): abbreviations of it are not honoured")
        if flag in ("--architecture", "--sae"):
            name = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            known = list(SAE_TRAINING_CLASS_REGISTRY)
            if name not in known:
                raise TrainConfigError(
                    f"--architecture {name!r} is not a registered training architecture"
                    f"{did_you_mean(name, known)}; the ortho ones are {', '.join(_ortho_architectures())} "
                    "(--plugin MODULE registers more)"
                )


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


def _ortho_architectures() -> list[str]:
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    from sae_lens_ortho.saes.config import OrthoConfig

    return [name for name, (_, cfg_cls) in SAE_TRAINING_CLASS_REGISTRY.items() if issubclass(cfg_cls, OrthoConfig)]


def build_train_parser() -> Any:
    """SAELens's training parser (``_parse_cfg_args``), built from the training registry as it is now, with
    ``--architecture`` defaulting to :data:`DEFAULT_ARCHITECTURE` and the ortho fields' docstrings as their help."""
    from functools import partial

    from sae_lens import LanguageModelSAERunnerConfig
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY
    from sae_lens.saes.sae import TrainingSAEConfig
    from simple_parsing import ArgumentParser, subgroups

    import sae_lens_ortho  # noqa: F401  (registers the *_ortho training architectures)
    from sae_lens_ortho.cli_help import USAGE, regroup_help, summary, usage_error
    from sae_lens_ortho.plugins import PLUGIN_HELP
    from sae_lens_ortho.saes.mechanisms import field_architectures

    ortho_fields = field_architectures()

    class TrainParser(ArgumentParser):
        def _resolve_subgroups(self, wrappers: Any, args: Any, namespace: Any = None) -> Any:
            resolved, chosen = super()._resolve_subgroups(wrappers, args, namespace)
            for root in resolved:
                for wrapper in [root, *root.descendants]:
                    for field in wrapper.fields:
                        doc = field._docstring
                        if field.name in ortho_fields:  # the attribute docstring in saes/config.py
                            below = doc.docstring_below.replace("%", "%%")  # argparse %-formats help strings
                            doc = dataclasses.replace(doc, comment_above="", comment_inline="", docstring_below=below)
                        else:  # as SAELens's CLI: class-docstring Args entries only, never source comments
                            doc = dataclasses.replace(doc, comment_above="", comment_inline="", docstring_below="")
                        field._docstring = doc
            return resolved, chosen

        def format_help(self) -> str:
            regroup_help(self)  # the ortho flags by mechanism, SAELens's config groups with short titles
            return super().format_help()

        def error(self, message: str) -> Any:  # argparse: usage (every flag) then the message; here one line
            raise TrainConfigError(usage_error(message, self._option_string_actions, ortho_fields))

    choices: dict[str, TrainingSAEConfig | type[TrainingSAEConfig] | partial[TrainingSAEConfig]] = {
        name: partial(cfg_cls, d_in=512, d_sae=1024) for name, (_, cfg_cls) in SAE_TRAINING_CLASS_REGISTRY.items()
    }
    if DEFAULT_ARCHITECTURE not in choices:  # pragma: no cover - the import above registers it
        raise RuntimeError(f"{DEFAULT_ARCHITECTURE} is not registered")
    config_class = dataclasses.make_dataclass(
        "CommandLineRunnerConfig",
        [("sae", TrainingSAEConfig, subgroups(choices, default=DEFAULT_ARCHITECTURE, alias="--architecture"))],
        bases=(LanguageModelSAERunnerConfig,),
    )
    parser = TrainParser(
        prog=f"{PROG} train",
        usage=USAGE,
        exit_on_error=False,
        description=summary(", ".join(_ortho_architectures()), DEFAULT_ARCHITECTURE),
    )
    parser.add_argument("--plugin", metavar="MODULE", action="append", default=[], help=PLUGIN_HELP)
    parser.add_arguments(config_class, dest="cfg")
    return parser


def parse_train_args(args: Sequence[str]) -> Any:
    """Parse ``sae-lens-ortho train`` arguments into a validated ``LanguageModelSAERunnerConfig``.

    Raises ``ValueError`` (a config field out of range, :class:`TrainConfigError`) or ``argparse.ArgumentError``
    (a bad flag value); ``--help`` exits. ``--plugin`` modules are imported first, before the parser reads the
    architecture registry.
    """
    from sae_lens_ortho.plugins import import_plugins, pop_plugin_args

    plugins, args = pop_plugin_args(args)
    import_plugins(plugins)
    _check_architecture_args(args)
    cfg = build_train_parser().parse_args(list(args) or ["--help"]).cfg
    validate_train_config(cfg)
    return cfg


def _use_local_paths(cfg: Any) -> None:
    """Check the model and the dataset before anything loads, and record local model and dataset folders as absolute
    paths (the saved SAE's metadata then names a folder that ``sae-lens-ortho eval`` finds from anywhere)."""
    from sae_lens_ortho.dataset_checks import check_dataset_source
    from sae_lens_ortho.local_sources import check_model_source, is_local_model

    if cfg.model_class_name == "HookedTransformer":
        check_model_source(cfg.model_name, context="--model_name")
    if not cfg.use_cached_activations:
        check_dataset_source(
            cfg.dataset_path,
            context_size=cfg.context_size,
            use_chat_formatting=cfg.use_chat_formatting,
            trust_remote_code=cfg.dataset_trust_remote_code,
        )
    if is_local_model(cfg.model_name):
        cfg.model_name = str(Path(cfg.model_name).expanduser().resolve())
    if cfg.dataset_path and Path(cfg.dataset_path).expanduser().exists():
        cfg.dataset_path = str(Path(cfg.dataset_path).expanduser().resolve())


def _train(argv: list[str]) -> int:
    try:
        cfg = parse_train_args(argv)
        _use_local_paths(cfg)
    except (ValueError, argparse.ArgumentError) as e:
        return error("train", str(e))
    from sae_lens_ortho.local_sources import local_sources
    from sae_lens_ortho.training import TrainingInterrupted, train

    try:  # SAELens's runner, seeded with --seed, with crash-safe checkpoints and the guards (training.py)
        with local_sources():
            train(cfg)
    except TrainingInterrupted as e:
        root = Path(cfg.checkpoint_path).parent if cfg.checkpoint_path else None
        error("train", f"{e}" + (f"; resume with --resume_from_checkpoint {root}" if root and e.checkpoint else ""))
        return 128 + e.signum
    except (ValueError, RuntimeError, MemoryError) as e:  # bad resume path, non-finite step, memory estimate
        return error("train", str(e))
    if cfg.output_path is not None:
        print(
            f"{PROG} train: final SAE saved to {cfg.output_path}\n"
            f"  publish it with: {PROG} publish {cfg.output_path} <hf_user>/<repo>"
        )
    return 0


if __name__ == "__main__":
    # `python -m sae_lens_ortho.cli` runs the console script: run here, never imported by the library.
    import runpy

    runpy.run_module("sae_lens_ortho_cli", run_name="__main__")
