"""SAEBench's suites as a table: one :class:`Suite` record each (its id, output schema, eval config, runner and
checks), and :func:`run_suite`, which runs one on a group of SAEs of one model and checks every result file with
SAEBench's own validator. Adding a suite is a runner function and one record in :data:`SAEBENCH_SUITES` (plus its
name in ``specs.SUITES`` and ``specs.EVAL_TYPE_IDS``). SAEBench is imported only inside the runners.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_lens_ortho.evals.saebench.diagnostics import DIAGNOSTICS_SUITE, run_diagnostics
from sae_lens_ortho.evals.saebench.specs import (
    ABSORPTION_MIN_LATENTS,
    ABSORPTION_MIN_PARAMS,
    CORE_DEFAULTS,
    EVAL_TYPE_IDS,
    SaeSpec,
    llm_defaults,
    normalize_suites,
    seed_everything,
)

__all__ = ["SAEBENCH_SUITES", "Suite", "SuiteRun", "load_class", "patched", "run_suite", "validate_result_file"]

log = logging.getLogger(__name__)


def validate_result_file(path: str | Path, suite: str) -> None:
    """Check one JSON with SAEBench's own validator (``testing_utils.validate_eval_output_format_file``)."""
    from sae_bench.sae_bench_utils.testing_utils import validate_eval_output_format_file

    validate_eval_output_format_file(str(path), load_class(SAEBENCH_SUITES[normalize_suites([suite])[0]].output_type))


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
def patched(targets: Sequence[tuple[Any, str, Any]]) -> Iterator[None]:
    """Temporarily set module attributes; restore them afterwards."""
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in targets]
    try:
        for obj, attr, value in targets:
            setattr(obj, attr, value)
        yield
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


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


def _model_params(model: Any | None, model_name: str) -> int | None:
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    m = re.search(r"(\d+(?:\.\d+)?)\s*([mb])\b", model_name.lower().replace("-", " "))
    if m:
        return int(float(m.group(1)) * (1e9 if m.group(2) == "b" else 1e6))
    return None


@dataclass
class SuiteRun:
    """One suite on one model group: what its runner reads, and the reasons it reports for SAEs left without a
    result (``hard``: not evaluated at all; ``hints``: why a result may be missing, used if it is)."""

    suite: str
    group: list[SaeSpec]
    model_name: str
    model: Any | None
    results_root: Path
    out: Path
    """``results_root / <eval_type_id>``: where SAEBench writes this suite's JSONs."""
    artifacts_dir: Path
    device: str
    options: dict[str, Any]
    batch: int
    dtype: str
    random_seed: int
    force_rerun: bool
    api_key: str | None
    clean_up_activations: bool
    expected: dict[str, Path]
    """SAE name -> the result file SAEBench writes for it."""
    hard: dict[str, str] = field(default_factory=dict)
    hints: dict[str, str] = field(default_factory=dict)

    @property
    def selected(self) -> list[tuple[str, Any]]:
        return [s.selected for s in self.group]

    def eval_config(self, **extra: Any) -> Any:
        """The suite's SAEBench eval config: its defaults from this run (the ones its record names), ``extra``, then
        the user's options on top (an unknown option is a ``ValueError`` naming it)."""
        suite = SAEBENCH_SUITES[self.suite]
        common = {
            "model_name": self.model_name,
            "random_seed": self.random_seed,
            "llm_batch_size": self.batch,
            "llm_dtype": self.dtype,
        }
        defaults = {name: common[name] for name in suite.config_defaults} | extra
        return _eval_config(load_class(suite.config), self.options, defaults)


@dataclass(frozen=True)
class Suite:
    """A SAEBench suite: how it runs and how its output is checked."""

    name: str
    output_type: str
    """``module:Class`` of SAEBench's output schema (its validator checks each result file against it)."""
    config: str
    """``module:Class`` of SAEBench's eval config ("" for ``core``, which takes keyword arguments)."""
    runner: Callable[[SuiteRun], None]
    config_defaults: tuple[str, ...] = ()
    """Which of ``model_name``, ``random_seed``, ``llm_batch_size``, ``llm_dtype`` the run fills in."""
    checks: tuple[Callable[[SuiteRun], None], ...] = ()
    """Refusals before the runner starts (a ``ValueError`` naming the problem)."""

    @property
    def id(self) -> str:
        """SAEBench's ``eval_type_id``, also the folder name of its results."""
        return EVAL_TYPE_IDS[self.name]


def load_class(target: str) -> Any:
    """The class ``module:Name`` (imported now)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _check_core_options(run: SuiteRun) -> None:
    unknown = sorted(set(run.options) - set(CORE_DEFAULTS))
    if unknown:
        raise ValueError(f"core has no option(s) {', '.join(unknown)} (options: {', '.join(CORE_DEFAULTS)})")


def _check_api_key(run: SuiteRun) -> None:
    if not run.api_key:
        raise ValueError("autointerp needs an OpenAI API key (api_key= or OPENAI_API_KEY)")


def _run_core(run: SuiteRun) -> None:
    import sae_bench.evals.core.main as core

    with _capture_logs(core.__name__) as logs:
        core.multiple_evals(
            selected_saes=run.selected,
            output_folder=str(run.out),
            dtype=run.dtype,
            device=run.device,
            force_rerun=run.force_rerun,
            **{**CORE_DEFAULTS, **run.options},
        )
    for s in run.group:  # multiple_evals logs per-SAE errors and carries on: keep them for the report
        mine = [m for m in logs.messages if s.name in m] or logs.messages
        if mine:
            run.hints[s.name] = "SAEBench core logged: " + " | ".join(mine)


def _run_scr_tpp(run: SuiteRun) -> None:
    import sae_bench.evals.scr_and_tpp.main as scr_tpp

    config = run.eval_config(perform_scr=run.suite == "scr")
    if config.perform_scr != (run.suite == "scr"):
        raise ValueError("perform_scr is set by the suite name (scr or tpp)")
    _fit_n_values(config, run.group)
    scr_tpp.run_eval(
        config,
        run.selected,
        run.device,
        str(run.results_root),
        force_rerun=run.force_rerun,
        clean_up_activations=run.clean_up_activations,
        save_activations=True,
        artifacts_path=str(run.artifacts_dir),
    )


def _run_sparse_probing(run: SuiteRun) -> None:
    import sae_bench.evals.sparse_probing.main as sparse_probing

    sparse_probing.run_eval(
        run.eval_config(),
        run.selected,
        run.device,
        str(run.out),
        force_rerun=run.force_rerun,
        clean_up_activations=run.clean_up_activations,
        save_activations=True,
        artifacts_path=str(run.artifacts_dir),
    )


def _run_sae_probes(run: SuiteRun) -> None:
    import sae_bench.evals.sparse_probing_sae_probes.main as sae_probes_main

    config = run.eval_config(
        results_path=str(run.artifacts_dir / EVAL_TYPE_IDS["sae_probes"]),
        model_cache_path=str(run.artifacts_dir / f"{EVAL_TYPE_IDS['sae_probes']}--model_acts_cache"),
    )
    for s in run.group:  # sae-probes reuses per-SAE results by name: never reuse another SAE's
        if run.force_rerun or not run.expected[s.name].exists():
            shutil.rmtree(Path(config.results_path) / s.saebench_name, ignore_errors=True)
    sae_probes_main.run_eval(config, run.selected, run.device, str(run.out), force_rerun=run.force_rerun)


def _run_autointerp(run: SuiteRun) -> None:
    import sae_bench.evals.autointerp.main as autointerp

    assert run.api_key is not None  # _check_api_key refused a run without one
    autointerp.run_eval(
        run.eval_config(),
        run.selected,
        run.device,
        run.api_key,
        str(run.out),
        force_rerun=run.force_rerun,
        artifacts_path=str(run.artifacts_dir),
    )


def _run_saebench_main(module: str, run: SuiteRun) -> None:
    """``<module>.run_eval(config, saes, device, out, force_rerun=, artifacts_path=)``: unlearning's and ravel's."""
    importlib.import_module(module).run_eval(
        run.eval_config(),
        run.selected,
        run.device,
        str(run.out),
        force_rerun=run.force_rerun,
        artifacts_path=str(run.artifacts_dir),
    )


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


def _run_absorption(run: SuiteRun) -> None:
    """Absorption on the SAEs that hook ``hook_resid_post`` (the others: ``run.hard``), with SAEBench's caches keyed
    by SAE name cleared, its vocabulary sorted and its relative output folder inside the artifacts."""
    group, selected, expected, out = run.group, run.selected, run.expected, run.out
    model, model_name, artifacts_dir, device = run.model, run.model_name, run.artifacts_dir, run.device
    force_rerun = run.force_rerun
    hard, hints = run.hard, run.hints
    import sae_bench.evals.absorption.main as absorption
    from sae_bench.evals.absorption.feature_absorption import FEATURE_ABSORPTION_EXPERIMENT_NAME
    from sae_bench.evals.absorption.k_sparse_probing import SPARSE_PROBING_EXPERIMENT_NAME

    config = run.eval_config()
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
        return
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
    with (
        patched(
            [
                (absorption, "run_k_sparse_probing_experiment", k_sparse),
                (absorption, "run_feature_absortion_experiment", feature_abs),
                (absorption_common, "get_alpha_tokens", sorted_alpha_tokens),
                (absorption_features, "get_alpha_tokens", sorted_alpha_tokens),
            ]
        ),
        _chdir(root),
    ):
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


_LLM = ("model_name", "random_seed", "llm_batch_size", "llm_dtype")
_EVALS = "sae_bench.evals"

SAEBENCH_SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        Suite("core", f"{_EVALS}.core.eval_output:CoreEvalOutput", "", _run_core, checks=(_check_core_options,)),
        Suite(
            "scr",
            f"{_EVALS}.scr_and_tpp.eval_output:ScrEvalOutput",
            f"{_EVALS}.scr_and_tpp.eval_config:ScrAndTppEvalConfig",
            _run_scr_tpp,
            _LLM,
        ),
        Suite(
            "tpp",
            f"{_EVALS}.scr_and_tpp.eval_output:TppEvalOutput",
            f"{_EVALS}.scr_and_tpp.eval_config:ScrAndTppEvalConfig",
            _run_scr_tpp,
            _LLM,
        ),
        Suite(
            "absorption",
            f"{_EVALS}.absorption.eval_output:AbsorptionEvalOutput",
            f"{_EVALS}.absorption.eval_config:AbsorptionEvalConfig",
            _run_absorption,
            _LLM,
        ),
        Suite(
            "sparse_probing",
            f"{_EVALS}.sparse_probing.eval_output:SparseProbingEvalOutput",
            f"{_EVALS}.sparse_probing.eval_config:SparseProbingEvalConfig",
            _run_sparse_probing,
            _LLM,
        ),
        Suite(
            "sae_probes",
            f"{_EVALS}.sparse_probing_sae_probes.eval_output:SparseProbingSaeProbesEvalOutput",
            f"{_EVALS}.sparse_probing_sae_probes.eval_config:SparseProbingSaeProbesEvalConfig",
            _run_sae_probes,
            ("model_name", "random_seed"),
        ),
        Suite(
            "autointerp",
            f"{_EVALS}.autointerp.eval_output:AutoInterpEvalOutput",
            f"{_EVALS}.autointerp.eval_config:AutoInterpEvalConfig",
            _run_autointerp,
            _LLM,
            checks=(_check_api_key,),
        ),
        Suite(
            "unlearning",
            f"{_EVALS}.unlearning.eval_output:UnlearningEvalOutput",
            f"{_EVALS}.unlearning.eval_config:UnlearningEvalConfig",
            functools.partial(_run_saebench_main, f"{_EVALS}.unlearning.main"),
            ("model_name", "llm_batch_size", "llm_dtype"),
        ),
        Suite(
            "ravel",
            f"{_EVALS}.ravel.eval_output:RAVELEvalOutput",
            f"{_EVALS}.ravel.eval_config:RAVELEvalConfig",
            functools.partial(_run_saebench_main, f"{_EVALS}.ravel.main"),
            _LLM,
        ),
    )
}
"""SAEBench's suites, one record each (``diagnostics``, ours, runs through ``run_diagnostics`` instead)."""


def run_suite(
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
        return run_diagnostics(
            group,
            model_name=model_name,
            results_root=results_root,
            device=device,
            options=options,
            llm_dtype=llm_dtype,
            random_seed=random_seed,
            force_rerun=force_rerun,
        )
    record = SAEBENCH_SUITES[suite]
    out = results_root / record.id
    out.mkdir(parents=True, exist_ok=True)  # absorption's run_eval writes into it without creating it
    expected = {s.name: out / s.result_stem for s in group}
    before = {n: (p.stat().st_mtime_ns if p.exists() else None) for n, p in expected.items()}
    batch, dtype = llm_defaults(model_name, llm_batch_size, llm_dtype)
    run = SuiteRun(
        suite, group, model_name, model, results_root, out, artifacts_dir, device, dict(options), batch, dtype,
        random_seed, force_rerun, api_key, clean_up_activations, expected,
    )  # fmt: skip
    seed_everything(random_seed)
    for check in record.checks:
        check(run)
    record.runner(run)

    failures: dict[str, str] = {}
    for s in group:
        path = expected[s.name]
        if s.name in run.hard:
            failures[s.name] = run.hard[s.name]
            continue
        if not path.exists():
            why = run.hints.get(s.name) or "SAEBench wrote no result file"
            failures[s.name] = f"{why} (expected {path})"
            continue
        if before[s.name] is not None and path.stat().st_mtime_ns == before[s.name] and not force_rerun:
            log.info("%s/%s: kept the existing result %s (force_rerun=False)", suite, s.name, path)
        try:
            validate_result_file(path, suite)
        except Exception as e:  # noqa: BLE001 - reported as a failure of this SAE
            failures[s.name] = f"{path} fails SAEBench's validator: {e}"
    return failures
