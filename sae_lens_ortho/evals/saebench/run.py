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
``diagnostics``: this package's own exact disentanglement diagnostics (:mod:`sae_lens_ortho.evals.disentanglement`) on
SAE activations collected from core's model, hook and dataset, written to
``out_dir/eval_results/diagnostics/<name>.json`` and added to the table as ``diagnostics/...`` columns.

SAEBench is an optional dependency (see ``docs/saebench.md`` for the install recipe): this module imports it
only when an evaluation runs.

The code is split by concern into flat sibling modules; this one holds the running code (:func:`run_saebench`,
:func:`use_model`) and re-exports the public API:

* :mod:`sae_lens_ortho.evals.saebench.suites`: the suites as a table (one record per suite: id, output schema, eval
  config, runner, checks), absorption's patches, :func:`validate_result_file`;
* :mod:`sae_lens_ortho.evals.saebench.specs`: the constants (suites, ``EVAL_TYPE_IDS``, ``HEADLINE_METRICS``, core's
  defaults), :class:`SaeSpec`, :func:`load_sae`, :func:`resolve_sae`, :func:`normalize_suites`;
* :mod:`sae_lens_ortho.evals.saebench.diagnostics`: the ``diagnostics`` suite (``DIAGNOSTICS_SUITE``,
  ``DIAGNOSTICS_DEFAULTS``);
* :mod:`sae_lens_ortho.evals.saebench.report`: :class:`SaebenchResult`, :func:`collect_results`, :func:`write_report`;

The command line (:mod:`sae_lens_ortho.evals.saebench.cli`) imports this module, never the other way.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sae_lens_ortho.evals.saebench.diagnostics import DIAGNOSTICS_DEFAULTS, DIAGNOSTICS_SUITE
from sae_lens_ortho.evals.saebench.report import SaebenchResult, collect_results, write_report
from sae_lens_ortho.evals.saebench.specs import (  # noqa: F401  (SUITE_ALIASES: re-exported)
    EVAL_TYPE_IDS,
    HEADLINE_METRICS,
    INSTALL_HINT,
    REPORT_ONLY_SUITES,
    SUITE_ALIASES,
    SUITES,
    SaebenchError,
    SaeSpec,
    llm_defaults,
    load_sae,
    normalize_suites,
    resolve_sae,
)
from sae_lens_ortho.evals.saebench.suites import patched, run_suite, validate_result_file

__all__ = [
    "DIAGNOSTICS_DEFAULTS",
    "DIAGNOSTICS_SUITE",
    "EVAL_TYPE_IDS",
    "HEADLINE_METRICS",
    "REPORT_ONLY_SUITES",
    "SUITES",
    "SaeSpec",
    "SaebenchError",
    "SaebenchResult",
    "collect_results",
    "load_sae",
    "normalize_suites",
    "resolve_sae",
    "run_saebench",
    "validate_result_file",
    "write_report",
]

log = logging.getLogger(__name__)


def _require_saebench() -> None:
    try:
        import sae_bench  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(INSTALL_HINT) from e


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
def use_model(model: Any | Mapping[str, Any] | None) -> Iterator[None]:
    """Make SAEBench's (and sae-probes's) ``HookedTransformer.from_pretrained_no_processing`` return ``model``
    for any name, or, given a mapping ``{model name: model}``, the mapped model for those names (others load as
    before).

    SAEBench's ``run_eval`` functions take a model *name* and load it themselves; this is how an in-memory
    ``HookedTransformer`` (a local or custom model) is evaluated. RAVEL loads a ``transformers`` model and is not
    covered.
    """
    if model is None or (isinstance(model, Mapping) and not model):
        yield
        return

    targets = []
    for name in _MODEL_LOADER_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "HookedTransformer"):
            targets.append((module, "HookedTransformer", _given_model_loader(module.HookedTransformer, model)))
    with patched(targets):
        yield


def _given_model_loader(loader: type, model: Any | Mapping[str, Any]) -> type:
    """A subclass of ``loader`` whose ``from_pretrained_no_processing`` serves ``model`` (see :func:`use_model`)."""

    class _GivenModel(loader):
        @classmethod
        def from_pretrained_no_processing(cls, model_name: str, *args: Any, **kwargs: Any):  # type: ignore[override]
            if not isinstance(model, Mapping):
                log.debug("SAEBench asked for model %r: using the model passed to run_saebench", model_name)
                return model
            if model_name in model:
                return model[model_name]
            return loader.from_pretrained_no_processing(model_name, *args, **kwargs)

    return _GivenModel


def _uses_transformer_lens_loader() -> bool:
    """Whether SAEBench loads models with TransformerLens's own loader (it is replaced where a caller, e.g. an
    offline test, serves models itself: then that loader decides which names exist)."""
    import sae_bench.evals.core.main as core
    from transformer_lens import HookedTransformer

    return core.HookedTransformer is HookedTransformer


def _models_for(model_names: Sequence[str], *, device: str, llm_batch_size: int | None, llm_dtype: str | None):
    """Load the SAEs' models that are local folders (once, one attempt: SAEBench's core retries a failing load
    for ~30 s); check that every other name is a model SAEBench can load, before anything runs."""
    from sae_lens_ortho.local_sources import check_model_source, is_local_model, load_hooked_transformer

    models: dict[str, Any] = {}
    check = _uses_transformer_lens_loader()
    for name in model_names:
        if is_local_model(name):
            dtype = llm_defaults(name, llm_batch_size, llm_dtype)[1]
            models[name] = load_hooked_transformer(name, device=device, dtype=dtype)
        elif check:
            check_model_source(name, context="the SAEs' model (set another with --model / model=)")
    return models


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
        model: the model to evaluate on instead of the SAEs' ``cfg.metadata.model_name`` (all SAEs then share
            it): an in-memory ``HookedTransformer`` with a tokenizer, a TransformerLens model name, or a local
            Hugging Face model folder (loaded with its tokenizer). Without it, SAEs whose model name is a local
            folder are evaluated on that folder's model; other names must be TransformerLens model names.
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
    if isinstance(model, (str, os.PathLike)):
        from sae_lens_ortho.local_sources import load_hooked_transformer

        model = load_hooked_transformer(str(model), device=device, dtype=llm_dtype or "float32")
    if model is not None and getattr(model, "tokenizer", None) is None:
        raise ValueError(
            "the model has no tokenizer, and SAEBench tokenizes its datasets with it: pass a model with one "
            "(e.g. model=<local model folder holding its tokenizer>, or HookedTransformer(cfg, tokenizer=...))"
        )
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

    from sae_lens_ortho.local_sources import local_sources

    models = None
    if model is None and "ravel" not in suite_list:  # ravel loads its own transformers model by name
        models = _models_for(list(groups), device=device, llm_batch_size=llm_batch_size, llm_dtype=llm_dtype)

    for model_name, group in groups.items():
        _check_hooks(group, model if model is not None else (models or {}).get(model_name), model_name)

    result = SaebenchResult(out_dir=out, artifacts_dir=artifacts, saes=specs, suites=suite_list)
    grad_mode = torch.is_grad_enabled()
    steps = [(suite, name, group) for suite in suite_list for name, group in groups.items()]
    bar = _progress(steps, enabled=progress)
    try:
        with use_model(model if model is not None else models), local_sources():
            for suite, model_name, group in bar:
                if hasattr(bar, "set_description"):
                    bar.set_description(f"SAEBench {suite}")
                log.info("SAEBench %s on %d SAE(s) of %s", suite, len(group), model_name)
                t0 = time.perf_counter()
                try:
                    failed = run_suite(
                        suite,
                        group,
                        model_name=model_name,
                        model=model,
                        results_root=results_root,
                        artifacts_dir=artifacts,
                        device=device,
                        options=suite_options.get(suite, {}),
                        llm_batch_size=llm_batch_size,
                        llm_dtype=llm_dtype,
                        random_seed=random_seed,
                        force_rerun=force_rerun,
                        api_key=api_key,
                        clean_up_activations=clean_up_activations,
                    )
                except Exception as e:  # noqa: BLE001 - one suite's crash must not lose the others' results
                    log.exception("SAEBench %s failed", suite)
                    failed = {s.name: f"{type(e).__name__}: {e}" for s in group}
                result.timings[suite] = result.timings.get(suite, 0.0) + time.perf_counter() - t0
                for name, why in failed.items():
                    why = _brief(why)
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


def _check_hooks(group: list[SaeSpec], model: Any | None, model_name: str) -> None:
    """Every SAE must read a hook point the model has (an SAE trained on an ``AutoModelForCausalLM`` reads a
    Hugging Face module name, which SAEBench's TransformerLens models do not have)."""
    hooks = getattr(model, "hook_dict", None)
    if not hooks:
        return
    for spec in group:
        if spec.hook_name is not None and spec.hook_name not in hooks:
            example = "blocks.0.hook_resid_post" if "blocks.0.hook_resid_post" in hooks else next(iter(hooks))
            raise ValueError(
                f"SAE {spec.name!r} reads {spec.hook_name!r}, which is no hook point of the model {model_name!r} "
                f"(TransformerLens hook points look like {example}). SAEBench evaluates TransformerLens models: an "
                "SAE trained with --model_class_name AutoModelForCausalLM reads a Hugging Face module instead"
            )


def _brief(text: str, limit: int = 400) -> str:
    """A failure reason on one line (it goes into the table and the error message), at most ``limit`` chars."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _progress(items: list[Any], enabled: bool) -> Any:
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return items
    return tqdm(items, desc="SAEBench", unit="suite", leave=True)
