"""Run SAEBench (0.6) on trained SAEs and compare them.

``run_saebench(saes, suites, out_dir=..., device=...)`` evaluates SAEs with SAEBench's *own* eval code and writes:

* ``out_dir/eval_results/<eval_type_id>/<name>_custom_sae_eval_results.json`` (Hub SAEs:
  ``<release>_<sae_id>_eval_results.json``): SAEBench's output JSONs, checked with SAEBench's validator;
* SAEBench's artifacts (cached LLM activations, probes, absorption experiments, sae-probes results) under
  ``artifacts_dir`` (default ``out_dir/artifacts``), never under site-packages or the working directory;
* ``out_dir/saebench_table.md`` / ``.csv`` / ``saebench_summary.json``: headline metrics per SAE (the CSV has every
  scalar metric), and ``out_dir/plots/*.png`` (each headline metric against L0) when matplotlib is installed.

An SAE is a local folder or a Hub id:

* a run's ``final/`` folder (SAELens inference SAE; a ``topk_ortho`` run saves plain ``topk``), or a run folder
  that contains ``final/``;
* a checkpoint folder (training SAE, e.g. architecture ``topk_ortho``: loaded through the plugin, with the
  checkpoint's activation scaler folded in and the decoder norms folded, exactly as the final SAE is saved);
* ``release/sae_id`` of SAELens's pretrained directory (handed to SAEBench, which downloads it);
* ``(name, folder | id | SAE object)`` to choose the name used in file names and the table.

Suites: ``core``, ``scr``, ``tpp``, ``absorption``, ``sparse_probing``, ``sae_probes`` (alias
``sparse_probing_sae_probes``), ``autointerp`` (needs an OpenAI key), ``unlearning`` and ``ravel`` (passed through
for the models SAEBench supports: Gemma instruct models for unlearning, SAEBench's RAVEL model map for ravel), and
``diagnostics``: this package's own exact disentanglement diagnostics (:mod:`sae_lens_ortho.disentanglement`) on
SAE activations collected from core's model, hook and dataset, written to
``out_dir/eval_results/diagnostics/<name>.json`` and added to the table as ``diagnostics/...`` columns.

SAEBench is an optional dependency (see ``docs/saebench.md`` for the install recipe): this module imports it
only when an evaluation runs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DIAGNOSTICS_DEFAULTS",
    "DIAGNOSTICS_SUITE",
    "EVAL_TYPE_IDS",
    "HEADLINE_METRICS",
    "REPORT_ONLY_SUITES",
    "SUITES",
    "SaebenchError",
    "SaebenchResult",
    "SaeSpec",
    "build_arg_parser",
    "cli_main",
    "collect_results",
    "load_sae",
    "normalize_suites",
    "resolve_sae",
    "run_saebench",
    "validate_result_file",
    "write_report",
]

log = logging.getLogger(__name__)

SUITES = (
    "core", "scr", "tpp", "absorption", "sparse_probing", "sae_probes", "autointerp", "unlearning", "ravel",
    "diagnostics",
)
"""Suites in the order they run."""

SUITE_ALIASES = {
    "sparse_probing_sae_probes": "sae_probes",
    "absorption_first_letter": "absorption",
    "scr_and_tpp": ("scr", "tpp"),
    "all_offline": ("core", "scr", "tpp", "absorption", "sparse_probing", "sae_probes"),
}

EVAL_TYPE_IDS = {
    "core": "core",
    "scr": "scr",
    "tpp": "tpp",
    "absorption": "absorption_first_letter",
    "sparse_probing": "sparse_probing",
    "sae_probes": "sparse_probing_sae_probes",
    "autointerp": "autointerp",
    "unlearning": "unlearning",
    "ravel": "ravel",
    "diagnostics": "diagnostics",  # ours, not SAEBench's (see the diagnostics section below)
}
"""Suite -> SAEBench's ``eval_type_id``, which is also the folder name under ``out_dir/eval_results``."""

HEADLINE_METRICS: dict[str, list[tuple[str, str, str]]] = {
    # suite: [(metric category, metric name, direction)], direction "+" higher is better, "-" lower is better
    "core": [
        ("sparsity", "l0", ""),
        ("model_performance_preservation", "ce_loss_score", "+"),
        ("reconstruction_quality", "explained_variance", "+"),
        ("reconstruction_quality", "cossim", "+"),
        ("model_behavior_preservation", "kl_div_score", "+"),
        ("misc_metrics", "frac_alive", "+"),
    ],
    "absorption": [
        ("mean", "mean_absorption_fraction_score", "-"),
        ("mean", "mean_full_absorption_score", "-"),
    ],
    "sparse_probing": [
        ("sae", "sae_top_1_test_accuracy", "+"),
        ("sae", "sae_top_5_test_accuracy", "+"),
        ("llm", "llm_test_accuracy", "+"),
    ],
    "sae_probes": [
        ("sae", "sae_top_1_test_accuracy", "+"),
        ("sae", "sae_top_5_test_accuracy", "+"),
        ("llm", "llm_test_accuracy", "+"),
    ],
    "autointerp": [("autointerp", "autointerp_score", "+")],
    "unlearning": [("unlearning", "unlearning_score", "+")],
    "ravel": [("ravel", "disentanglement_score", "+")],
    "scr": [("scr_metrics", f"scr_metric_threshold_{n}", "+") for n in (2, 20)],
    "tpp": [("tpp_metrics", f"tpp_threshold_{n}_total_metric", "+") for n in (2, 20)],
    "diagnostics": [
        ("activations", "mean_pair_cosine", "-"),
        ("activations", "max_pair_cosine", "-"),
        ("decoder", "near_dup_frac_gt0.8", "-"),
        ("decoder", "near_dup_frac_gt0.9", "-"),
        ("firing", "dead_frac", "-"),
        ("firing", "rare_frac_lt0.0001", "-"),
    ],
}
"""Columns of the Markdown table and the plots. The CSV holds every scalar metric SAEBench reports."""

REPORT_ONLY_SUITES = ("scr", "tpp")
"""Reported in a separate table, not headlined: SCR and TPP were judged unreliable at SAEBench's canonical
settings (Chanin 2026, arXiv 2605.18229)."""

ABSORPTION_MIN_PARAMS = 1_000_000_000
ABSORPTION_MIN_LATENTS = 16_384

CORE_DEFAULTS: dict[str, Any] = {
    # SAEBench 0.6 core CLI defaults (sae_bench/evals/core/main.py), featurewise statistics on as its CLI does
    "n_eval_reconstruction_batches": 10,
    "n_eval_sparsity_variance_batches": 1,
    "eval_batch_size_prompts": 16,
    "compute_featurewise_density_statistics": True,
    "compute_featurewise_weight_based_metrics": True,
    "exclude_special_tokens_from_reconstruction": False,
    "dataset": "Skylion007/openwebtext",
    "context_size": 128,
    "verbose": False,
}

INSTALL_HINT = (
    "SAEBench is not installed. Install it without torchvision (see docs/saebench.md):\n"
    "  pip install -e '.[eval]' && pip install --no-deps sae-bench==0.6.0"
)


class SaebenchError(RuntimeError):
    """An evaluation produced no (valid) SAEBench result for some SAE and suite."""

    def __init__(self, message: str, failures: Mapping[tuple[str, str], str] | None = None):
        super().__init__(message)
        self.failures = dict(failures or {})


# --- SAE specs ----------------------------------------------------------------------------------------------------


@dataclass
class SaeSpec:
    """One SAE to evaluate, resolved from what the user passed."""

    name: str
    """Name in file names and tables (SAEBench's ``release`` for local SAEs)."""
    source: str
    kind: str
    """``final`` (inference SAE folder), ``checkpoint`` (training SAE folder), ``hub`` or ``object``."""
    sae: Any = None
    """The loaded inference SAE (local folders and objects); None for Hub SAEs."""
    release: str | None = None
    sae_id: str | None = None
    model_name: str | None = None
    hook_name: str | None = None
    d_sae: int | None = None
    cfg_l0: float | None = None
    """L0 recorded by the trainer in the SAE's metadata, if any (a fallback for plots when core did not run)."""

    @property
    def selected(self) -> tuple[str, Any]:
        """The ``(release, sae_id | SAE)`` pair SAEBench's ``run_eval`` takes."""
        if self.kind == "hub":
            return (self.release, self.sae_id)  # type: ignore[return-value]
        return (self.name, self.sae)

    @property
    def result_stem(self) -> str:
        """SAEBench's result file name for this SAE (``general_utils.get_results_filepath``)."""
        sae_id = self.sae_id if self.kind == "hub" else "custom_sae"
        release = self.release if self.kind == "hub" else self.name
        return f"{release}_{sae_id}_eval_results.json".replace("/", "_")

    @property
    def saebench_name(self) -> str:
        """SAEBench's per-SAE artifact name (``f"{release}_{sae_id}"``)."""
        if self.kind == "hub":
            return f"{self.release}_{self.sae_id}"
        return f"{self.name}_custom_sae"


def _meta(cfg: Any, key: str) -> Any:
    if hasattr(cfg, key) and getattr(cfg, key) is not None:
        return getattr(cfg, key)
    meta = getattr(cfg, "metadata", None)
    return getattr(meta, key, None) if meta is not None else None


def _is_checkpoint_folder(folder: Path, architecture: str) -> bool:
    from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY

    from .config import is_ortho_training_cfg

    if (folder / "trainer_state.pt").exists() or (folder / "activation_scaler.json").exists():
        return True
    if architecture not in SAE_CLASS_REGISTRY and architecture in SAE_TRAINING_CLASS_REGISTRY:
        return True
    # standard_ortho is both a training and an inference architecture: a training config has ortho_* fields.
    cfg_path = folder / "cfg.json"
    return cfg_path.is_file() and is_ortho_training_cfg(json.loads(cfg_path.read_text()))


def load_sae(folder: str | Path, device: str = "cpu") -> tuple[Any, str]:
    """Load a local SAE folder as a SAELens *inference* SAE. Returns ``(sae, kind)``, kind ``final`` or
    ``checkpoint``.

    A checkpoint (a training SAE such as ``topk_ortho``; recognised by ``trainer_state.pt`` /
    ``activation_scaler.json`` or by a training-only architecture) is loaded with
    ``TrainingSAE.load_from_disk`` (the plugin is imported so ``*_ortho`` names resolve), the checkpoint's
    activation-norm scaling factor / whitening is folded in (the trainer folds it only at the end of training),
    and it is converted exactly as the runner saves the final SAE (``save_inference_model``, which folds TopK
    decoder norms and drops the ortho training buffers).
    """
    from sae_lens import SAE
    from sae_lens.saes.sae import TrainingSAE

    import sae_lens_ortho  # noqa: F401  (registers the *_ortho training architectures)

    folder = Path(folder)
    cfg_path = folder / "cfg.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{folder} is not an SAE folder (no cfg.json)")
    architecture = json.loads(cfg_path.read_text()).get("architecture", "")
    if not _is_checkpoint_folder(folder, architecture):
        return SAE.load_from_disk(str(folder), device=device), "final"

    tsae = TrainingSAE.load_from_disk(str(folder), device=device)
    scaler_path = folder / "activation_scaler.json"
    if scaler_path.exists():
        from sae_lens.training.activation_scaler import ActivationScaler

        scaler = ActivationScaler()
        scaler.load(scaler_path)
        if scaler.scaling_factor is not None:
            tsae.fold_activation_norm_scaling_factor(scaler.scaling_factor)
        whitening = getattr(scaler, "whitening", None)
        if whitening is not None:
            tsae.fold_activation_whitening(
                mean=whitening.mean, whitening_matrix=whitening.matrix, unwhitening_matrix=whitening.inverse_matrix
            )
    return _to_inference(tsae, device), "checkpoint"


def _to_inference(tsae: Any, device: str) -> Any:
    """A training SAE as the inference SAE the runner saves (``save_inference_model`` + ``load_from_disk``)."""
    from sae_lens import SAE

    with tempfile.TemporaryDirectory(prefix="sae_lens_ortho_ckpt_") as tmp:
        tsae.save_inference_model(tmp)
        return SAE.load_from_disk(tmp, device=device)


def _default_name(folder: Path, kind: str) -> str:
    folder = folder.resolve()
    if folder.name == "final":
        return folder.parent.name
    if kind == "checkpoint":
        return f"{folder.parent.name}-{folder.name}"
    return folder.name


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "sae"


def resolve_sae(item: Any, device: str = "cpu") -> SaeSpec:
    """Turn one entry of ``saes`` into a :class:`SaeSpec` (loading local SAEs)."""
    name: str | None = None
    if isinstance(item, tuple):
        if len(item) != 2:
            raise ValueError(f"an SAE given as a tuple must be (name, folder | hub id | SAE), got {item!r}")
        name, item = item
    if not isinstance(item, (str, os.PathLike)):
        if not hasattr(item, "encode") or not hasattr(item, "cfg"):
            raise TypeError(f"not an SAE folder, Hub id or SAE object: {item!r}")
        if name is None:
            raise ValueError("an SAE object needs a name: pass (name, sae)")
        source = f"<{type(item).__name__}>"
        from sae_lens.saes.sae import TrainingSAE

        if isinstance(item, TrainingSAE):  # evaluate what the runner would save, not the training parametrisation
            item = _to_inference(item, device)
        return _spec_from_sae(item, name=_safe_name(name), source=source, kind="object")

    path = Path(item).expanduser()
    if path.is_dir():
        if not (path / "cfg.json").exists() and (path / "final" / "cfg.json").exists():
            path = path / "final"
        sae, kind = load_sae(path, device=device)
        return _spec_from_sae(sae, name=_safe_name(name or _default_name(path, kind)), source=str(path), kind=kind)

    text = str(item)
    if "/" not in text or os.path.exists(text) or text.startswith(("/", ".", "~")) or os.sep in text.split("/")[0]:
        raise FileNotFoundError(f"{text!r} is neither an SAE folder nor a Hub id of the form release/sae_id")
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    release, sae_id = text.split("/", 1)
    directory = get_pretrained_saes_directory()
    if release not in directory:
        raise ValueError(f"{text!r}: no local folder, and {release!r} is not a SAELens pretrained release")
    lookup = directory[release]
    if sae_id not in lookup.saes_map:
        raise ValueError(f"{text!r}: release {release!r} has no SAE {sae_id!r}")
    return SaeSpec(
        name=_safe_name(name or text),
        source=text,
        kind="hub",
        release=release,
        sae_id=sae_id,
        model_name=lookup.model,
        cfg_l0=(lookup.expected_l0 or {}).get(sae_id),
    )


def _spec_from_sae(sae: Any, *, name: str, source: str, kind: str) -> SaeSpec:
    cfg = sae.cfg
    missing = [k for k in ("model_name", "hook_name") if _meta(cfg, k) is None]
    if missing:
        raise ValueError(f"SAE {name!r} ({source}) has no {' / '.join(missing)} in its config metadata")
    if _meta(cfg, "prepend_bos") is None:
        cfg.metadata.prepend_bos = True
    l0 = _meta(cfg, "l0")
    return SaeSpec(
        name=name,
        source=source,
        kind=kind,
        sae=sae,
        model_name=_meta(cfg, "model_name"),
        hook_name=_meta(cfg, "hook_name"),
        d_sae=int(cfg.d_sae),
        cfg_l0=float(l0) if isinstance(l0, (int, float)) else None,
    )


def normalize_suites(suites: str | Sequence[str]) -> list[str]:
    """Expand aliases (``sparse_probing_sae_probes``, ``scr_and_tpp``, ``all_offline``) and order as SUITES."""
    if isinstance(suites, str):
        suites = [s for s in re.split(r"[,\s]+", suites) if s]
    wanted: set[str] = set()
    for s in suites:
        s = s.strip().lower()
        alias = SUITE_ALIASES.get(s, s)
        for t in (alias,) if isinstance(alias, str) else alias:
            if t not in SUITES:
                raise ValueError(f"unknown SAEBench suite {s!r}; choose from {', '.join(SUITES)}")
            wanted.add(t)
    if not wanted:
        raise ValueError("no SAEBench suite selected")
    return [s for s in SUITES if s in wanted]


# --- running ------------------------------------------------------------------------------------------------------


@dataclass
class SaebenchResult:
    out_dir: Path
    artifacts_dir: Path
    saes: list[SaeSpec]
    suites: list[str]
    result_files: dict[str, dict[str, Path]] = field(default_factory=dict)
    """SAE name -> suite -> SAEBench JSON."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    table_md: Path | None = None
    table_csv: Path | None = None
    summary_json: Path | None = None
    plots: list[Path] = field(default_factory=list)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    """(SAE name, suite) -> why there is no result."""
    timings: dict[str, float] = field(default_factory=dict)


def _require_saebench() -> None:
    try:
        import sae_bench  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(INSTALL_HINT) from e


def _output_type(suite: str) -> type:
    if suite == "core":
        from sae_bench.evals.core.eval_output import CoreEvalOutput as T
    elif suite == "scr":
        from sae_bench.evals.scr_and_tpp.eval_output import ScrEvalOutput as T
    elif suite == "tpp":
        from sae_bench.evals.scr_and_tpp.eval_output import TppEvalOutput as T
    elif suite == "absorption":
        from sae_bench.evals.absorption.eval_output import AbsorptionEvalOutput as T
    elif suite == "sparse_probing":
        from sae_bench.evals.sparse_probing.eval_output import SparseProbingEvalOutput as T
    elif suite == "sae_probes":
        from sae_bench.evals.sparse_probing_sae_probes.eval_output import SparseProbingSaeProbesEvalOutput as T
    elif suite == "autointerp":
        from sae_bench.evals.autointerp.eval_output import AutoInterpEvalOutput as T
    elif suite == "unlearning":
        from sae_bench.evals.unlearning.eval_output import UnlearningEvalOutput as T
    elif suite == "ravel":
        from sae_bench.evals.ravel.eval_output import RAVELEvalOutput as T
    else:
        raise ValueError(suite)
    return T


def validate_result_file(path: str | Path, suite: str) -> None:
    """Check one JSON with SAEBench's own validator (``testing_utils.validate_eval_output_format_file``)."""
    from sae_bench.sae_bench_utils.testing_utils import validate_eval_output_format_file

    validate_eval_output_format_file(str(path), _output_type(normalize_suites([suite])[0]))


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    """``contextlib.chdir`` (Python 3.11+), for 3.10."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _patched(targets: Sequence[tuple[Any, str, Any]]) -> Iterator[None]:
    """Temporarily set module attributes; restore them afterwards."""
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in targets]
    try:
        for obj, attr, value in targets:
            setattr(obj, attr, value)
        yield
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


_MODEL_LOADER_MODULES = (
    "sae_bench.evals.core.main",
    "sae_bench.evals.scr_and_tpp.main",
    "sae_bench.evals.sparse_probing.main",
    "sae_bench.evals.absorption.main",
    "sae_bench.evals.autointerp.main",
    "sae_bench.evals.unlearning.main",
    "sae_probes.generate_model_activations",
)


@contextlib.contextmanager
def use_model(model: Any | None) -> Iterator[None]:
    """Make SAEBench's (and sae-probes's) ``HookedTransformer.from_pretrained_no_processing`` return ``model``.

    SAEBench's ``run_eval`` functions take a model *name* and load it themselves; this is how an in-memory
    ``HookedTransformer`` (a local or custom model) is evaluated. RAVEL loads a ``transformers`` model and is not
    covered.
    """
    if model is None:
        yield
        return
    import importlib

    from transformer_lens import HookedTransformer

    class _GivenModel(HookedTransformer):
        @classmethod
        def from_pretrained_no_processing(cls, model_name: str, *args: Any, **kwargs: Any):  # type: ignore[override]
            log.debug("SAEBench asked for model %r: using the model passed to run_saebench", model_name)
            return model

    targets = []
    for name in _MODEL_LOADER_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "HookedTransformer"):
            targets.append((module, "HookedTransformer", _GivenModel))
    with _patched(targets):
        yield


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _capture_logs(logger_name: str) -> Iterator[_LogCapture]:
    handler = _LogCapture()
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _eval_config(cls: type, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> Any:
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no option(s) {', '.join(unknown)}")
    kwargs = {k: v for k, v in defaults.items() if k in names}
    kwargs.update(options)
    return cls(**kwargs)


def _llm_defaults(model_name: str, llm_batch_size: int | None, llm_dtype: str | None) -> tuple[int, str]:
    from sae_bench.sae_bench_utils import activation_collection as ac

    batch = llm_batch_size or ac.LLM_NAME_TO_BATCH_SIZE.get(model_name, 32)
    dtype = llm_dtype or ac.LLM_NAME_TO_DTYPE.get(model_name, "float32")
    return int(batch), str(dtype)


def _model_params(model: Any | None, model_name: str) -> int | None:
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    m = re.search(r"(\d+(?:\.\d+)?)\s*([mb])\b", model_name.lower().replace("-", " "))
    if m:
        return int(float(m.group(1)) * (1e9 if m.group(2) == "b" else 1e6))
    return None


def _run_suite(
    suite: str,
    group: list[SaeSpec],
    *,
    model_name: str,
    model: Any | None,
    results_root: Path,
    artifacts_dir: Path,
    device: str,
    options: Mapping[str, Any],
    llm_batch_size: int | None,
    llm_dtype: str | None,
    random_seed: int,
    force_rerun: bool,
    api_key: str | None,
    clean_up_activations: bool,
) -> dict[str, str]:
    """Run one suite on one model group. Returns {sae name: failure reason} for SAEs without a valid JSON."""
    if suite == DIAGNOSTICS_SUITE:  # ours, not SAEBench's
        return _run_diagnostics(
            group, model_name=model_name, results_root=results_root, device=device, options=options,
            llm_dtype=llm_dtype, random_seed=random_seed, force_rerun=force_rerun,
        )
    out = results_root / EVAL_TYPE_IDS[suite]
    out.mkdir(parents=True, exist_ok=True)  # absorption's run_eval writes into it without creating it
    expected = {s.name: out / s.result_stem for s in group}
    before = {n: (p.stat().st_mtime_ns if p.exists() else None) for n, p in expected.items()}
    selected = [s.selected for s in group]
    batch, dtype = _llm_defaults(model_name, llm_batch_size, llm_dtype)
    options = dict(options)
    hints: dict[str, str] = {}  # why an SAE may have no result (used if it has none)
    hard: dict[str, str] = {}  # SAEs that were not evaluated at all
    _seed_everything(random_seed)

    if suite == "core":
        import sae_bench.evals.core.main as core

        unknown = sorted(set(options) - set(CORE_DEFAULTS))
        if unknown:
            raise ValueError(f"core has no option(s) {', '.join(unknown)} (options: {', '.join(CORE_DEFAULTS)})")
        kwargs = {**CORE_DEFAULTS, **options}
        with _capture_logs(core.__name__) as logs:
            core.multiple_evals(
                selected_saes=selected,
                output_folder=str(out),
                dtype=dtype,
                device=device,
                force_rerun=force_rerun,
                **kwargs,
            )
        for s in group:  # multiple_evals logs per-SAE errors and carries on: keep them for the report
            mine = [m for m in logs.messages if s.name in m] or logs.messages
            if mine:
                hints[s.name] = "SAEBench core logged: " + " | ".join(mine)

    elif suite in ("scr", "tpp"):
        import sae_bench.evals.scr_and_tpp.main as scr_tpp
        from sae_bench.evals.scr_and_tpp.eval_config import ScrAndTppEvalConfig

        config = _eval_config(
            ScrAndTppEvalConfig,
            options,
            {"model_name": model_name, "random_seed": random_seed, "llm_batch_size": batch, "llm_dtype": dtype,
             "perform_scr": suite == "scr"},
        )
        if config.perform_scr != (suite == "scr"):
            raise ValueError("perform_scr is set by the suite name (scr or tpp)")
        _fit_n_values(config, group)
        scr_tpp.run_eval(
            config, selected, device, str(results_root), force_rerun=force_rerun,
            clean_up_activations=clean_up_activations, save_activations=True, artifacts_path=str(artifacts_dir),
        )

    elif suite == "sparse_probing":
        import sae_bench.evals.sparse_probing.main as sparse_probing
        from sae_bench.evals.sparse_probing.eval_config import SparseProbingEvalConfig

        config = _eval_config(
            SparseProbingEvalConfig,
            options,
            {"model_name": model_name, "random_seed": random_seed, "llm_batch_size": batch, "llm_dtype": dtype},
        )
        sparse_probing.run_eval(
            config, selected, device, str(out), force_rerun=force_rerun,
            clean_up_activations=clean_up_activations, save_activations=True, artifacts_path=str(artifacts_dir),
        )

    elif suite == "sae_probes":
        import sae_bench.evals.sparse_probing_sae_probes.main as sae_probes_main
        from sae_bench.evals.sparse_probing_sae_probes.eval_config import SparseProbingSaeProbesEvalConfig

        root = artifacts_dir / EVAL_TYPE_IDS["sae_probes"]
        config = _eval_config(
            SparseProbingSaeProbesEvalConfig,
            options,
            {"model_name": model_name, "random_seed": random_seed, "results_path": str(root),
             "model_cache_path": str(artifacts_dir / f"{EVAL_TYPE_IDS['sae_probes']}--model_acts_cache")},
        )
        for s in group:  # sae-probes reuses per-SAE results by name: never reuse another SAE's
            if force_rerun or not expected[s.name].exists():
                shutil.rmtree(Path(config.results_path) / s.saebench_name, ignore_errors=True)
        sae_probes_main.run_eval(config, selected, device, str(out), force_rerun=force_rerun)

    elif suite == "absorption":
        hard, hints = _run_absorption(
            group, selected, expected, model=model, model_name=model_name, out=out, artifacts_dir=artifacts_dir,
            device=device, options=options, batch=batch, dtype=dtype, random_seed=random_seed,
            force_rerun=force_rerun,
        )

    elif suite == "autointerp":
        import sae_bench.evals.autointerp.main as autointerp
        from sae_bench.evals.autointerp.eval_config import AutoInterpEvalConfig

        if not api_key:
            raise ValueError("autointerp needs an OpenAI API key (api_key= or OPENAI_API_KEY)")
        config = _eval_config(
            AutoInterpEvalConfig,
            options,
            {"model_name": model_name, "random_seed": random_seed, "llm_batch_size": batch, "llm_dtype": dtype},
        )
        autointerp.run_eval(
            config, selected, device, api_key, str(out), force_rerun=force_rerun,
            artifacts_path=str(artifacts_dir),
        )

    elif suite == "unlearning":
        import sae_bench.evals.unlearning.main as unlearning
        from sae_bench.evals.unlearning.eval_config import UnlearningEvalConfig

        config = _eval_config(
            UnlearningEvalConfig,
            options,
            {"model_name": model_name, "llm_batch_size": batch, "llm_dtype": dtype},
        )
        unlearning.run_eval(
            config, selected, device, str(out), force_rerun=force_rerun, artifacts_path=str(artifacts_dir)
        )

    elif suite == "ravel":
        import sae_bench.evals.ravel.main as ravel
        from sae_bench.evals.ravel.eval_config import RAVELEvalConfig

        config = _eval_config(
            RAVELEvalConfig,
            options,
            {"model_name": model_name, "random_seed": random_seed, "llm_batch_size": batch, "llm_dtype": dtype},
        )
        ravel.run_eval(config, selected, device, str(out), force_rerun=force_rerun, artifacts_path=str(artifacts_dir))

    else:  # pragma: no cover
        raise ValueError(suite)

    failures: dict[str, str] = {}
    for s in group:
        path = expected[s.name]
        if s.name in hard:
            failures[s.name] = hard[s.name]
            continue
        if not path.exists():
            why = hints.get(s.name) or "SAEBench wrote no result file"
            failures[s.name] = f"{why} (expected {path})"
            continue
        if before[s.name] is not None and path.stat().st_mtime_ns == before[s.name] and not force_rerun:
            log.info("%s/%s: kept the existing result %s (force_rerun=False)", suite, s.name, path)
        try:
            validate_result_file(path, suite)
        except Exception as e:  # noqa: BLE001 - reported as a failure of this SAE
            failures[s.name] = f"{path} fails SAEBench's validator: {e}"
    return failures


def _fit_n_values(config: Any, group: list[SaeSpec]) -> None:
    """SCR/TPP assert every N (latents ablated) is <= d_sae: drop larger N for small SAEs."""
    sizes = [s.d_sae for s in group if s.d_sae is not None]
    if not sizes:
        return
    keep = [n for n in config.n_values if n <= min(sizes)]
    if keep != list(config.n_values):
        log.warning("SCR/TPP: dropping N > d_sae=%d from n_values %s", min(sizes), config.n_values)
        if not keep:
            raise ValueError(f"no SCR/TPP n_value fits d_sae={min(sizes)}")
        config.n_values = keep


def _run_absorption(
    group: list[SaeSpec],
    selected: list[tuple[str, Any]],
    expected: dict[str, Path],
    *,
    model: Any | None,
    model_name: str,
    out: Path,
    artifacts_dir: Path,
    device: str,
    options: Mapping[str, Any],
    batch: int,
    dtype: str,
    random_seed: int,
    force_rerun: bool,
) -> tuple[dict[str, str], dict[str, str]]:
    """Returns (SAEs not evaluated -> why, SAEs without a result -> likely why)."""
    import sae_bench.evals.absorption.main as absorption
    from sae_bench.evals.absorption.eval_config import AbsorptionEvalConfig
    from sae_bench.evals.absorption.feature_absorption import FEATURE_ABSORPTION_EXPERIMENT_NAME
    from sae_bench.evals.absorption.k_sparse_probing import SPARSE_PROBING_EXPERIMENT_NAME

    config = _eval_config(
        AbsorptionEvalConfig,
        options,
        {"model_name": model_name, "random_seed": random_seed, "llm_batch_size": batch, "llm_dtype": dtype},
    )
    hard: dict[str, str] = {}
    hints: dict[str, str] = {}
    runnable = []
    for spec, sel in zip(group, selected, strict=True):
        if spec.hook_name is not None and not spec.hook_name.endswith("hook_resid_post"):
            hard[spec.name] = f"absorption reads blocks.<layer>.hook_resid_post only; this SAE hooks {spec.hook_name}"
            continue
        runnable.append(sel)
    n_params = _model_params(model, model_name)
    small = [s.name for s in group if s.d_sae is not None and s.d_sae < ABSORPTION_MIN_LATENTS]
    if (n_params is not None and n_params < ABSORPTION_MIN_PARAMS) or small:
        warnings.warn(
            "absorption is only meaningful for LLMs >= 1B parameters and SAEs >= 16k latents "
            f"(model ~{n_params or '?'} parameters; SAEs below 16k latents: {', '.join(small) or 'none'})",
            stacklevel=3,
        )
    root = artifacts_dir / "absorption"
    experiments, probes = root / "experiments", root / "probes"
    for spec in group:  # intermediate results are cached by SAE name: never reuse another SAE's
        if force_rerun or not expected[spec.name].exists():
            for exp in (SPARSE_PROBING_EXPERIMENT_NAME, FEATURE_ABSORPTION_EXPERIMENT_NAME):
                shutil.rmtree(experiments / exp / spec.saebench_name, ignore_errors=True)
    if not runnable:
        return hard, hints
    root.mkdir(parents=True, exist_ok=True)
    k_sparse = functools.partial(
        absorption.run_k_sparse_probing_experiment,
        experiment_dir=experiments / SPARSE_PROBING_EXPERIMENT_NAME,
        probes_dir=probes,
    )
    feature_abs = functools.partial(
        absorption.run_feature_absortion_experiment,
        experiment_dir=experiments / FEATURE_ABSORPTION_EXPERIMENT_NAME,
        sparse_probing_experiment_dir=experiments / SPARSE_PROBING_EXPERIMENT_NAME,
        probes_dir=probes,
    )
    # SAEBench builds the absorption vocabulary from tokenizer.vocab, whose order comes from a Rust hash map and
    # changes from process to process, so its seeded train/test split and ICL examples did too: sort it.
    import sae_bench.evals.absorption.common as absorption_common
    import sae_bench.evals.absorption.feature_absorption as absorption_features
    from sae_bench.evals.absorption.vocab import get_alpha_tokens

    def sorted_alpha_tokens(*args: Any, **kwargs: Any) -> list[str]:
        return sorted(get_alpha_tokens(*args, **kwargs))

    # absorption writes its k-sparse-probing table to the relative folder artifacts/absorption: run it from root
    with _patched([(absorption, "run_k_sparse_probing_experiment", k_sparse),
                   (absorption, "run_feature_absortion_experiment", feature_abs),
                   (absorption_common, "get_alpha_tokens", sorted_alpha_tokens),
                   (absorption_features, "get_alpha_tokens", sorted_alpha_tokens)]), _chdir(root):
        absorption.run_eval(config, runnable, device, str(out), force_rerun=force_rerun)
    for spec in group:
        if spec.name in hard or expected[spec.name].exists():
            continue
        table = root / "artifacts" / "absorption" / f"{spec.saebench_name}_k_sparse_probing.json".replace("/", "_")
        why = "SAEBench wrote no result"
        if table.exists():
            rows = json.loads(table.read_text())
            good = sum(1 for r in rows if r.get("f1_probe", 0) > config.min_GT_probe_f1)
            if good < config.min_feats_for_eval:
                why = (
                    f"absorption stopped: only {good} of {len(rows)} first letters have an LLM probe with "
                    f"F1 > {config.min_GT_probe_f1} (needs min_feats_for_eval={config.min_feats_for_eval}); "
                    "the model does not represent first letters well enough"
                )
        hints[spec.name] = why
    return hard, hints


def run_saebench(
    saes: Sequence[Any],
    suites: str | Sequence[str] = ("core",),
    *,
    model: Any | None = None,
    out_dir: str | Path,
    artifacts_dir: str | Path | None = None,
    device: str | None = None,
    suite_options: Mapping[str, Mapping[str, Any]] | None = None,
    llm_batch_size: int | None = None,
    llm_dtype: str | None = None,
    random_seed: int = 42,
    force_rerun: bool = False,
    api_key: str | None = None,
    clean_up_activations: bool = False,
    plots: bool = True,
    strict: bool = True,
    progress: bool = True,
) -> SaebenchResult:
    """Evaluate ``saes`` on SAEBench ``suites``; write SAEBench's JSONs, a comparison table and plots.

    Args:
        saes: local folders (a run's ``final/``, a run folder containing ``final/``, a checkpoint folder),
            Hub ids ``release/sae_id``, or ``(name, folder | id | SAE object)`` pairs.
        suites: names from :data:`SUITES` (or aliases), as a list or a comma-separated string.
        model: an in-memory ``HookedTransformer`` to evaluate on instead of letting SAEBench load
            ``cfg.metadata.model_name`` from the Hub (all SAEs then share it).
        out_dir: where ``eval_results/``, the table and the plots go.
        artifacts_dir: SAEBench's caches and intermediate artifacts (default ``out_dir/artifacts``). LLM
            activations and probes are cached there per model name: use a fresh folder when the model changes.
        device: torch device (default ``cuda`` when available).
        suite_options: per-suite overrides: fields of the suite's SAEBench eval config (e.g.
            ``{"scr": {"dataset_names": [...]}}``), or for ``core`` the arguments of ``multiple_evals``
            (:data:`CORE_DEFAULTS`).
        llm_batch_size, llm_dtype: defaults for every suite (SAEBench's per-model table, else 32 / float32; with
            ``model`` the dtype defaults to the model's).
        random_seed: passed to every suite; Python/NumPy/torch are also seeded before each suite (absorption
            ignores its config seed).
        force_rerun: recompute results that already exist in ``out_dir``.
        api_key: OpenAI key for ``autointerp`` (default: ``OPENAI_API_KEY``).
        clean_up_activations: let SCR/TPP/sparse probing delete their cached activations afterwards.
        plots: write ``plots/*.png`` (needs matplotlib; skipped with a log message otherwise).
        strict: raise :class:`SaebenchError` at the end if any (SAE, suite) has no valid result.
        progress: show a progress bar over suites (SAEBench shows its own bars inside).
    """
    _require_saebench()
    import torch

    suite_list = normalize_suites(suites)
    suite_options = {normalize_suites([k])[0]: dict(v) for k, v in (suite_options or {}).items()}
    unused = sorted(set(suite_options) - set(suite_list))
    if unused:
        raise ValueError(f"suite_options given for suites that do not run: {', '.join(unused)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    api_key = api_key or os.environ.get("OPENAI_API_KEY")
    if "autointerp" in suite_list and not api_key:
        raise ValueError("autointerp needs an OpenAI API key: pass api_key= or set OPENAI_API_KEY")
    if model is not None and "ravel" in suite_list:
        raise ValueError("ravel loads a transformers model by name and cannot use an in-memory model")
    if model is not None and llm_dtype is None:
        llm_dtype = str(model.cfg.dtype).replace("torch.", "")

    out = Path(out_dir).expanduser().resolve()
    artifacts = Path(artifacts_dir).expanduser().resolve() if artifacts_dir is not None else out / "artifacts"
    results_root = out / "eval_results"
    results_root.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)

    if not saes:
        raise ValueError("no SAEs to evaluate")
    specs = [resolve_sae(item, device=device) for item in saes]
    seen: dict[str, int] = {}
    for s in specs:  # unique names: SAEBench's file names are derived from them
        if s.name in seen:
            seen[s.name] += 1
            s.name = f"{s.name}_{seen[s.name]}"
        else:
            seen[s.name] = 1
    groups: dict[str, list[SaeSpec]] = {}
    for s in specs:
        key = model.cfg.model_name if model is not None else (s.model_name or "")
        groups.setdefault(key, []).append(s)
    for model_name in groups:
        if "unlearning" in suite_list and "it" not in model_name:
            raise ValueError(f"unlearning needs an instruct-tuned model (SAEBench: Gemma-2 *-it); got {model_name!r}")
        if "ravel" in suite_list:
            from sae_bench.evals.ravel.main import LLM_NAME_MAP

            if model_name not in LLM_NAME_MAP:
                raise ValueError(f"ravel supports {', '.join(LLM_NAME_MAP)}; got {model_name!r}")

    result = SaebenchResult(out_dir=out, artifacts_dir=artifacts, saes=specs, suites=suite_list)
    grad_mode = torch.is_grad_enabled()
    steps = [(suite, name, group) for suite in suite_list for name, group in groups.items()]
    bar = _progress(steps, enabled=progress)
    try:
        with use_model(model):
            for suite, model_name, group in bar:
                if hasattr(bar, "set_description"):
                    bar.set_description(f"SAEBench {suite}")
                log.info("SAEBench %s on %d SAE(s) of %s", suite, len(group), model_name)
                t0 = time.perf_counter()
                try:
                    failed = _run_suite(
                        suite, group, model_name=model_name, model=model, results_root=results_root,
                        artifacts_dir=artifacts, device=device, options=suite_options.get(suite, {}),
                        llm_batch_size=llm_batch_size, llm_dtype=llm_dtype, random_seed=random_seed,
                        force_rerun=force_rerun, api_key=api_key, clean_up_activations=clean_up_activations,
                    )
                except Exception as e:  # noqa: BLE001 - one suite's crash must not lose the others' results
                    log.exception("SAEBench %s failed", suite)
                    failed = {s.name: f"{type(e).__name__}: {e}" for s in group}
                result.timings[suite] = result.timings.get(suite, 0.0) + time.perf_counter() - t0
                for name, why in failed.items():
                    result.failures[(name, suite)] = why
                    log.error("SAEBench %s: no result for %s: %s", suite, name, why)
    finally:
        torch.set_grad_enabled(grad_mode)  # SAEBench's evals toggle the global grad mode

    collect_results(result)
    write_report(result, plots=plots)
    if strict and result.failures:
        lines = "\n".join(f"  {suite} / {name}: {why}" for (name, suite), why in sorted(result.failures.items()))
        raise SaebenchError(f"SAEBench produced no valid result for:\n{lines}", result.failures)
    return result


def _progress(items: list[Any], enabled: bool) -> Any:
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return items
    return tqdm(items, desc="SAEBench", unit="suite", leave=True)


# --- disentanglement diagnostics (ours, not SAEBench's) -------------------------------------------------------------

DIAGNOSTICS_SUITE = "diagnostics"

DIAGNOSTICS_DEFAULTS: dict[str, Any] = {
    "n_tokens": 16_384,
    "batch_size_prompts": CORE_DEFAULTS["eval_batch_size_prompts"],
    "context_size": CORE_DEFAULTS["context_size"],
    "dataset": CORE_DEFAULTS["dataset"],
    "exclude_special_tokens": True,
    "top_pairs": 20,
    "p": 0.001,
    "decoder_chunk_size": None,
}
"""Options of the ``diagnostics`` suite (``suite_options={"diagnostics": {...}}``). The SAE's activations are
collected the way SAEBench's core collects them for its sparsity metrics: core's model loader, SAELens's
``ActivationsStore`` on core's dataset and context size, the hook's activations through ``sae.encode``, and BOS /
EOS / pad tokens left out (core's feature density does the same). ``n_tokens`` is the eval set size; rare-firing
fractions need ~1/threshold tokens to mean anything (see :mod:`sae_lens_ortho.disentanglement`)."""


def _result_path(results_root: Path, suite: str, spec: SaeSpec) -> Path:
    """Where a suite's JSON for ``spec`` lives: SAEBench's file name, or ``diagnostics/<name>.json`` for ours."""
    if suite == DIAGNOSTICS_SUITE:
        return results_root / EVAL_TYPE_IDS[suite] / f"{spec.name}.json"
    return results_root / EVAL_TYPE_IDS[suite] / spec.result_stem


def _run_diagnostics(
    group: list[SaeSpec],
    *,
    model_name: str,
    results_root: Path,
    device: str,
    options: Mapping[str, Any],
    llm_dtype: str | None,
    random_seed: int,
    force_rerun: bool,
) -> dict[str, str]:
    """The ``diagnostics`` suite on one model group: one JSON per SAE. Returns {sae name: failure reason}."""
    from .disentanglement import disentanglement_diagnostics

    unknown = sorted(set(options) - set(DIAGNOSTICS_DEFAULTS))
    if unknown:
        raise ValueError(f"diagnostics has no option(s) {', '.join(unknown)} "
                         f"(options: {', '.join(DIAGNOSTICS_DEFAULTS)})")
    opts = {**DIAGNOSTICS_DEFAULTS, **options}
    (results_root / EVAL_TYPE_IDS[DIAGNOSTICS_SUITE]).mkdir(parents=True, exist_ok=True)
    failures: dict[str, str] = {}
    model = None
    for spec in group:
        path = _result_path(results_root, DIAGNOSTICS_SUITE, spec)
        if path.exists() and not force_rerun:
            log.info("diagnostics/%s: kept the existing result %s (force_rerun=False)", spec.name, path)
            continue
        try:
            sae = spec.sae if spec.sae is not None else _load_hub_sae(spec, device)
            if model is None:
                model = _load_model_like_core(model_name or _meta(sae.cfg, "model_name"), sae, device, llm_dtype)
            _seed_everything(random_seed)
            t0 = time.perf_counter()
            batches = _sae_activation_batches(model, sae, opts, random_seed)
            report = disentanglement_diagnostics(
                batches, sae.W_dec, top_pairs=opts["top_pairs"], p=opts["p"], chunk_size=opts["decoder_chunk_size"]
            )
            hook = _meta(sae.cfg, "hook_name")
            payload = {
                "eval_type_id": DIAGNOSTICS_SUITE,
                "eval_config": {**opts, "model_name": model_name, "hook_name": hook, "random_seed": random_seed},
                "sae_name": spec.name,
                "source": spec.source,
                "sae_cfg_dict": {"d_sae": int(sae.cfg.d_sae), "hook_name": hook},
                "eval_result_metrics": report.metrics_by_category(),
                "top_pairs": report.to_dict()["top_pairs"],
                "eval_time_s": time.perf_counter() - t0,
                "datetime_epoch_millis": int(time.time() * 1000),
            }
            path.write_text(json.dumps(payload, indent=2))
        except Exception as e:  # noqa: BLE001 - reported as a failure of this SAE
            log.exception("diagnostics failed for %s", spec.name)
            failures[spec.name] = f"{type(e).__name__}: {e}"
    return failures


def _load_hub_sae(spec: SaeSpec, device: str) -> Any:
    from sae_lens import SAE

    sae = SAE.from_pretrained(spec.release, spec.sae_id, device=device)
    return sae[0] if isinstance(sae, tuple) else sae


def _load_model_like_core(model_name: str, sae: Any, device: str, llm_dtype: str | None) -> Any:
    """The model as SAEBench's core loads it (its module's ``HookedTransformer``, which :func:`use_model` and the
    offline tests patch)."""
    import sae_bench.evals.core.main as core
    from sae_bench.sae_bench_utils import general_utils

    _, dtype = _llm_defaults(model_name, None, llm_dtype)
    kwargs = _meta(sae.cfg, "model_from_pretrained_kwargs") or {}
    return core.HookedTransformer.from_pretrained_no_processing(
        model_name, device=device, dtype=general_utils.str_to_dtype(dtype), **kwargs
    )


def _sae_activation_batches(model: Any, sae: Any, opts: Mapping[str, Any], seed: int) -> Iterator[Any]:
    """Sparse (values, indices) batches of ``sae.encode`` on ``opts["n_tokens"]`` tokens (see DIAGNOSTICS_DEFAULTS)."""
    import torch
    from sae_lens.training.activations_store import ActivationsStore

    from .disentanglement import sparse_rows

    hook = _meta(sae.cfg, "hook_name")
    head_index = _meta(sae.cfg, "hook_head_index")
    store = ActivationsStore.from_sae(
        model, sae, context_size=opts["context_size"], dataset=opts["dataset"], dataset_trust_remote_code=True,
        device=str(sae.W_enc.device),
    )
    store.shuffle_input_dataset(seed=seed)
    tok = model.tokenizer
    special = sorted({t for t in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) if t is not None})
    layer = re.match(r"blocks\.(\d+)\.", hook)
    remaining, empty = int(opts["n_tokens"]), 0
    with torch.no_grad():
        while remaining > 0:
            tokens = store.get_batch_tokens(opts["batch_size_prompts"])
            _, cache = model.run_with_cache(
                tokens, prepend_bos=False, names_filter=[hook], stop_at_layer=int(layer.group(1)) + 1 if layer else None
            )
            act = cache[hook]
            if head_index is not None:
                act = act[:, :, head_index]
            elif any(h in hook for h in ("hook_q", "hook_k", "hook_v", "hook_z")):
                act = act.flatten(-2, -1)
            feats = sae.encode(act.to(device=sae.W_enc.device, dtype=sae.W_enc.dtype))
            feats = feats.reshape(-1, feats.shape[-1])
            if opts["exclude_special_tokens"] and special:
                keep = ~torch.isin(tokens.reshape(-1), torch.tensor(special, device=tokens.device))
                feats = feats[keep.to(feats.device)]
            feats = feats[:remaining]
            remaining -= feats.shape[0]
            empty = empty + 1 if feats.shape[0] == 0 else 0
            if empty > 100:
                raise RuntimeError("diagnostics: 100 batches in a row had only special tokens")
            del cache
            yield sparse_rows(feats)


# --- results, table, plots ---------------------------------------------------------------------------------------


def _flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for category, values in metrics.items():
        if not isinstance(values, Mapping):
            continue
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            flat[f"{category}.{key}"] = float(value)
    return flat


def collect_results(result: SaebenchResult) -> list[dict[str, Any]]:
    """Read the SAEBench JSONs of ``result`` back into one row per SAE (``suite/category.metric`` columns)."""
    rows = []
    for spec in result.saes:
        row: dict[str, Any] = {
            "sae": spec.name,
            "source": spec.source,
            "kind": spec.kind,
            "model": spec.model_name,
            "hook": spec.hook_name,
            "d_sae": spec.d_sae,
        }
        files: dict[str, Path] = {}
        for suite in result.suites:
            path = _result_path(result.out_dir / "eval_results", suite, spec)
            if not path.exists() or (spec.name, suite) in result.failures:
                continue
            files[suite] = path
            data = json.loads(path.read_text())
            for key, value in _flatten_metrics(data.get("eval_result_metrics") or {}).items():
                row[f"{suite}/{key}"] = value
            if spec.d_sae is None and isinstance(data.get("sae_cfg_dict"), dict):
                row["d_sae"] = data["sae_cfg_dict"].get("d_sae")
                row["hook"] = row["hook"] or _cfg_hook(data["sae_cfg_dict"])
        row["l0"] = row.get("core/sparsity.l0", spec.cfg_l0)
        result.result_files[spec.name] = files
        rows.append(row)
    result.rows = rows
    return rows


def _cfg_hook(cfg: Mapping[str, Any]) -> str | None:
    return cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _headline_columns(suites: Sequence[str], report_only: bool) -> list[tuple[str, str]]:
    cols = []
    for suite in suites:
        if (suite in REPORT_ONLY_SUITES) != report_only:
            continue
        for category, metric, direction in HEADLINE_METRICS.get(suite, []):
            arrow = {"+": " ↑", "-": " ↓"}.get(direction, "")
            cols.append((f"{suite}/{category}.{metric}", f"{suite} {metric}{arrow}"))
    return cols


def _markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> list[str]:
    present = [(k, title) for k, title in columns if any(r.get(k) is not None for r in rows)]
    header = ["SAE", "L0"] + [title for _, title in present if not title.startswith("core l0")]
    keys = ["sae", "l0"] + [k for k, title in present if not title.startswith("core l0")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
    return lines


def write_report(result: SaebenchResult, plots: bool = True) -> None:
    """Write the Markdown and CSV tables, the summary JSON and (if matplotlib is installed) the plots."""
    out = result.out_dir
    rows = result.rows or collect_results(result)
    lines = [
        "# SAEBench results",
        "",
        f"Suites: {', '.join(result.suites)}. SAEBench JSONs: `{out / 'eval_results'}`; "
        f"artifacts: `{result.artifacts_dir}`. ↑ higher is better, ↓ lower is better.",
        "",
        "## Headline metrics",
        "",
    ]
    headline = _headline_columns(result.suites, report_only=False)
    if any(r.get(k) is not None for r in rows for k, _ in headline):
        lines += _markdown_table(rows, headline)
    else:
        lines += ["_No headline metric in this run._"]
    if any(s in REPORT_ONLY_SUITES for s in result.suites):
        lines += [
            "",
            "## Reported, not headlined: SCR / TPP",
            "",
            "SCR and TPP were judged unreliable at SAEBench's canonical settings (Chanin 2026, arXiv 2605.18229); "
            "they are listed for completeness and should not rank SAEs.",
            "",
            *_markdown_table(rows, _headline_columns(result.suites, report_only=True)),
        ]
    if "absorption" in result.suites:
        lines += [
            "",
            "Absorption is only meaningful for LLMs with at least 1B parameters and SAEs with at least 16k latents.",
        ]
    if result.failures:
        lines += ["", "## Missing results", ""]
        lines += [f"- {suite} / {name}: {why}" for (name, suite), why in sorted(result.failures.items())]
    result.table_md = out / "saebench_table.md"
    result.table_md.write_text("\n".join(lines) + "\n")

    fixed = ["sae", "source", "kind", "model", "hook", "d_sae", "l0"]
    metric_keys = sorted({k for r in rows for k in r if k not in fixed})
    result.table_csv = out / "saebench_table.csv"
    with result.table_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fixed + metric_keys, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k in fixed + metric_keys})

    result.summary_json = out / "saebench_summary.json"
    result.summary_json.write_text(
        json.dumps(
            {
                "suites": result.suites,
                "rows": rows,
                "result_files": {n: {s: str(p) for s, p in f.items()} for n, f in result.result_files.items()},
                "failures": [{"sae": n, "suite": s, "reason": w} for (n, s), w in sorted(result.failures.items())],
                "timings_s": result.timings,
            },
            indent=2,
            default=str,
        )
    )
    if plots:
        result.plots = _plot_against_l0(result, rows)


def _plot_against_l0(result: SaebenchResult, rows: list[dict[str, Any]]) -> list[Path]:
    try:  # the object-oriented API: no pyplot, no global backend switch
        from matplotlib.figure import Figure
    except ImportError:
        log.info("matplotlib is not installed: no SAEBench plots")
        return []
    folder = result.out_dir / "plots"
    written: list[Path] = []
    columns = _headline_columns(result.suites, False) + _headline_columns(result.suites, True)
    for key, title in columns:
        if key.endswith("sparsity.l0"):
            continue
        points = [(r["l0"], r[key], r["sae"]) for r in rows if r.get("l0") is not None and r.get(key) is not None]
        if not points:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        fig = Figure(figsize=(5, 3.6))
        ax = fig.subplots()
        # one point per SAE: SAEs are not a sweep, so no connecting line
        ax.scatter([p[0] for p in points], [p[1] for p in points], zorder=3)
        for x, y, n in points:
            ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        xs = [p[0] for p in points]
        if min(xs) > 0 and max(xs) / min(xs) > 10:
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("L0")
        ax.set_ylabel(title)
        ax.set_title(title + (" (report only)" if key.split("/")[0] in REPORT_ONLY_SUITES else ""), fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = folder / (re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_") + ".png")
        fig.savefig(path, dpi=110)
        written.append(path)
    return written


# --- command line -------------------------------------------------------------------------------------------------


def build_arg_parser(prog: str = "sae-lens-ortho eval") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run SAEBench suites on SAEs (run final/ folders, checkpoints or Hub release/sae_id) and "
        "write SAEBench's JSONs, a comparison table (Markdown + CSV) and plots against L0.",
    )
    p.add_argument("saes", nargs="+", help="SAE folders (final/, run folder, checkpoint) or Hub ids release/sae_id; "
                   "NAME=PATH sets the name used in tables and file names")
    p.add_argument("--suites", default="core", help=f"comma-separated, from: {', '.join(SUITES)} "
                   "(aliases: sparse_probing_sae_probes, scr_and_tpp, all_offline); default core")
    p.add_argument("--out", required=True, help="output folder (eval_results/, tables, plots)")
    p.add_argument("--artifacts", default=None, help="folder for SAEBench's artifacts and caches "
                   "(default OUT/artifacts)")
    p.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    p.add_argument("--llm-batch-size", type=int, default=None)
    p.add_argument("--llm-dtype", default=None, choices=["float32", "float16", "bfloat16", "float64"])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--option", action="append", default=[], metavar="SUITE.KEY=JSON",
                   help="override a suite's SAEBench config field (or a core multiple_evals argument); the value "
                   "is JSON, else a string. E.g. --option core.n_eval_reconstruction_batches=200 "
                   "--option 'scr.dataset_names=[\"LabHC/bias_in_bios_class_set1\"]'")
    p.add_argument("--force-rerun", action="store_true", help="recompute results that already exist")
    p.add_argument("--openai-api-key-file", default=None,
                   help="file holding the OpenAI key for autointerp (default: OPENAI_API_KEY)")
    p.add_argument("--clean-up-activations", action="store_true",
                   help="delete SCR/TPP/sparse-probing activation caches afterwards")
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


def _parse_sae_arg(arg: str) -> Any:
    name, sep, rest = arg.partition("=")
    if sep and name and not os.path.exists(arg) and "/" not in name:
        return (name, rest)
    return arg


def cli_main(argv: Sequence[str] | None = None, prog: str = "sae-lens-ortho eval") -> int:
    """``sae-lens-ortho eval`` / ``evals/run_saebench.py``: parse ``argv`` and call :func:`run_saebench`."""
    parser = build_arg_parser(prog)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = _parse_options(args.option)
        api_key = Path(args.openai_api_key_file).read_text().strip() if args.openai_api_key_file else None
        result = run_saebench(
            [_parse_sae_arg(a) for a in args.saes],
            args.suites,
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
