"""A SynthSAEBench study as independent jobs: one SAE per (arm, seed, L0), one result file each.

:func:`run_sweep` turns resolved :class:`~.synthbench.SynthBenchSettings` into :class:`Job` s. A job is
self-contained: its spec (the scale, the arm, the seed, the L0 and the training budget) goes in, and one JSON file
``runs/<arm>__seed<S>__l0<L>.json`` comes out, written atomically; so a rerun skips every job whose file exists
with the same spec, Ctrl-C loses nothing finished, and another scheduler could run the same jobs on other machines
(:func:`run_job` takes a spec dict and a cache folder, nothing else).

Work runs in two phases: first each seed's data stream is recorded to the cache (one job per seed), then the SAEs
train, each replaying its seed's stream from the cache; with ``jobs > 1`` both phases run in that many worker
processes of one torch thread each. Every phase prints progress with rows/s and an ETA.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sae_lens_ortho.evals.synthetic.scales import SynthBenchScale
from sae_lens_ortho.evals.synthetic.stream import RecordedStream, with_reader
from sae_lens_ortho.evals.synthetic.synthbench import (
    HELDOUT_STREAM,
    TRAIN_STREAM,
    Arm,
    SynthBenchResults,
    SynthBenchRun,
    SynthBenchSettings,
    build_model,
    build_sae_config,
    environment,
    eval_metrics,
    heldout_metrics,
    hierarchy_pairs,
    model_stats,
    quiet,
    runner_config,
    stream_cache,
)

__all__ = ["Job", "SweepOutcome", "jobs_of", "run_job", "run_sweep", "run_synthbench"]

Log = Callable[[str], None]
_PROGRESS_SECONDS = 20.0  # how often a running job prints a progress line


@dataclasses.dataclass(frozen=True)
class Job:
    """One SAE of a study: everything that decides its result."""

    settings: SynthBenchSettings
    """The study's resolved settings (budget, device, model seed, cache); its arms, seeds and L0s are ignored."""
    scale: SynthBenchScale
    """The scale, carried whole: a worker process needs no registry lookup."""
    arm: Arm
    seed: int
    l0: int

    @property
    def name(self) -> str:
        """The result file's stem: ``<arm>__seed<S>__l0<L>`` (the arm name made file-safe)."""
        return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', self.arm.name)}__seed{self.seed}__l0{self.l0}"

    def spec(self) -> dict[str, Any]:
        """What decides the result, as JSON: a result file is reused only when its spec is equal."""
        s = self.settings
        budget = {k: getattr(s, k) for k in ("training_samples", "eval_samples", "heldout_samples", "lr",
                                             "lr_warm_up_steps", "lr_decay_steps", "epoch_rows", "dead_feature_window", "device",
                                             "model_seed", "record_stream")}  # fmt: skip
        arm = {"name": self.arm.name, "architecture": self.arm.architecture, "overrides": self.arm.overrides}
        return {"scale": dataclasses.asdict(self.scale), "arm": arm, "seed": self.seed, "l0": self.l0, **budget}

    def train_rows(self) -> int:
        return int(self.settings.training_samples or 0)

    def stream_rows(self) -> int:
        """Rows of the seed's recorded training stream that this job reads (training, then evaluation)."""
        s = self.settings
        assert s.training_samples is not None and s.eval_samples is not None  # resolved
        return (s.epoch_rows or s.training_samples) + s.eval_samples


def jobs_of(settings: SynthBenchSettings) -> list[Job]:
    """Every job of resolved ``settings``, seed by seed, then L0, then arm."""
    scale = settings.scale()
    return [
        Job(settings, scale, arm, seed, l0) for seed in settings.seeds for l0 in settings.l0s for arm in settings.arms
    ]


# ------------------------------------------------------------------------------------------------------------
# One process's shared state: the synthetic model and the recorded streams, built once per process.
# ------------------------------------------------------------------------------------------------------------

_MODELS: dict[str, Any] = {}
_STREAMS: dict[str, RecordedStream] = {}


def _model(job: Job) -> Any:
    key = json.dumps([dataclasses.asdict(job.scale), job.settings.device, job.settings.model_seed], sort_keys=True)
    if key not in _MODELS:
        _MODELS.clear()  # one model at a time
        _STREAMS.clear()
        # on one thread, like the workers: the orthogonalised dictionary's rounding depends on the thread count
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _MODELS[key] = build_model(job.scale, job.settings.device, job.settings.model_seed)
        finally:
            torch.set_num_threads(threads)
    return _MODELS[key]


def _stream(job: Job, offset: int, chunk_rows: int) -> RecordedStream:
    """The seed's training stream (offset ``TRAIN_STREAM``) or held-out stream, shared within this process."""
    record = bool(job.settings.record_stream) or offset == HELDOUT_STREAM
    cache = stream_cache(job.settings, job.scale)
    key = json.dumps([dataclasses.asdict(job.scale), offset + job.seed, chunk_rows, record, str(cache)])
    if key not in _STREAMS:
        model = _model(job)
        _STREAMS[key] = RecordedStream(model.activation_generator, offset + job.seed, chunk_rows=chunk_rows,
                                       record=record, cache_dir=cache)  # fmt: skip
    return _STREAMS[key]


def _train_stream(job: Job) -> RecordedStream:
    return _stream(job, TRAIN_STREAM, job.scale.stream_chunk_rows)


def _heldout_stream(job: Job) -> RecordedStream:
    return _stream(job, HELDOUT_STREAM, 16384)


class _Rate:
    """Progress lines of one phase of work: share done, rows/s and ETA, at most every ``every`` seconds."""

    def __init__(self, label: str, total: int, log: Log, every: float = _PROGRESS_SECONDS):
        self.label, self.total, self.log, self.every = label, total, log, every
        self.start = self.last = time.perf_counter()
        self.first: int | None = None

    def __call__(self, done: int, total: int | None = None) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = done  # rows already there (cached) do not count towards the rate
            return
        if now - self.last < self.every or done >= (total or self.total):
            return
        self.last = now
        rate = (done - self.first) / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else math.inf
        self.log(f"  {self.label}: {done / self.total:4.0%} of {self.total:,} rows, {rate:,.0f} rows/s, "
                 f"ETA {_duration(eta)}")  # fmt: skip


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def record_seed(job: Job, log: Log) -> dict[str, float]:
    """Record (or find in the cache) the rows of ``job``'s seed that its study needs; returns the model's stats."""
    model = _model(job)
    rows = job.stream_rows()
    t0 = time.perf_counter()
    stream = _train_stream(job)
    if job.settings.record_stream:
        stream.record_rows(rows, _Rate(f"stream of seed {job.seed}", rows, log))
    _heldout_stream(job).record_rows(job.settings.heldout_samples)
    if job.settings.record_stream:
        log(f"  stream of seed {job.seed}: {stream.rows:,} rows ready ({_duration(time.perf_counter() - t0)})")
    return model_stats(model, hierarchy_pairs(model))


def run_job(job: Job, log: Log) -> SynthBenchRun:
    """Train and evaluate one SAE (SAELens's ``SyntheticSAERunner`` and ``eval_sae_on_synthetic_data``) on one
    torch thread: a job's numbers do not depend on how many run side by side (float sums change with threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_job(job, log)
    finally:
        torch.set_num_threads(threads)


def _run_job(job: Job, log: Log) -> SynthBenchRun:
    from sae_lens.registry import get_sae_training_class
    from sae_lens.synthetic.synthetic_sae_runner import SyntheticSAERunner

    import sae_lens_ortho  # noqa: F401  (registers the *_ortho architectures)

    t0, cpu0 = time.perf_counter(), time.process_time()
    s = job.settings
    model = _model(job)
    pairs = hierarchy_pairs(model)
    feats = _heldout_stream(job).reader().sample(s.heldout_samples)
    if s.record_stream:
        epochs = {"epoch_rows": s.epoch_rows, "train_rows": s.training_samples} if s.epoch_rows else {}
        reader = _train_stream(job).reader(**epochs)
    else:  # one pass, regenerated per arm from the same seed (the 16k benchmark on a GPU)
        reader = RecordedStream(model.activation_generator, TRAIN_STREAM + job.seed, record=False).reader()
    reader.progress = _Rate(f"{job.arm.name} seed {job.seed} L0 {job.l0}", job.train_rows(), log)
    sae_cfg = build_sae_config(job.arm, job.scale, job.l0, s.device)
    torch.manual_seed(job.seed)  # same initial weights for every arm of this seed
    sae = get_sae_training_class(job.arm.architecture)[0](sae_cfg)
    runner = SyntheticSAERunner(
        runner_config(s, sae_cfg, job.scale),
        override_synthetic_model=with_reader(model, reader),  # type: ignore[arg-type]
        override_sae=sae,
    )
    with quiet():
        result = runner.run()
    metrics = {**eval_metrics(result), **heldout_metrics(result.sae, model, feats, pairs)}
    return SynthBenchRun(job.arm.name, job.arm.architecture, job.seed, job.l0, metrics, time.perf_counter() - t0,
                         cpu_seconds=time.process_time() - cpu0)  # fmt: skip


def _summary(run: SynthBenchRun) -> str:
    m = run.metrics
    return (f"seed {run.seed} L0 {run.l0_target} {run.arm}: F1 {m['f1']:.3f} MCC {m['mcc']:.3f} "
            f"EV {m['explained_variance']:.3f} L0 {m['l0']:.1f} dead {m['dead_latents']:.0f} "
            f"absorption {m['absorption_score']:.3f} ({run.seconds:.0f}s)")  # fmt: skip


# ------------------------------------------------------------------------------------------------------------
# Result files
# ------------------------------------------------------------------------------------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically: a killed run leaves the old file or none, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def _finished(job: Job, runs_dir: Path) -> SynthBenchRun | None:
    """The job's result from its file, if that exists with the same spec; a file from another spec is an error
    (a study never replaces a result silently)."""
    path = runs_dir / f"{job.name}.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        spec = json.loads(json.dumps(job.spec(), default=str))
        stored = data["spec"]
        run = SynthBenchRun(**data["run"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a readable result file ({e}); delete it to run the job again") from None
    if stored != spec:
        diff = sorted(k for k in set(spec) | set(stored) if spec.get(k) != stored.get(k))
        raise ValueError(f"{path} was made with other settings ({', '.join(diff)} differ); use another --out, or "
                         f"delete the file to run the job again")  # fmt: skip
    return run


# ------------------------------------------------------------------------------------------------------------
# Worker processes
# ------------------------------------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, flush=True)


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool and keeps results
    torch.set_num_threads(1)


def _worker_log(job: Job) -> Log:
    return _say if job.settings.progress else (lambda _m: None)


def _worker_record(job: Job) -> tuple[int, dict[str, float]]:
    return job.seed, record_seed(job, _worker_log(job))


def _worker_train(item: tuple[Job, str | None]) -> tuple[str, SynthBenchRun]:
    job, runs_dir = item
    run = run_job(job, _worker_log(job))
    if runs_dir is not None:
        _write_json(Path(runs_dir) / f"{job.name}.json", {"spec": job.spec(), "run": dataclasses.asdict(run)})
    return job.name, run


@dataclasses.dataclass
class SweepOutcome:
    """What a sweep has: every finished run of its grid (earlier ones included), and whether it was cut short."""

    results: SynthBenchResults
    done: int
    """Finished jobs of the grid."""
    total: int
    """Jobs in the grid."""
    reused: int
    """Jobs whose result file was already there."""
    interrupted: bool = False


def run_sweep(
    settings: SynthBenchSettings, out: Path | str | None = None, jobs: int = 1, log: Log | None = None
) -> SweepOutcome:
    """Run every job of ``settings`` not already finished under ``out/runs`` (see the module docstring).

    ``out=None`` keeps nothing on disk (one process, the streams in memory unless ``settings.cache_dir``). With
    ``jobs > 1`` the streams go through the cache folder (``settings.cache_dir``, default ``out/streams``).
    KeyboardInterrupt stops the work and returns what finished, with ``interrupted`` set."""
    settings = settings.resolved()
    say = log or (_say if settings.progress else (lambda _m: None))
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    runs_dir = None if out is None else Path(out) / "runs"
    if jobs > 1 and settings.cache_dir is None:
        if out is None:
            raise ValueError("jobs > 1 share the data streams through a cache folder: give out or cache_dir")
        settings.cache_dir = str(Path(out) / "streams")
    all_jobs = jobs_of(settings)
    for job in all_jobs:  # bad overrides fail before anything is built
        build_sae_config(job.arm, job.scale, job.l0, "meta")
    start = time.perf_counter()
    runs: dict[str, SynthBenchRun] = {}
    if runs_dir is not None:
        runs_dir.mkdir(parents=True, exist_ok=True)
        for job in all_jobs:
            if (run := _finished(job, runs_dir)) is not None:
                runs[job.name] = run
    reused = len(runs)
    todo = [j for j in all_jobs if j.name not in runs]
    scale = settings.scale()
    say(f"synthbench {scale.name}: {len(all_jobs)} jobs ({len(settings.arms)} arms x {len(settings.seeds)} seeds x "
        f"{len(settings.l0s)} L0s), {reused} already done, {len(todo)} to run on {jobs} worker(s)")  # fmt: skip
    stats: dict[str, float] = {}
    interrupted = False
    pool = None
    try:
        seeds = {j.seed: j for j in todo}
        if jobs == 1:
            if seeds or not runs:
                say(f"  building the synthetic model ({scale.num_features} features, {scale.hidden_dim} dims)")
                first = next(iter(seeds.values()), all_jobs[0])
                stats = record_seed(first, say)
                for job in list(seeds.values())[1:]:
                    record_seed(job, say)
            for job in todo:
                run = run_job(job, say)
                if runs_dir is not None:
                    _write_json(runs_dir / f"{job.name}.json", {"spec": job.spec(), "run": dataclasses.asdict(run)})
                runs[job.name] = run
                say(f"[{len(runs)}/{len(all_jobs)}] {_summary(run)}")
        else:
            ctx = multiprocessing.get_context("spawn")
            pool = ctx.Pool(jobs, initializer=_worker_init)
            say(f"  recording the streams of {len(seeds)} seed(s) (each worker builds the synthetic model first)")
            for _seed, seed_stats in pool.imap_unordered(_worker_record, list(seeds.values())):
                stats = seed_stats
            items = [(j, None if runs_dir is None else str(runs_dir)) for j in todo]
            for name, run in pool.imap_unordered(_worker_train, items):
                runs[name] = run
                say(f"[{len(runs)}/{len(all_jobs)}] {_summary(run)}")
            pool.close()
            pool.join()
    except KeyboardInterrupt:
        interrupted = True
        if pool is not None:
            pool.terminate()
            pool.join()
        say(f"interrupted: {len(runs)} of {len(all_jobs)} jobs finished"
            + (f" and kept in {runs_dir}; rerun the same command to run the rest" if runs_dir is not None else ""))  # fmt: skip
    if not stats and runs:
        stats = _stats_of(all_jobs[0])
    order = {j.name: i for i, j in enumerate(all_jobs)}
    finished = sorted(runs.items(), key=lambda kv: order[kv[0]])
    results = SynthBenchResults(settings, [r for _, r in finished], stats, time.perf_counter() - start,
                                environment())  # fmt: skip
    return SweepOutcome(results, len(runs), len(all_jobs), reused, interrupted)


def _stats_of(job: Job) -> dict[str, float]:
    """The model's stats when every job was already finished (builds the model in this process)."""
    model = _model(job)
    return model_stats(model, hierarchy_pairs(model))


def run_synthbench(
    settings: SynthBenchSettings | None = None, log: Callable[[str], None] | None = None
) -> SynthBenchResults:
    """Train and evaluate every arm at every seed and L0 in this process, keeping nothing on disk but the stream
    cache (see the module docstring; :func:`~.sweep.run_sweep` runs the same jobs in parallel, with result files)."""
    outcome = run_sweep(settings or SynthBenchSettings(), log=log)
    if outcome.interrupted:
        raise KeyboardInterrupt
    return outcome.results
