"""The demo's settings and metric table, and what the run, the report and the command line share.

:class:`DemoSettings` (everything that defines a demo run), ``METRICS`` (label and valid range of every metric),
the mean ± std over seeds of a metric, and the settings <-> command-line mapping (``_cli_args`` reproduces a
settings object as flags; ``_field_docs`` reads the field docstrings for the report and ``--help``). Re-exported
by :mod:`sae_lens_ortho.evals.synthetic.run`.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class DemoSettings:
    """Everything that defines a demo run. Defaults are the embedded default demo (about 5 min on 2 idle CPU cores)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    """Training seeds. Each seed re-seeds SAE initialisation, the training stream and the held-out batches;
    the table shows mean ± std over seeds. The ground truth depends only on ``data_seed``."""

    architectures: tuple[str, ...] = ("topk", "topk_ortho")
    """Registered SAELens training architectures to compare (all trained at the same ``k``)."""

    # --- ground truth ---------------------------------------------------------------------------------
    data_seed: int = 1234
    """Seed of the ground truth (feature directions, which features are grouped / in the hierarchy)."""

    n_features: int = 64
    """Number of ground-truth features."""

    d_in: int = 32
    """Dimension of the synthetic activations (features are in superposition when n_features > d_in)."""

    firing_prob_max: float = 0.15
    """Firing probability of the most frequent feature; probabilities fall linearly to ``firing_prob_min``."""

    firing_prob_min: float = 0.03
    """Firing probability of the least frequent feature."""

    n_groups: int = 8
    """Number of groups of mutually correlated features (the features are assigned at random)."""

    group_size: int = 3
    """Features per correlated group."""

    group_correlation: float = 0.9
    """Correlation of the latent Gaussians inside a group (Gaussian copula), in [0, 1)."""

    n_parents: int = 4
    """Number of parent features of the hierarchy (drawn at random among the features not in a correlated group)."""

    children_per_parent: int = 2
    """Children of each parent: a child fires only when its parent fires (SAELens ``hierarchy_modifier``).
    n_groups * group_size + n_parents * (1 + children_per_parent) <= n_features."""

    child_given_parent: float = 0.4
    """P(child fires | parent fires), independently for each child. Parents keep their linear firing probability."""

    magnitude_mean: float = 1.0
    """Mean firing magnitude of every feature."""

    magnitude_std: float = 0.2
    """Standard deviation of the firing magnitude (folded at 0 by the generator's ReLU)."""

    # --- SAE and training -----------------------------------------------------------------------------
    d_sae: int = 64
    """SAE width (latents)."""

    k: int = 6
    """TopK k, the same for every architecture (the table's k)."""

    training_samples: int = 3_000_000
    """Training samples per SAE (steps = ceil(training_samples / batch_size))."""

    batch_size: int = 1024
    """Training batch size."""

    lr: float = 3e-3
    """Adam learning rate (constant, then linear decay over the last ``lr_decay_steps`` steps)."""

    lr_decay_steps: int = 1000
    """Steps of linear learning-rate decay to 0 at the end of training (``train_toy_sae``'s argument)."""

    sweep_ks: tuple[int, ...] = (4, 8)
    """Extra k values trained (for every architecture) only for the metrics-vs-L0 plot; not in the table."""

    sweep_seeds: int = 1
    """How many of ``seeds`` (the first ones) the ``sweep_ks`` runs use."""

    # --- ortho ----------------------------------------------------------------------------------------
    ortho_defaults: bool = False
    """Train every ``*_ortho`` architecture with its own default fields, ignoring the ``ortho_*`` settings below
    (how the do-no-harm figures of the defaults are measured on this ground truth)."""

    ortho_coefficient: float = 0.1
    """``topk_ortho``'s ``ortho_coefficient`` (OrthoConfig's default: 0.1 x E||x||^2 x the mean cos^2 of the
    selected pairs' decoder rows; the target and scale stay the architecture's defaults)."""

    ortho_pair_fraction: float = 0.05
    """``topk_ortho``'s ``ortho_pair_fraction`` p (with 64 latents, 0.05 selects 101 of the 2016 pairs)."""

    ortho_weighting: str = "squared"
    """``topk_ortho``'s ``ortho_weighting``."""

    ortho_warm_up_steps: int = 0
    """``topk_ortho``'s ``ortho_warm_up_steps``."""

    ortho_decoder_coefficient: float = 0.0
    """``topk_ortho``'s ``ortho_decoder_coefficient`` (0 = activation penalty only)."""

    # --- evaluation -----------------------------------------------------------------------------------
    eval_samples: int = 100_000
    """Held-out samples for ``eval_sae_on_synthetic_data``."""

    diag_samples: int = 16_384
    """Held-out samples for the absorption, pair and decoder diagnostics."""

    diag_pair_fraction: float | None = None
    """p of the top-pair diagnostic, the same for every model (None: ``ortho_pair_fraction``)."""

    duplicate_thresholds: tuple[float, ...] = (0.8, 0.9)
    """A latent has a near-duplicate decoder when max_{j != i} |cos(d_i, d_j)| exceeds the threshold."""

    absorption_drop_threshold: float = 0.5
    """A parent-child pair counts as absorbed when the parent latent's activation drop is at least this ..."""

    absorption_mix_threshold: float = 0.5
    """... and the child latent's parent share (beta / alpha) is at least this."""

    plots: bool = True
    """Write the PNG plots (needs matplotlib)."""

    # --- machine --------------------------------------------------------------------------------------
    device: str = "cpu"
    """Torch device for data, training and evaluation."""

    threads: int | None = 1
    """``torch.set_num_threads`` for the run (0 or None: leave torch's default). The matrices are tiny: one thread is
    about as fast as two and does not slow to a crawl when other processes share the cores."""

    progress: bool = True
    """Show tqdm progress bars."""

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        self.architectures = tuple(self.architectures)
        self.duplicate_thresholds = tuple(float(t) for t in self.duplicate_thresholds)
        self.sweep_ks = tuple(int(k) for k in self.sweep_ks)
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        if self.n_groups * self.group_size + self.n_parents * (1 + self.children_per_parent) > self.n_features:
            raise ValueError("n_groups * group_size + n_parents * (1 + children_per_parent) must be <= n_features")
        if self.n_parents < 0 or self.children_per_parent < 0:
            raise ValueError("n_parents and children_per_parent must be >= 0")
        if not 0 < self.child_given_parent <= 1:
            raise ValueError("child_given_parent must be in (0, 1]")
        if not 0 <= self.group_correlation < 1:
            raise ValueError("group_correlation must be in [0, 1)")
        if not 0 < self.firing_prob_min <= self.firing_prob_max < 1:
            raise ValueError("need 0 < firing_prob_min <= firing_prob_max < 1")
        for k in (self.k, *self.sweep_ks):
            if not 1 <= k <= self.d_sae:
                raise ValueError("need 1 <= k <= d_sae (k and every sweep k)")
        if self.sweep_seeds < 0:
            raise ValueError("sweep_seeds must be >= 0")
        if self.training_samples < self.batch_size:
            raise ValueError("training_samples must be >= batch_size")

    @property
    def diag_p(self) -> float:
        return self.ortho_pair_fraction if self.diag_pair_fraction is None else self.diag_pair_fraction

    @property
    def training_steps(self) -> int:
        return math.ceil(self.training_samples / self.batch_size)

    @property
    def extra_ks(self) -> tuple[int, ...]:
        """The sweep k values other than ``k`` (deduplicated, in order)."""
        return tuple(dict.fromkeys(k for k in self.sweep_ks if k != self.k))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Metric key -> (label, lower bound, upper bound, higher_is_better). Bounds are the metric's valid range
# (None: unbounded); they are checked by the tests. Order here is the table's row order.
METRICS: dict[str, tuple[str, float | None, float | None, bool | None]] = {
    "mcc": ("MCC (decoder vs truth, Hungarian)", 0.0, 1.0, True),
    "uniqueness": ("uniqueness", 0.0, 1.0, True),
    "precision": ("precision (latent on → its feature on)", 0.0, 1.0, True),
    "recall": ("recall (feature on → its latent on)", 0.0, 1.0, True),
    "f1": ("F1", 0.0, 1.0, True),
    "best_cos_grouped": ("best decoder |cos| per true feature, correlated groups", 0.0, 1.0, True),
    "best_cos_hierarchy": ("best decoder |cos| per true feature, hierarchy", 0.0, 1.0, True),
    "best_cos_independent": ("best decoder |cos| per true feature, independent", 0.0, 1.0, True),
    "explained_variance": ("explained variance", None, 1.0, True),
    "shrinkage": ("shrinkage |x_hat|/|x|", 0.0, None, None),
    "sae_l0": ("L0 (SAE)", 0.0, None, None),
    "true_l0": ("L0 (ground truth)", 0.0, None, None),
    "dead_latents": ("dead latents", 0.0, None, False),
    "absorption_score": ("absorption score, mean over parent–child pairs", 0.0, 1.0, False),
    "absorption_frac": ("fraction of parent–child pairs absorbed", 0.0, 1.0, False),
    "absorption_drop": ("parent-latent activation drop when the child fires", 0.0, 1.0, False),
    "absorption_mix": ("parent share in the child's latent (β/α, clipped)", 0.0, 1.0, False),
    "top_pair_corr": ("mean corr of top-p latent pairs", 0.0, 1.0, None),
    "top_pair_corr_max": ("max latent pair corr", 0.0, 1.0, None),
    "mean_pair_cosine": ("mean latent pair cosine (all pairs)", 0.0, 1.0, None),
    "decoder_max_cos_max": ("decoder max |cos|, max over latents", 0.0, 1.0, False),
    "decoder_max_cos_mean": ("decoder max |cos|, mean over latents", 0.0, 1.0, False),
    "frac_dup_0.8": ("frac latents with a decoder dup (|cos|>0.8)", 0.0, 1.0, False),
    "frac_dup_0.9": ("frac latents with a decoder dup (|cos|>0.9)", 0.0, 1.0, False),
    "train_seconds": ("train time (s)", 0.0, None, None),
}


def _mean_std(v: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def _field_docs() -> dict[str, str]:
    """Field docstrings of DemoSettings (the string literal after each field), read from the source."""
    import ast
    import inspect

    try:
        tree = ast.parse(inspect.getsource(DemoSettings))
    except (OSError, TypeError):  # pragma: no cover
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[node.target.id] = " ".join(str(nxt.value.value).split()).replace("|", "\\|")
    return docs


def _flag(name: str) -> str:
    return "--samples" if name == "training_samples" else "--" + name.replace("_", "-")


def _cli_args(s: DemoSettings) -> list[str]:
    """The flags that reproduce ``s`` from the defaults."""
    d = DemoSettings()
    args: list[str] = []
    for f in fields(DemoSettings):
        v, dv = getattr(s, f.name), getattr(d, f.name)
        if v == dv or f.name in ("progress",):
            continue
        if isinstance(v, tuple):
            args += [_flag(f.name), *[str(x) for x in v]]
        elif isinstance(v, bool):
            args.append(_flag(f.name) if v else "--no-" + _flag(f.name)[2:])
        else:
            args += [_flag(f.name), str(v)]
    return args
