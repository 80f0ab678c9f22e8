"""Command line of :func:`sae_lens_ortho.evals.saebench.run.run_saebench` (``sae-lens-ortho eval``, ``evals/run_saebench.py``).

The runner never imports this module, so the two import one way only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sae_lens_ortho.evals.saebench.specs import SUITES, SaebenchError, normalize_suites
from sae_lens_ortho.plugins import PLUGIN_HELP, import_plugins


def build_arg_parser(prog: str = "sae-lens-ortho eval") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run SAEBench suites on SAEs (run final/ folders, checkpoints or Hub release/sae_id) and "
        "write SAEBench's JSONs, a comparison table (Markdown + CSV) and plots against L0.",
    )
    p.add_argument(
        "saes",
        nargs="+",
        help="SAE folders (final/, run folder, checkpoint) or Hub ids release/sae_id; "
        "NAME=PATH sets the name used in tables and file names",
    )
    p.add_argument(
        "--suites",
        default="core",
        help=f"comma-separated, from: {', '.join(SUITES)} "
        "(aliases: sparse_probing_sae_probes, scr_and_tpp, all_offline); default core",
    )
    p.add_argument("--out", required=True, help="output folder (eval_results/, tables, plots)")
    p.add_argument(
        "--model",
        default=None,
        help="evaluate on this model instead of the one in the SAEs' metadata: a TransformerLens model name or a "
        "local Hugging Face model folder (its tokenizer is taken from the folder). Default: the SAEs' model_name "
        "(a local folder recorded by `sae-lens-ortho train` works as is)",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="the dataset of core (and diagnostics) instead of SAEBench's Skylion007/openwebtext: a Hub id or a "
        "local path (a save_to_disk folder, e.g. SAELens's pretokenizer output, or a parquet/json/text folder), "
        "with a text or a tokens column",
    )
    p.add_argument("--plugin", metavar="MODULE", action="append", default=[], help=PLUGIN_HELP)
    p.add_argument(
        "--artifacts", default=None, help="folder for SAEBench's artifacts and caches (default OUT/artifacts)"
    )
    p.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    p.add_argument("--llm-batch-size", type=int, default=None)
    p.add_argument("--llm-dtype", default=None, choices=["float32", "float16", "bfloat16", "float64"])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="SUITE.KEY=JSON",
        help="override a suite's SAEBench config field (or a core multiple_evals argument); the value "
        "is JSON, else a string. E.g. --option core.n_eval_reconstruction_batches=200 "
        "--option 'scr.dataset_names=[\"LabHC/bias_in_bios_class_set1\"]'",
    )
    p.add_argument("--force-rerun", action="store_true", help="recompute results that already exist")
    p.add_argument(
        "--openai-api-key-file",
        default=None,
        help="file holding the OpenAI key for autointerp (default: OPENAI_API_KEY)",
    )
    p.add_argument(
        "--clean-up-activations", action="store_true", help="delete SCR/TPP/sparse-probing activation caches afterwards"
    )
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-strict", action="store_true", help="exit 0 even if some SAE/suite has no result")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _parse_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        suite, dot, field_name = key.partition(".")
        if not sep or not dot or not field_name:
            raise ValueError(f"--option must look like SUITE.KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options.setdefault(normalize_suites([suite])[0], {})[field_name] = value
    return options


def _set_dataset(options: dict[str, dict[str, Any]], suites: Sequence[str], dataset: str) -> None:
    """``--dataset``: the ``dataset`` option of core and diagnostics (the suites that read a text corpus)."""
    targets = [s for s in ("core", "diagnostics") if s in suites]
    if not targets:
        raise ValueError("--dataset sets the corpus of core and diagnostics; neither is among --suites")
    for suite in targets:
        if "dataset" in options.get(suite, {}):
            raise ValueError(f"--dataset and --option {suite}.dataset=... both set {suite}'s dataset: give one")
        options.setdefault(suite, {})["dataset"] = dataset


def _parse_sae_arg(arg: str) -> Any:
    name, sep, rest = arg.partition("=")
    if sep and name and not os.path.exists(arg) and "/" not in name:
        return (name, rest)
    return arg


def cli_main(argv: Sequence[str] | None = None, prog: str = "sae-lens-ortho eval") -> int:
    """``sae-lens-ortho eval`` / ``evals/run_saebench.py``: parse ``argv`` and call :func:`run_saebench`."""
    from sae_lens_ortho.evals.saebench.run import run_saebench  # SAEBench is imported only when an evaluation runs

    parser = build_arg_parser(prog)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        import_plugins(args.plugin)
        options = _parse_options(args.option)
        if args.dataset is not None:
            _set_dataset(options, normalize_suites(args.suites), args.dataset)
        api_key = Path(args.openai_api_key_file).read_text().strip() if args.openai_api_key_file else None
        result = run_saebench(
            [_parse_sae_arg(a) for a in args.saes],
            args.suites,
            model=args.model,
            out_dir=args.out,
            artifacts_dir=args.artifacts,
            device=args.device,
            suite_options=options,
            llm_batch_size=args.llm_batch_size,
            llm_dtype=args.llm_dtype,
            random_seed=args.seed,
            force_rerun=args.force_rerun,
            api_key=api_key,
            clean_up_activations=args.clean_up_activations,
            plots=not args.no_plots,
            strict=not args.no_strict,
            progress=not args.quiet,
        )
    except SaebenchError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    plots = f" and {len(result.plots)} plots" if result.plots else ""
    print(f"wrote {result.table_md} and {result.table_csv}{plots}")
    return 0
