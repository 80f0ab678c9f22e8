"""``OrthoConfig``: the ortho fields shared by every ``*_ortho`` architecture, validated at construction.

Each seed method is a setting of these fields (see ``sae_lens_ortho.presets``). Field docstrings say what each
does; bad values raise ``ValueError`` naming the field and its allowed range when the config is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from sae_lens.constants import DTYPE_MAP
from sae_lens.registry import get_sae_class, get_sae_training_class
from sae_lens.saes.sae import SAEConfig, TrainingSAEConfig

from sae_lens_ortho.core.pairs import MAX_DENSE_FEATURES

__all__ = ["OrthoConfig", "is_ortho_training_cfg", "ortho_field_names"]


FLOAT32_MAX = float(np.finfo(np.float32).max)
"""Largest magnitude of any number field: they all enter float32 tensors (10**400 is not even a float64)."""
MAX_COEFFICIENT = 1e6
"""Largest loss coefficient: a penalty term is coefficient x (a cosine in [0, 1]) x E||x||^2, so far beyond this the
float32 loss overflows and the step is refused as if the batch were non-finite."""
MAX_COUNT = 2**31 - 1
"""Largest integer field (steps, sizes, counts): they enter int32/int64 tensors and step counters."""


def _check_number(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False) -> None:
    """Raise ValueError naming the field and its allowed range unless low <= value <= high, finite in float32
    (|value| <= FLOAT32_MAX), and not bool."""
    lo = "(" if low_open else "["
    hi = "]" if math.isfinite(high) else ")"
    allowed = f"{lo}{low}, {high if math.isfinite(high) else 'inf'}{hi}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        finite = ok and math.isfinite(value) and abs(value) <= FLOAT32_MAX
    except OverflowError:  # an int too large for a float (10**400)
        finite = False
    if not (finite and (value > low if low_open else value >= low) and value <= high):
        beyond = (
            " (at most 3.4e38: it enters float32 tensors)" if ok and not finite and hi == ")" and value == value else ""
        )
        raise ValueError(f"{name} must be a finite number in {allowed}{beyond}, got {_short_repr(value)}")


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def _plain_numbers(cfg: Any) -> None:
    """Replace NumPy scalars (np.float32(0.5), np.int64(8), np.bool_) and 0-d arrays in any field of ``cfg`` by the
    Python value they hold: they are valid values, and cfg.json must stay plain JSON. Larger arrays are refused
    here, naming the field (they used to reach a comparison: "truth value of an array is ambiguous")."""
    for f in fields(cfg):
        value = getattr(cfg, f.name, None)
        if isinstance(value, np.ndarray):
            if value.ndim != 0:
                raise ValueError(f"{f.name} must be a single value, got an array of shape {value.shape}")
            value = value[()]
        if isinstance(value, np.generic) and isinstance(value, (np.number, np.bool_)):
            setattr(cfg, f.name, value.item())


def _check_int(name: str, value: Any, *, low: int, high: int = MAX_COUNT) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer >= {low} (at most {high:,}), got {_short_repr(value)}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(kw_only=True)
class OrthoConfig:
    """Ortho fields shared by every ``*_ortho`` architecture. Mixed in *before* the base training config.

    Off by default (``ortho_coefficient=0``): with default fields an ``*_ortho`` twin trains exactly like its
    base, because no penalty setting we measured did no harm at every scale (docs/synthbench.md). Setting
    ``ortho_coefficient`` turns on the form the other defaults describe: the decoder overlap of the most co-active
    latent pairs (the top 0.1% pairs by activation cosine, mean cos^2 of their unit decoder rows, in units of
    E||x||^2; ``ortho_coefficient=0.1`` is the recipe ``coactive_decoder_topk``). The seed papers' penalty on the
    activations themselves is ``ortho_target="activations"`` (their presets set it).

    Args:
        ortho_coefficient (float): weight of the selective penalty (>= 0), warmed up over ortho_warm_up_steps.
        ortho_warm_up_steps (int): steps over which ortho_coefficient rises linearly from 0 (>= 0).
        ortho_pair_fraction (float): fraction p in (0, 1] of the n(n-1)/2 feature pairs penalised per batch,
            the ceil(p n(n-1)/2) pairs with the largest activation cosine.
        ortho_weighting (str): per-pair penalty: abs |C|, squared C^2, hinge ReLU(|C| - ortho_tau), scaled |C|^2/ortho_tau.
        ortho_tau (float): threshold of hinge (in [0, 1]) or r_thresh of scaled (in (0, 1]).
        ortho_decoder_coefficient (float): weight of the all-pairs decoder orthogonality penalty (>= 0; 0 = off).
        ortho_decoder_reduction (str): mean (over the n(n-1) ordered pairs) or sum of (d_i.d_j)^2.
        ortho_method (str): pair selection: sparse (co-firing pairs), dense (chunked scan), or auto.
        ortho_chunk_size (int): feature columns per chunk of the dense scan (>= 1).

    The attribute docstrings below say the same at more length.
    """

    ortho_coefficient: float = 0.0
    """Weight of the selective penalty on the chosen pairs (>= 0; 0 = off, the default: see the class docstring).
    With the default ``ortho_scale="input_energy"`` it is in units of E||x||^2, so 0.1 means a mean cos^2 of 1
    costs as much as 10% of the input's variance. The trainer ramps it in over ``ortho_warm_up_steps`` through SAELens's
    coefficient warm-up; logged as ``details/ortho_coefficient``."""

    ortho_warm_up_steps: int = 0
    """Steps over which ``ortho_coefficient`` rises linearly from 0 (integer >= 0)."""

    ortho_pair_fraction: float = 0.001
    """Fraction p of the n(n-1)/2 feature pairs penalised each batch, in (0, 1]: the ceil(p*n(n-1)/2) pairs
    with the largest activation cosine C_ij (fewer if fewer pairs co-fire). 0.001 is seed 000/002's 0.1%."""

    ortho_weighting: Literal["abs", "squared", "hinge", "scaled"] = "squared"
    """How a selected pair is penalised: ``abs`` mean |C_ij| (seeds 001, 004); ``squared`` mean C_ij^2;
    ``hinge`` mean ReLU(|C_ij| - ortho_tau) (seed 002); ``scaled`` mean |C_ij|^2 / ortho_tau, seed 000's
    tau_ij = tau_base |r_ij| / r_thresh with ortho_tau = r_thresh and tau_base = ortho_coefficient."""

    ortho_tau: float = 0.5
    """Threshold for ``hinge`` (in [0, 1]) or r_thresh for ``scaled`` (in (0, 1]); unused by abs/squared."""

    ortho_select_by: Literal["activations", "decoder"] = "activations"
    """How the penalised pairs are chosen. ``activations`` (the seeds): the top-p pairs by activation cosine C_ij
    of the batch (co-firing pairs; exact). ``decoder``: the top-p pairs by cosine of their unit decoder rows,
    the most overlapping directions whether or not they fire together (exact chunked scan, O(n^2 d), refreshed
    every ``ortho_select_every`` steps); needs ortho_target="decoder"."""

    ortho_select_every: int = 1
    """With ortho_select_by="decoder": re-select the pairs every this many steps (integer >= 1); between
    selections the same pairs are penalised at their current cosines."""

    ortho_scale: Literal["none", "input_energy"] = "input_energy"
    """Units of the ortho losses. ``none``: coefficient x penalty (the seeds' form; how much that weighs against
    the reconstruction loss depends on the activations' scale). ``input_energy``: coefficient x penalty x the
    batch's mean squared input norm E||x||^2 (no gradient), the unit in which SAELens's mse_loss is FVU x
    E||x||^2; a coefficient then means the same on any model, layer and normalisation."""

    ortho_target: Literal["activations", "decoder"] = "decoder"
    """What the penalty on the selected pairs acts on. ``activations`` (the seeds): phi(C_ij) of the activation
    cosine, with gradients through the activations; a latent that stops firing has C_ij = 0, so silencing
    latents lowers it. ``decoder``: the pairs are still chosen by C_ij, but the penalty is phi(cos(d_i, d_j)) of
    their unit decoder rows, with gradients into the decoder only: co-firing latents are pushed to different
    directions and nothing rewards a latent for firing less."""

    ortho_decoder_coefficient: float = 0.0
    """Weight of the decoder-orthogonality penalty over *all* pairs of unit decoder rows (>= 0; 0 = off),
    computed exactly through the Gram identity in O(n d^2) (seed 003)."""

    ortho_decoder_reduction: Literal["mean", "sum"] = "mean"
    """``mean``: the penalty is the mean of (d^_i.d^_j)^2 over the n(n-1) ordered pairs, so a coefficient
    transfers across dictionary sizes. ``sum``: the raw sum_{i != j} of seed 003 (grows like n^2/d)."""

    ortho_method: Literal["auto", "sparse", "dense"] = "auto"
    """Pair-selection algorithm: ``sparse`` (co-firing pairs only, O(b k^2), for TopK-like activations),
    ``dense`` (chunked Gram scan, memory bounded by ``ortho_chunk_size`` x d_sae), ``auto`` picks by cost."""

    ortho_chunk_size: int = 512
    """Feature columns per chunk of the dense scan (integer >= 1; seed 000 uses 512)."""

    # --- which selected pairs count (seed 004) ------------------------------------------------------------
    ortho_pair_filter: Literal["top_fraction", "zscore"] = "top_fraction"
    """``top_fraction``: the top-p pairs. ``zscore`` (seed 004): rank the top k = max(ortho_min_pairs,
    ceil(p N)) pairs and keep only those with C_ij > mu + ortho_z * sigma, mu and sigma the exact mean and
    standard deviation of C over all N = n(n-1)/2 pairs (computed without an n x n matrix)."""

    ortho_z: float = 2.0
    """z of the ``zscore`` filter (>= 0; seed 004: 2)."""

    ortho_min_pairs: int = 0
    """Minimum number of ranked pairs, k = max(ortho_min_pairs, ceil(p N)) (integer >= 0; seed 004: 10)."""

    # --- adaptive strength (seeds 001, 002, 004) -----------------------------------------------------------
    ortho_adaptive: Literal["none", "recon", "threshold", "momentum"] = "none"
    """``none``: fixed. ``recon`` (seed 001): a strength s multiplies the penalty and follows
    s <- clip(s * ortho_target_recon_loss / L_recon, ortho_strength_min, ortho_strength_max) after each step.
    ``threshold`` (seed 002): the hinge threshold is tau_t = mu_t + sigma_t of all pair correlations of the
    batch (needs ortho_weighting="hinge"). ``momentum`` (seed 004): s <- clip(a s + (1 - a) s cbar /
    ortho_target_corr, min, max) with a = ortho_momentum and cbar the mean |C| of the valid selected pairs.
    s lives in the ``ortho_strength`` buffer (saved in checkpoints) and is logged as metrics/ortho_strength."""

    ortho_strength_init: float = 0.05
    """Initial strength s for ``recon`` / ``momentum`` (in [ortho_strength_min, ortho_strength_max]; seed 001: 0.05)."""

    ortho_strength_min: float = 0.01
    """Lower clip of s (> 0; seeds 001 and 004: 0.01)."""

    ortho_strength_max: float = 0.2
    """Upper clip of s (>= ortho_strength_min; seed 001: 0.2, seed 004: 0.5)."""

    ortho_target_recon_loss: float = 0.0
    """L_target of ``recon``, in the units of SAELens's mse_loss (squared error summed over d_in, averaged over
    tokens); must be > 0 when ortho_adaptive="recon"."""

    ortho_momentum: float = 0.9
    """a of ``momentum`` (in [0, 1); seed 004: 0.9)."""

    ortho_target_corr: float = 0.1
    """c_target of ``momentum`` (in (0, 1]; seed 004: 0.1)."""

    # --- decoder penalty variants (seed 003 and an OrtSAE-style anchor) ------------------------------------
    ortho_decoder_penalty: Literal["gram", "grouped", "chunk_max"] = "gram"
    """``gram``: sum over all pairs (exact Gram identity). ``grouped`` (seed 003's batch-wise feature grouping):
    features are assigned each step to the nearest of ``ortho_groups`` EMA centroids of their decoder
    directions and penalised only within their group (exact per-group Gram identity; sizes logged).
    ``chunk_max`` (OrtSAE-style): mean over features of the largest cos^2 with another feature of the same
    random chunk, ``ortho_decoder_chunks`` chunks re-drawn each step (its own mean; ignores the reduction)."""

    ortho_decoder_start: float | None = None
    """If set (>= 0), the decoder coefficient is annealed linearly from this value to
    ``ortho_decoder_coefficient`` over ``ortho_decoder_warm_up_steps`` (seed 003: from 1.0)."""

    ortho_decoder_warm_up_steps: int = 0
    """Steps of that anneal (integer >= 0; seed 003: 1000)."""

    ortho_groups: int = 8
    """Number of groups G of ``grouped`` (integer >= 1, at most d_sae; seed 003: 8)."""

    ortho_group_decay: float = 0.99
    """EMA decay of the group centroids (in [0, 1))."""

    ortho_decoder_chunks: int = 4
    """Number of random feature chunks K of ``chunk_max`` (integer >= 1)."""

    # --- training-time normalisation and sparsity (seeds 001, 002, 004) -------------------------------------
    ortho_unit_norm_decoder: bool = False
    """Rescale decoder rows to unit norm before every step, i.e. after every optimizer update (seeds 001, 002),
    without touching SAELens's trainer; the saved SAE folds the norms so it computes the same function."""

    ortho_l1_target_rate: float | None = None
    """If set (in (0, 1]), the L1 coefficient of an ``l1`` architecture (``standard``) adapts so the fraction
    of active features approaches this rate: l1 <- clip(l1 * (rate/target)^ortho_l1_step_size, 0.01, 0.2)
    (seed 004: lambda_1 in [0.01, 0.2], 10% activation). Starts from l1_coefficient clipped to that range."""

    ortho_l1_step_size: float = 0.1
    """Step of that controller in log(lambda_1) per unit of log(rate / target) (> 0)."""

    # --- encoder options that change inference (seeds 000, 004; standard_ortho only) -----------------------
    ortho_encoder_layer_norm: bool = False
    """Seed 000's encoder f = ReLU(LayerNorm(W_e x + b_e)): a LayerNorm (learnable affine, eps 1e-5) over the
    d_sae pre-activations. standard_ortho only. It changes inference, so the SAE saves as architecture
    ``standard_ortho`` and loads only where ``sae_lens_ortho`` is imported."""

    ortho_competition_gamma: float = 0.0
    """Seed 004's local competition: inside a feature's co-activation neighbourhood, an active feature with a
    strictly stronger active competitor is scaled by (1 - gamma) (in [0, 1); seed 004: 0.3; 0 = off).
    standard_ortho only; changes inference like ``ortho_encoder_layer_norm``."""

    ortho_competition_radius: int = 32
    """r_max: neighbours kept per feature in the sparse co-activation history (integer >= 1; seed 004: 32)."""

    ortho_competition_threshold: float = 0.1
    """theta_coact: j is in i's neighbourhood when the EMA co-firing rate H_ij exceeds it (in [0, 1])."""

    ortho_competition_decay: float = 0.99
    """beta of the co-activation history EMA (in [0, 1); seed 004: 0.99)."""

    # --- dictionary management (seed 004) ------------------------------------------------------------------
    ortho_manage_every: int = 0
    """Check for features to re-initialise or prune every this many steps (integer >= 0; 0 = off; seed 004:
    100). Chosen features get a random direction and their Adam moments zeroed before the next step."""

    ortho_importance_decay: float = 0.99
    """beta of the importance EMA I_i of each feature's batch RMS activation (in [0, 1); seed 004: 0.99)."""

    ortho_realloc_threshold: float = 0.01
    """theta_act: a feature with I_i below it for ``ortho_realloc_steps`` consecutive steps is re-initialised
    (>= 0; seed 004: 0.01)."""

    ortho_realloc_steps: int = 1000
    """T_realloc in steps (integer >= 1; seed 004 does not give it: its 1000-step window)."""

    ortho_prune_threshold: float = 0.8
    """theta_corr: a feature whose largest selected-pair |C_ij| exceeds it for ``ortho_prune_steps``
    consecutive steps is pruned (its slot re-initialised) unless protected (in (0, 1]; seed 004: 0.8)."""

    ortho_prune_steps: int = 1000
    """T_prune in steps (integer >= 1; seed 004 does not give it: its 1000-step window)."""

    ortho_prune_protect_quantile: float = 0.9
    """Features with importance above this quantile are never pruned (in [0, 1]; seed 004: 0.9)."""

    # --- memory (seed 000) ---------------------------------------------------------------------------------
    ortho_micro_batch_size: int | None = None
    """If set (integer >= 1), each training batch is processed in micro-batches of this many rows with
    gradient accumulation; the gradient equals the full batch's (the ortho penalty still sees the whole
    batch). Not for BatchTopK, whose encoder ranks across the batch."""

    ortho_base_architecture: ClassVar[str]

    def __post_init__(self) -> None:
        _plain_numbers(self)
        self._check_base_fields()
        _check_number("ortho_coefficient", self.ortho_coefficient, low=0, high=MAX_COEFFICIENT)
        _check_int("ortho_warm_up_steps", self.ortho_warm_up_steps, low=0)
        _check_number("ortho_pair_fraction", self.ortho_pair_fraction, low=0, high=1, low_open=True)
        _check_choice("ortho_weighting", self.ortho_weighting, ("abs", "squared", "hinge", "scaled"))
        if self.ortho_weighting == "scaled":
            _check_number("ortho_tau", self.ortho_tau, low=0, high=1, low_open=True)
        else:
            _check_number("ortho_tau", self.ortho_tau, low=0, high=1)
        _check_choice("ortho_target", self.ortho_target, ("activations", "decoder"))
        _check_choice("ortho_scale", self.ortho_scale, ("none", "input_energy"))
        _check_choice("ortho_select_by", self.ortho_select_by, ("activations", "decoder"))
        _check_int("ortho_select_every", self.ortho_select_every, low=1)
        if self.ortho_select_by == "decoder":
            if self.ortho_target != "decoder":
                raise ValueError(
                    f"ortho_select_by='decoder' chooses pairs by their decoder rows and needs ortho_target='decoder', "
                    f"got ortho_target={self.ortho_target!r}"
                )
            uses_activation_pairs = {
                "ortho_pair_filter": self.ortho_pair_filter != "top_fraction",
                "ortho_adaptive": self.ortho_adaptive in ("threshold", "momentum"),
                "ortho_manage_every": self.ortho_manage_every > 0,
            }
            bad = [name for name, used in uses_activation_pairs.items() if used]
            if bad:
                raise ValueError(
                    f"{', '.join(bad)} read the activation correlations of the selected pairs; with "
                    "ortho_select_by='decoder' use ortho_pair_filter='top_fraction', ortho_adaptive in (none, recon) "
                    "and ortho_manage_every=0"
                )
        _check_number("ortho_decoder_coefficient", self.ortho_decoder_coefficient, low=0, high=MAX_COEFFICIENT)
        _check_choice("ortho_decoder_reduction", self.ortho_decoder_reduction, ("mean", "sum"))
        _check_choice("ortho_method", self.ortho_method, ("auto", "sparse", "dense"))
        _check_int("ortho_chunk_size", self.ortho_chunk_size, low=1)
        self._check_sizes()
        self._check_seed_mechanisms()
        super().__post_init__()  # type: ignore[misc]

    def _check_base_fields(self) -> None:
        """SAELens's own fields, which its configs take unchecked (a bad one failed inside training)."""
        _check_int("d_in", getattr(self, "d_in", None), low=1)
        _check_int("d_sae", getattr(self, "d_sae", None), low=1)
        dtype = getattr(self, "dtype", "float32")
        if not isinstance(dtype, torch.dtype) and dtype not in DTYPE_MAP:
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_MAP)}; got {_short_repr(dtype)}")
        device = getattr(self, "device", "cpu")
        try:
            ok = isinstance(device, (str, torch.device)) and torch.device(device) is not None
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"device must be a torch device string such as 'cpu', 'cuda' or 'cuda:1'; got {device!r}")

    def _check_sizes(self) -> None:
        """Sizes that would otherwise fail at the first step: k beyond d_sae, and a dense scan (of activations or
        of decoder rows) of more features than its 32-bit pair keys can index (``auto`` never picks it there)."""
        d_sae = self.d_sae  # type: ignore[attr-defined]  # an int >= 1 (_check_base_fields)
        if hasattr(self, "k"):
            # BatchTopK's k is a mean per row (k x batch are kept), so it may be fractional; TopK's goes to topk().
            fractional = "batchtopk" in self.ortho_base_architecture
            kind = (int, float) if fractional else int
            k = self.k  # type: ignore[attr-defined]
            ok = isinstance(k, kind) and not isinstance(k, bool) and (isinstance(k, int) or math.isfinite(k))
            if not (ok and 0 < k <= d_sae):
                what = "a number" if fractional else "an integer"
                raise ValueError(
                    f"k must be {what} in (0, d_sae={d_sae}] (active latents per row), got {_short_repr(k)}"
                )
        # SAELens refuses empty matryoshka widths only when the SAE is built, after the model has loaded.
        if getattr(self, "matryoshka_widths", None) == []:
            raise ValueError(
                f"matryoshka_widths is empty: give the nested dictionaries' widths, increasing up to d_sae={d_sae} "
                f"(e.g. matryoshka_widths=[{max(1, d_sae // 16)}, {max(1, d_sae // 4)}, {d_sae}]; CLI: --matryoshka_widths "
                f"{max(1, d_sae // 16)} {max(1, d_sae // 4)} {d_sae})"
            )
        if self.ortho_select_by == "decoder" and d_sae > MAX_DENSE_FEATURES:
            raise ValueError(
                f"ortho_select_by='decoder' scans the decoder's pairs with 32-bit keys and supports d_sae <= "
                f"{MAX_DENSE_FEATURES}, got d_sae={d_sae}; use ortho_select_by='activations' (co-firing pairs, any d_sae)"
            )
        if self.ortho_method == "dense" and d_sae > MAX_DENSE_FEATURES:
            raise ValueError(
                f"ortho_method='dense' supports d_sae <= {MAX_DENSE_FEATURES} (its pair keys are 32-bit), got "
                f"d_sae={d_sae}; use ortho_method='sparse' or 'auto' (which picks the co-firing path there)"
            )

    def _check_seed_mechanisms(self) -> None:
        _check_choice("ortho_pair_filter", self.ortho_pair_filter, ("top_fraction", "zscore"))
        _check_number("ortho_z", self.ortho_z, low=0)
        _check_int("ortho_min_pairs", self.ortho_min_pairs, low=0)
        _check_choice("ortho_adaptive", self.ortho_adaptive, ("none", "recon", "threshold", "momentum"))
        _check_number("ortho_strength_min", self.ortho_strength_min, low=0, low_open=True)
        _check_number("ortho_strength_max", self.ortho_strength_max, low=0, low_open=True)
        if self.ortho_strength_min > self.ortho_strength_max:  # name the pair: either may be the one to change
            raise ValueError(
                f"ortho_strength_min ({self.ortho_strength_min}) must be <= ortho_strength_max "
                f"({self.ortho_strength_max})"
            )
        _check_number(
            "ortho_strength_init", self.ortho_strength_init, low=self.ortho_strength_min, high=self.ortho_strength_max
        )
        if self.ortho_adaptive == "recon":
            _check_number("ortho_target_recon_loss", self.ortho_target_recon_loss, low=0, low_open=True)
        else:
            _check_number("ortho_target_recon_loss", self.ortho_target_recon_loss, low=0)
        if self.ortho_adaptive == "threshold" and self.ortho_weighting != "hinge":
            raise ValueError(
                f"ortho_adaptive='threshold' sets the hinge threshold: it needs ortho_weighting='hinge', "
                f"got {self.ortho_weighting!r}"
            )
        _check_number("ortho_momentum", self.ortho_momentum, low=0, high=1)
        if self.ortho_momentum == 1:
            raise ValueError("ortho_momentum must be a finite number in [0, 1), got 1")
        _check_number("ortho_target_corr", self.ortho_target_corr, low=0, high=1, low_open=True)
        _check_choice("ortho_decoder_penalty", self.ortho_decoder_penalty, ("gram", "grouped", "chunk_max"))
        if self.ortho_decoder_start is not None:
            _check_number("ortho_decoder_start", self.ortho_decoder_start, low=0, high=MAX_COEFFICIENT)
        _check_int("ortho_decoder_warm_up_steps", self.ortho_decoder_warm_up_steps, low=0)
        d_sae = getattr(self, "d_sae", None)
        _check_int("ortho_groups", self.ortho_groups, low=1)
        if self.ortho_decoder_penalty == "grouped" and isinstance(d_sae, int) and self.ortho_groups > d_sae:
            raise ValueError(f"ortho_groups must be an integer in [1, d_sae={d_sae}], got {self.ortho_groups}")
        _check_number("ortho_group_decay", self.ortho_group_decay, low=0, high=1)
        if self.ortho_group_decay == 1:
            raise ValueError("ortho_group_decay must be a finite number in [0, 1), got 1")
        _check_int("ortho_decoder_chunks", self.ortho_decoder_chunks, low=1)
        if not isinstance(self.ortho_unit_norm_decoder, bool):
            raise ValueError(f"ortho_unit_norm_decoder must be True or False, got {self.ortho_unit_norm_decoder!r}")
        if self.ortho_unit_norm_decoder and getattr(self, "rescale_acts_by_decoder_norm", None) is False:
            # TopK-family SAEs can only fold decoder norms when they rescale by them (SAELens refuses otherwise).
            raise ValueError(
                "ortho_unit_norm_decoder=True needs rescale_acts_by_decoder_norm=True on a TopK-family SAE "
                "(allowed: rescale_acts_by_decoder_norm=True, or ortho_unit_norm_decoder=False)"
            )
        if self.ortho_l1_target_rate is not None:
            _check_number("ortho_l1_target_rate", self.ortho_l1_target_rate, low=0, high=1, low_open=True)
            if not hasattr(self, "l1_coefficient"):
                raise ValueError(
                    "ortho_l1_target_rate needs an architecture with an L1 coefficient (e.g. standard_ortho); "
                    f"{self.ortho_base_architecture!r} has none"
                )
        _check_number("ortho_l1_step_size", self.ortho_l1_step_size, low=0, low_open=True)
        self._check_encoder_options()
        self._check_management()

    def _check_encoder_options(self) -> None:
        if not isinstance(self.ortho_encoder_layer_norm, bool):
            raise ValueError(f"ortho_encoder_layer_norm must be True or False, got {self.ortho_encoder_layer_norm!r}")
        _check_number("ortho_competition_gamma", self.ortho_competition_gamma, low=0, high=1)
        if self.ortho_competition_gamma == 1:
            raise ValueError("ortho_competition_gamma must be a finite number in [0, 1), got 1")
        _check_int("ortho_competition_radius", self.ortho_competition_radius, low=1)
        _check_number("ortho_competition_threshold", self.ortho_competition_threshold, low=0, high=1)
        _check_number("ortho_competition_decay", self.ortho_competition_decay, low=0, high=1)
        if self.ortho_competition_decay == 1:
            raise ValueError("ortho_competition_decay must be a finite number in [0, 1), got 1")
        for name, on in (
            ("ortho_encoder_layer_norm", self.ortho_encoder_layer_norm),
            ("ortho_competition_gamma", self.ortho_competition_gamma > 0),
        ):
            if on and self.ortho_base_architecture != "standard":
                raise ValueError(
                    f"{name} changes the encoder and is available on standard_ortho only "
                    f"(this is {self.ortho_base_architecture}_ortho); leave it at its default here"
                )

    def _check_management(self) -> None:
        _check_int("ortho_manage_every", self.ortho_manage_every, low=0)
        _check_number("ortho_importance_decay", self.ortho_importance_decay, low=0, high=1)
        if self.ortho_importance_decay == 1:
            raise ValueError("ortho_importance_decay must be a finite number in [0, 1), got 1")
        _check_number("ortho_realloc_threshold", self.ortho_realloc_threshold, low=0)
        _check_int("ortho_realloc_steps", self.ortho_realloc_steps, low=1)
        _check_number("ortho_prune_threshold", self.ortho_prune_threshold, low=0, high=1, low_open=True)
        _check_int("ortho_prune_steps", self.ortho_prune_steps, low=1)
        _check_number("ortho_prune_protect_quantile", self.ortho_prune_protect_quantile, low=0, high=1)
        if self.ortho_micro_batch_size is not None:
            _check_int("ortho_micro_batch_size", self.ortho_micro_batch_size, low=1)
            if "batchtopk" in self.ortho_base_architecture:
                raise ValueError(
                    "ortho_micro_batch_size must be None on a BatchTopK SAE: its encoder ranks activations across "
                    "the whole batch, so micro-batches would change the result"
                )

    def get_inference_config_class(self) -> type[SAEConfig]:
        # Save as the base architecture's inference SAE (topk_ortho -> topk), so the result loads anywhere.
        base = get_sae_training_class(self.ortho_base_architecture)[1]
        if base.get_inference_config_class is TrainingSAEConfig.get_inference_config_class:
            return get_sae_class(self.ortho_base_architecture)[1]
        return base.get_inference_config_class(self)  # type: ignore[arg-type]


def is_ortho_training_cfg(cfg_dict: dict[str, Any]) -> bool:
    """Whether a saved cfg.json dict is an ortho *training* config (a checkpoint): only those carry ortho_* fields
    at the top level (a final SAE keeps them under metadata.training_architecture_details)."""
    return any(key.startswith("ortho_") for key in cfg_dict)


def ortho_field_names() -> list[str]:
    """Names of the ortho config fields, in declaration order."""
    return [f.name for f in fields(OrthoConfig)]
