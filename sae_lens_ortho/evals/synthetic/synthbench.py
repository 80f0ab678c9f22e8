"""SynthSAEBench inside the project: any registered training architectures on one ground truth, paired by seed.

``sweep.run_synthbench(SynthBenchSettings(config="mini", arms=parse_arms(["topk", "topk_ortho"])))`` builds the scale's
synthetic model from SAELens's ``SyntheticModelConfig`` (:mod:`.scales`), then per seed and L0 trains every arm
with SAELens's own ``SyntheticSAERunner`` and evaluates it with SAELens's ``eval_sae_on_synthetic_data`` (F1, MCC,
uniqueness, explained variance, L0, dead latents, precision, recall) plus absorption on the model's hierarchy and
latent-frequency counts. Every arm of a seed starts from the same initial weights (the torch RNG is reset to the
seed before each SAE is built; twins of one base build identical parameters) and sees the same training and
evaluation rows (:class:`~.stream.RecordedStream`), so per-seed differences are paired.

Arms are ``ARCH``, ``NAME=ARCH`` or ``NAME=ARCH:field=value,field=value`` (values parsed as JSON, else kept as
strings), or the name of a recipe in :data:`sae_lens_ortho.saes.recipes.RECIPES`; see :func:`parse_arms`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import platform
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from sae_lens_ortho.evals.synthetic.absorption import absorption_scores
from sae_lens_ortho.evals.synthetic.scales import SynthBenchScale, get_scale

__all__ = [
    "DEFAULT_BASES",
    "HELDOUT_STREAM",
    "TRAIN_STREAM",
    "Arm",
    "SynthBenchResults",
    "SynthBenchRun",
    "SynthBenchSettings",
    "build_model",
    "build_sae_config",
    "environment",
    "eval_metrics",
    "heldout_metrics",
    "hierarchy_pairs",
    "model_stats",
    "parse_arms",
    "quiet",
    "runner_config",
    "stream_cache",
]

# Seed offsets of the per-seed streams (training + final evaluation, and the held-out absorption batch).
TRAIN_STREAM = 1_000
HELDOUT_STREAM = 2_000


@dataclass(frozen=True)
class Arm:
    """One column of the comparison: a registered training architecture and its config overrides."""

    name: str
    """Label in tables and plots."""
    architecture: str
    """A registered SAELens training architecture (``topk``, ``topk_ortho``, ``matryoshka_batchtopk``, ...)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """SAE config fields set for this arm (after the scale's sizes and L0)."""

    @property
    def base(self) -> str:
        """The architecture this arm is paired against: the base of an ``*_ortho`` twin, else itself."""
        from sae_lens.registry import get_sae_training_class

        cfg_cls = get_sae_training_class(self.architecture)[1]
        return getattr(cfg_cls, "ortho_base_architecture", None) or self.architecture


def parse_arms(specs: Sequence[str]) -> tuple[Arm, ...]:
    """Arms from command-line specs: ``ARCH``, ``NAME=ARCH``, ``NAME=ARCH:f=v,f=v`` or a recipe name."""
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    import sae_lens_ortho  # noqa: F401  (registers the *_ortho architectures)
    from sae_lens_ortho.saes.recipes import RECIPES

    arms = []
    for spec in specs:
        name, _, rest = spec.partition("=") if "=" in spec.split(":", 1)[0] else (None, "", spec)
        arch, _, fields_spec = rest.partition(":")
        if arch in RECIPES and not fields_spec:
            recipe = RECIPES[arch]
            arms.append(Arm(name or arch, recipe.architecture, dict(recipe.overrides)))
            continue
        if arch not in SAE_TRAINING_CLASS_REGISTRY:
            known = ", ".join(sorted(SAE_TRAINING_CLASS_REGISTRY))
            raise ValueError(f"arm {spec!r}: {arch!r} is neither a registered training architecture ({known}) "
                             f"nor a recipe ({', '.join(sorted(RECIPES))})")  # fmt: skip
        overrides: dict[str, Any] = {}
        for item in filter(None, fields_spec.split(",")):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"arm {spec!r}: override {item!r} must be field=value")
            try:
                overrides[key] = json.loads(value)
            except json.JSONDecodeError:
                overrides[key] = value
        arms.append(Arm(name or (arch if not overrides else f"{arch}:{fields_spec}"), arch, overrides))
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique, got {names}")
    return tuple(arms)


DEFAULT_BASES = ("topk", "batchtopk", "matryoshka_batchtopk")
"""SAELens architectures of the default comparison (with every recipe of ``sae_lens_ortho.saes.recipes``)."""


@dataclass
class SynthBenchSettings:
    """Everything that defines a SynthSAEBench run. Defaults: the ``mini`` scale's headline comparison."""

    config: str = "mini"
    """Scale: ``mini`` (CPU, about a minute per SAE), ``small`` (CPU study) or ``16k`` (the published benchmark)."""
    arms: tuple[Arm, ...] = ()
    """Arms to compare (see :func:`parse_arms`); empty means ``DEFAULT_BASES`` and every named recipe."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds: each fixes every arm's initial weights and the training and evaluation rows."""
    l0s: tuple[int, ...] = ()
    """L0 values (k of the TopK family); empty means the scale's headline L0. Several give the L0 sweep."""
    training_samples: int | None = None
    """Training samples per SAE (default: the scale's)."""
    eval_samples: int | None = None
    """Samples of the final evaluation (default: the scale's)."""
    heldout_samples: int = 20_000
    """Held-out samples for absorption and latent frequencies."""
    lr: float | None = None
    """Learning rate (default: the scale's)."""
    lr_warm_up_steps: int | None = None
    """Linear learning-rate warm-up steps (default: the scale's ``lr_warm_up_fraction`` of the steps)."""
    lr_decay_steps: int | None = None
    """Steps at the end over which the learning rate falls linearly to 0 (default: the scale's
    ``lr_decay_fraction`` of the steps)."""
    dead_feature_window: int | None = None
    """Steps without firing after which a latent counts as dead for SAELens's auxiliary losses (default: the
    scale's)."""
    epoch_rows: int | None = None
    """Recorded rows that training replays as epochs (default: the scale's ``epoch_rows``; 0: no replay, every
    training row new)."""
    device: str = "cpu"
    """Torch device; ``cuda`` uses bf16 autocast for the SAE and the data, like the published runs."""
    model_seed: int | None = None
    """Seed of the synthetic model (default: the scale's, 42)."""
    record_stream: bool | None = None
    """Record the data stream so every arm replays it (default: on, except for ``16k``, which regenerates the
    same rows from the same seed per arm instead)."""
    cache_dir: str | None = None
    """Folder that keeps the recorded data streams on disk, so a later run of the same scale and seeds replays
    them instead of drawing again (a subfolder per synthetic-model config; the rows are identical either way)."""
    progress: bool = True
    """Print one line per trained SAE."""

    def scale(self) -> SynthBenchScale:
        return get_scale(self.config)

    def resolved(self) -> SynthBenchSettings:
        """A copy with every default filled in from the scale, validated."""
        s = self.scale()
        out = SynthBenchSettings(**{f.name: getattr(self, f.name) for f in fields(self)})
        if not out.arms:
            from sae_lens_ortho.saes.recipes import RECIPES

            out.arms = parse_arms([*DEFAULT_BASES, *RECIPES])
        out.l0s = tuple(out.l0s) or (s.l0,)
        out.training_samples = out.training_samples or s.training_samples
        out.eval_samples = out.eval_samples or s.eval_samples
        out.lr = out.lr or s.lr
        steps = out.training_samples // s.batch_size
        if out.lr_warm_up_steps is None:
            out.lr_warm_up_steps = round(s.lr_warm_up_fraction * steps)
        if out.lr_decay_steps is None:
            out.lr_decay_steps = round(s.lr_decay_fraction * steps)
        if out.epoch_rows is None:
            out.epoch_rows = s.epoch_rows or 0
        if out.dead_feature_window is None:
            out.dead_feature_window = s.dead_feature_window
        if out.record_stream is None:
            out.record_stream = s.name != "16k"
        if not out.seeds:
            raise ValueError("seeds must name at least one seed")
        for name, v in (("training_samples", out.training_samples), ("eval_samples", out.eval_samples),
                        ("heldout_samples", out.heldout_samples)):  # fmt: skip
            if not isinstance(v, int) or v < s.batch_size:
                raise ValueError(f"{name} must be an integer >= the batch size {s.batch_size}, got {v!r}")
        if out.lr_warm_up_steps < 0 or out.lr_decay_steps < 0 or out.lr_warm_up_steps + out.lr_decay_steps > steps:
            raise ValueError(f"lr_warm_up_steps + lr_decay_steps must be in [0, {steps}] (the training steps), got "
                             f"{out.lr_warm_up_steps} + {out.lr_decay_steps}")  # fmt: skip
        if out.epoch_rows:
            if not out.record_stream:
                raise ValueError("epoch_rows replays the recorded stream: it needs record_stream")
            for name, v in (("epoch_rows", out.epoch_rows), ("training_samples", out.training_samples)):
                if v % s.stream_chunk_rows:
                    raise ValueError(f"with epoch_rows, {name} must be a multiple of the stream's chunk "
                                     f"({s.stream_chunk_rows} rows), got {v}")  # fmt: skip
        if any(not isinstance(k, int) or not 1 <= k <= s.d_sae for k in out.l0s):
            raise ValueError(f"l0s must be integers in [1, {s.d_sae}] (the SAE width), got {out.l0s}")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["arms"] = [{"name": a.name, "architecture": a.architecture, "overrides": a.overrides} for a in self.arms]
        return d


@dataclass
class SynthBenchRun:
    """One trained SAE: which arm, seed and L0, and its metrics."""

    arm: str
    architecture: str
    seed: int
    l0_target: int
    metrics: dict[str, float]
    seconds: float
    """Wall-clock seconds of the job."""
    cpu_seconds: float | None = None
    """CPU seconds of the job's process: on its one thread, its time on an idle core whatever else the machine
    runs (None in results made before it was recorded)."""


@dataclass
class SynthBenchResults:
    settings: SynthBenchSettings
    runs: list[SynthBenchRun]
    model_stats: dict[str, float]
    wall_seconds: float
    environment: dict[str, str]

    def values(self, arm: str, metric: str, l0: int | None = None) -> dict[int, float]:
        """{seed: value} of one arm's metric at one L0 (default: the first)."""
        l0 = self.settings.l0s[0] if l0 is None else l0
        return {
            r.seed: r.metrics[metric] for r in self.runs if r.arm == arm and r.l0_target == l0 and metric in r.metrics
        }

    def paired_delta(self, arm: str, base: str, metric: str, l0: int | None = None) -> tuple[float, float, int]:
        """Mean and standard error over seeds of (arm - base), paired by seed; (nan, nan, 0) without pairs."""
        a, b = self.values(arm, metric, l0), self.values(base, metric, l0)
        d = [a[s] - b[s] for s in a if s in b]
        if not d:
            return math.nan, math.nan, 0
        mean = sum(d) / len(d)
        se = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d)) if len(d) > 1 else math.nan
        return mean, se, len(d)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SynthBenchResults:
        s = dict(data["settings"])
        s["arms"] = tuple(Arm(a["name"], a["architecture"], a["overrides"]) for a in s["arms"])
        s["seeds"], s["l0s"] = tuple(s["seeds"]), tuple(s["l0s"])
        runs = [SynthBenchRun(**r) for r in data["runs"]]
        return cls(SynthBenchSettings(**s), runs, data["model_stats"], data["wall_seconds"], data["environment"])

    @classmethod
    def merge(cls, parts: Sequence[SynthBenchResults]) -> SynthBenchResults:
        """One result from runs of the same config made separately (e.g. one process per seed): arms, seeds and
        L0s are the union, in first-seen order; a (arm, seed, L0) measured twice is an error."""
        if not parts:
            raise ValueError("nothing to merge")
        configs = {p.settings.config for p in parts}
        if len(configs) > 1:
            raise ValueError(f"cannot merge results of different configs: {sorted(configs)}")
        arms: dict[str, Arm] = {}
        seeds: dict[int, None] = {}
        l0s: dict[int, None] = {}
        runs: list[SynthBenchRun] = []
        for p in parts:
            for a in p.settings.arms:
                if arms.setdefault(a.name, a) != a:
                    raise ValueError(f"arm {a.name!r} differs between the results")
            seeds.update(dict.fromkeys(p.settings.seeds))
            l0s.update(dict.fromkeys(p.settings.l0s))
            runs += p.runs
        keys = [(r.arm, r.seed, r.l0_target) for r in runs]
        if len(set(keys)) != len(keys):
            raise ValueError("a (arm, seed, L0) appears in more than one result")
        first = parts[0]
        base = {f.name: getattr(first.settings, f.name) for f in fields(first.settings)}
        base.update(arms=tuple(arms.values()), seeds=tuple(seeds), l0s=tuple(l0s))
        settings = SynthBenchSettings(**base)
        wall = sum(p.wall_seconds for p in parts)
        return cls(settings, runs, first.model_stats, wall, first.environment)

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings.to_dict(),
            "runs": [r.__dict__ for r in self.runs],
            "model_stats": self.model_stats,
            "wall_seconds": self.wall_seconds,
            "environment": self.environment,
        }


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence SAELens's tqdm bars (the orthogonalisation and the trainer write to stderr)."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def build_model(scale: SynthBenchScale, device: str = "cpu", seed: int | None = None) -> Any:
    """The scale's ``SyntheticModel`` (SAELens builds it from the config; it depends on the model seed only)."""
    from sae_lens.synthetic.synthetic_model import SyntheticModel

    with quiet():
        return SyntheticModel(scale.model_config(seed), device=device)


def hierarchy_pairs(model: Any) -> list[tuple[int, list[int]]]:
    """(parent feature, [child features]) for every node of the model's hierarchy that has children."""
    out: list[tuple[int, list[int]]] = []
    stack = list(model.hierarchy.roots) if getattr(model, "hierarchy", None) is not None else []
    while stack:
        node = stack.pop()
        kids = [c for c in node.children if c.feature_index is not None]
        if node.feature_index is not None and kids:
            out.append((int(node.feature_index), [int(c.feature_index) for c in kids]))
        stack.extend(node.children)
    return sorted(out)


def build_sae_config(arm: Arm, scale: SynthBenchScale, l0: int, device: str) -> Any:
    """The arm's training config at this scale: d_in, d_sae, k = L0 (TopK family; matching pursuit's iteration cap),
    Matryoshka widths, then the arm's overrides. Architectures without such a field (standard, jumprelu, gated) keep
    their own sparsity coefficients: their L0 is reported, not matched."""
    from sae_lens.registry import get_sae_training_class

    cfg_cls = get_sae_training_class(arm.architecture)[1]
    names = {f.name for f in fields(cfg_cls)}
    kwargs: dict[str, Any] = {"d_in": scale.hidden_dim, "d_sae": scale.d_sae, "device": device}
    if "k" in names:
        kwargs["k"] = l0
    if "max_iterations" in names:  # matching pursuit: L0 ceiling, as in the SynthSAEBench experiments
        kwargs["max_iterations"] = l0
    if "matryoshka_widths" in names:
        # the outer level is the full width (SAELens appends it with a warning when it is missing)
        kwargs["matryoshka_widths"] = [*(w for w in scale.matryoshka_widths if w < scale.d_sae), scale.d_sae]
    if "use_matryoshka_aux_loss" in names and scale.matryoshka_aux_loss:
        kwargs["use_matryoshka_aux_loss"] = True
    unknown = sorted(set(arm.overrides) - names)
    if unknown:
        raise ValueError(f"arm {arm.name!r}: {arm.architecture} has no field(s) {', '.join(unknown)}")
    kwargs.update(arm.overrides)
    return cfg_cls(**kwargs)


def runner_config(settings: SynthBenchSettings, sae_cfg: Any, scale: SynthBenchScale) -> Any:
    from sae_lens import LoggingConfig
    from sae_lens.synthetic.synthetic_sae_runner import SyntheticSAERunnerConfig

    cuda = settings.device.startswith("cuda")
    # settings are resolved: every budget is filled in from the scale
    assert settings.training_samples is not None and settings.eval_samples is not None and settings.lr is not None
    return SyntheticSAERunnerConfig(
        synthetic_model=scale.model_config(settings.model_seed),
        sae=sae_cfg,
        training_samples=settings.training_samples,
        batch_size=scale.batch_size,
        lr=settings.lr,
        lr_warm_up_steps=settings.lr_warm_up_steps or 0,
        lr_decay_steps=settings.lr_decay_steps or 0,
        device=settings.device,
        autocast_sae=cuda,
        autocast_data=cuda,
        eval_samples=settings.eval_samples,
        dead_feature_window=settings.dead_feature_window or scale.dead_feature_window,
        output_path=None,
        checkpoint_path=None,
        logger=LoggingConfig(log_to_wandb=False),
    )


@torch.no_grad()
def heldout_metrics(sae: Any, model: Any, feats: torch.Tensor, pairs: list[tuple[int, list[int]]]) -> dict[str, float]:
    """Absorption on the hierarchy and latent frequencies on a held-out batch of true feature activations."""
    sae.eval()
    hidden = model.feature_dict(feats)
    latents = sae.encode(hidden.to(sae.W_dec.dtype))
    freq = (latents != 0).float().mean(0)
    res = absorption_scores(latents, sae.W_dec, feats, model.feature_dict.feature_vectors, pairs)
    n = latents.shape[0]
    return {
        **{k: v for k, v in res.metrics().items() if k in ("absorption_score", "absorption_frac")},
        "absorption_pairs": float(len(res.pairs)),
        # A latent that fires on fewer than 1 in 10,000 held-out rows is silenced (dead ones included).
        "rare_latents": float((freq * n < max(n / 10_000, 1)).sum()),
        "max_latent_freq": float(freq.max()),
    }


def eval_metrics(result: Any) -> dict[str, float]:
    e = result.final_eval
    c = e.classification
    return {
        "f1": c.f1_score, "mcc": e.mcc, "uniqueness": e.uniqueness, "explained_variance": e.explained_variance,
        "l0": e.sae_l0, "dead_latents": float(e.dead_latents), "precision": c.precision, "recall": c.recall,
        "shrinkage": e.shrinkage, "true_l0": e.true_l0,
    }  # fmt: skip


def stream_cache(settings: SynthBenchSettings, scale: SynthBenchScale) -> Path | None:
    """The cache folder of this scale's synthetic model: keyed by a hash of its config and the SAELens version."""
    if settings.cache_dir is None:
        return None
    from importlib.metadata import version

    spec = json.dumps([scale.model_config(settings.model_seed).to_dict(), version("sae-lens")], sort_keys=True)
    return Path(settings.cache_dir) / f"{scale.name}-{hashlib.sha256(spec.encode()).hexdigest()[:16]}"


def model_stats(model: Any, pairs: list[tuple[int, list[int]]]) -> dict[str, float]:
    """Size of the ground truth and how far its directions are from orthogonal (mean over features of the largest
    |cos| with another feature, in row blocks: no n x n matrix at 16k features)."""
    fv = torch.nn.functional.normalize(model.feature_dict.feature_vectors.detach().float(), dim=1)
    n, block = fv.shape[0], 2048
    best = []
    for i in range(0, n, block):
        cos = (fv[i : i + block] @ fv.T).abs()
        rows = torch.arange(cos.shape[0], device=cos.device)
        cos[rows, rows + i] = 0
        best.append(cos.max(1).values)
    return {
        "num_features": float(n),
        "hierarchy_parents": float(len(pairs)),
        "gt_max_cos_mean": float(torch.cat(best).mean()),
    }


def environment() -> dict[str, str]:
    from importlib.metadata import version

    return {"python": platform.python_version(), "torch": torch.__version__, "sae_lens": version("sae-lens"),
            "machine": platform.machine(), "torch_threads_per_job": "1"}  # fmt: skip
