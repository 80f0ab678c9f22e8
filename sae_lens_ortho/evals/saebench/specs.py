"""Constants, SAE specs and SAE loading for :mod:`sae_lens_ortho.evals.saebench.run`.

The suites and their aliases, SAEBench's ``eval_type_id`` per suite, the headline metrics, SAEBench's core
defaults; :class:`SaeSpec` (one SAE to evaluate), :func:`load_sae` (a local folder as an inference SAE, checkpoints
converted as the runner saves them), :func:`resolve_sae` and :func:`normalize_suites`. Everything here is
re-exported by :mod:`sae_lens_ortho.evals.saebench.run`.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUITES = (
    "core",
    "scr",
    "tpp",
    "absorption",
    "sparse_probing",
    "sae_probes",
    "autointerp",
    "unlearning",
    "ravel",
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
    "diagnostics": "diagnostics",  # ours, not SAEBench's (see saebench_diagnostics.py)
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


def sae_meta(cfg: Any, key: str) -> Any:
    """``cfg.<key>``, else ``cfg.metadata.<key>`` (SAELens moved some fields into the metadata), else None."""
    if hasattr(cfg, key) and getattr(cfg, key) is not None:
        return getattr(cfg, key)
    meta = getattr(cfg, "metadata", None)
    return getattr(meta, key, None) if meta is not None else None


def _is_checkpoint_folder(folder: Path, architecture: str) -> bool:
    from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY

    from sae_lens_ortho.saes.config import is_ortho_training_cfg

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
    missing = [k for k in ("model_name", "hook_name") if sae_meta(cfg, k) is None]
    if missing:
        raise ValueError(f"SAE {name!r} ({source}) has no {' / '.join(missing)} in its config metadata")
    if sae_meta(cfg, "prepend_bos") is None:
        cfg.metadata.prepend_bos = True
    l0 = sae_meta(cfg, "l0")
    return SaeSpec(
        name=name,
        source=source,
        kind=kind,
        sae=sae,
        model_name=sae_meta(cfg, "model_name"),
        hook_name=sae_meta(cfg, "hook_name"),
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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch before each suite and the diagnostics."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def llm_defaults(model_name: str, llm_batch_size: int | None, llm_dtype: str | None) -> tuple[int, str]:
    """SAEBench's LLM batch size and dtype for a model, unless given."""
    from sae_bench.sae_bench_utils import activation_collection as ac

    batch = llm_batch_size or ac.LLM_NAME_TO_BATCH_SIZE.get(model_name, 32)
    dtype = llm_dtype or ac.LLM_NAME_TO_DTYPE.get(model_name, "float32")
    return int(batch), str(dtype)
