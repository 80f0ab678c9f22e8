"""Every place sae-lens-ortho reaches into SAELens (and the libraries it loads through) beyond the public API.

Checked against sae-lens :data:`SAE_LENS_CHECKED`. What we rely on, and why, is :data:`RELIANCES`: each names a
callable and records its signature and (for SAELens's own code) a hash of its source as they were when we checked
them. ``tests/test_bridge.py`` fails when one differs, so a SAELens upgrade that changes what we patch fails loudly
instead of training differently; :func:`changed_since_checked` says which and how.

The workarounds themselves go through this module only:

* :func:`wrap_methods`: the trainer's methods wrapped on one trainer object (``training.py``: atomic checkpoints,
  the step count a checkpoint records, the stop / non-finite check at each step boundary, finite normalisation
  estimates);
* :func:`replaced_loaders`: TransformerLens's and SAELens's loader names replaced for a block
  (``local_sources.py``: local model folders and datasets without the Hub);
* :func:`optimizers_holding`: the optimizers of a parameter, found through the garbage collector (SAELens's
  trainer keeps its optimizer to itself; dictionary management resets the moments of re-initialised features).

It imports nothing of ours, so any layer may use it.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "RELIANCES",
    "SAE_LENS_CHECKED",
    "Reliance",
    "changed_since_checked",
    "fingerprint",
    "optimizers_holding",
    "replaced_loaders",
    "wrap_methods",
]

SAE_LENS_CHECKED = "6.54.12"
"""The sae-lens release every reliance below was read against (the 6.54.x line)."""


@dataclass(frozen=True)
class Reliance:
    """A callable of SAELens (or of a library it loads through) whose shape we depend on."""

    target: str
    """``module:qualified.name``."""
    why: str
    signature: str = ""
    """Its parameters (:func:`fingerprint`) when checked; "" for other libraries' callables, which we call through with
    the arguments we were given: only their presence is checked."""
    source_sha: str = ""
    """First 16 hex digits of the SHA-256 of its source when checked ("" with no signature)."""


_TRAINER = "sae_lens.training.sae_trainer:SAETrainer"
_RUNNER = "sae_lens.llm_sae_training_runner:LanguageModelSAETrainingRunner"
_SCALER = "sae_lens.training.activation_scaler:ActivationScaler"
_STORE = "sae_lens.training.activations_store"

RELIANCES: tuple[Reliance, ...] = (
    Reliance(
        f"{_TRAINER}.fit",
        "calls maybe_reset_sparsity first in each iteration and _checkpoint_if_needed before counting the step: "
        "training.py wraps both at those points",
        "(self)",
        "4c5471712766ff46",
    ),
    Reliance(
        f"{_TRAINER}.save_checkpoint",
        "wrapped to write checkpoints atomically",
        "(self, checkpoint_name, base_path=None, wandb_aliases=None)",
        "2405b5e2109908a2",
    ),
    Reliance(
        f"{_TRAINER}._checkpoint_if_needed",
        "wrapped to record the step count the state really has",
        "(self)",
        "c8d7b7f788df8c05",
    ),
    Reliance(
        f"{_TRAINER}.maybe_reset_sparsity",
        "wrapped: the stop signal and the non-finite check at each step boundary",
        "(self)",
        "2bb31d80b843ca5c",
    ),
    Reliance(
        f"{_SCALER}.estimate_scaling_factor",
        "wrapped to refuse a non-finite normalisation estimate",
        "(self, d_in, data_provider, n_batches_for_norm_estimate=1000)",
        "f087129174c2430c",
    ),
    Reliance(
        f"{_SCALER}.estimate_whitening",
        "wrapped to refuse a non-finite normalisation estimate",
        "(self, d_in, data_provider, n_batches_for_norm_estimate=1000, eps=0.001)",
        "36790669a2450855",
    ),
    Reliance(
        f"{_RUNNER}.run_trainer_with_interruption_handling",
        "overridden: interrupt checkpoints and the non-finite stop",
        "(self, trainer)",
        "87cfb32d0035f06f",
    ),
    Reliance(
        f"{_RUNNER}.save_final_sae",
        "overridden: the output written whole or not at all",
        "(self, sae, output_path, log_feature_sparsity=None)",
        "fc37159ec2d88f85",
    ),
    Reliance(
        f"{_STORE}:validate_pretokenized_dataset_tokenizer",
        "replaced inside local_sources(): the tokenizer check on local files",
        "(dataset_path, model_tokenizer)",
        "b68d8910b8ecea01",
    ),
    Reliance(f"{_STORE}:hf_hub_download", "replaced inside local_sources(): a local dataset's sae_lens.json"),
    Reliance(f"{_STORE}:load_dataset", "replaced inside local_sources(): save_to_disk folders"),
    Reliance(
        "transformer_lens.loading_from_pretrained:get_official_model_name",
        "replaced inside local_sources(): a local model folder is its own name",
        "(model_name)",
    ),
)
"""What we rely on; the recorded signatures and hashes are the values read from :data:`SAE_LENS_CHECKED`."""


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def fingerprint(fn: Callable[..., Any]) -> tuple[str, str]:
    """``(parameters, first 16 hex digits of the source's SHA-256)`` of ``fn``."""
    source = inspect.getsource(fn)
    return _parameters(fn), hashlib.sha256(source.encode()).hexdigest()[:16]


def _parameters(fn: Callable[..., Any]) -> str:
    """The parameters' names, kinds and defaults (annotations left out: they print differently across Pythons)."""
    parts = []
    for p in inspect.signature(fn).parameters.values():
        star = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        default = "" if p.default is p.empty else f"={p.default!r}"
        parts.append(f"{star}{p.name}{default}")
    return f"({', '.join(parts)})"


def changed_since_checked(reliances: tuple[Reliance, ...] = RELIANCES) -> list[str]:
    """One line per reliance whose callable is gone or whose signature / source differs from the recorded one."""
    out = []
    for r in reliances:
        try:
            signature, sha = fingerprint(_resolve(r.target))
        except (ImportError, AttributeError) as e:
            out.append(f"{r.target}: missing ({e}); we rely on it: {r.why}")
            continue
        if r.signature and signature != r.signature:
            out.append(f"{r.target}: signature {signature} (checked: {r.signature}); we rely on it: {r.why}")
        elif r.source_sha and sha != r.source_sha:
            out.append(f"{r.target}: source changed (sha {sha}, checked {r.source_sha}); we rely on it: {r.why}")
    return out


def wrap_methods(obj: Any, wrappers: Mapping[str, Callable[[Any], Any]]) -> None:
    """Replace each method ``name`` of the object ``obj`` (not its class) by ``wrappers[name](original)``; a name
    the object lacks is skipped."""
    for name, wrap in wrappers.items():
        original = getattr(obj, name, None)
        if original is not None:
            setattr(obj, name, wrap(original))


@contextlib.contextmanager
def replaced_loaders(
    wrappers: Mapping[str, Callable[[Any], Any]],
) -> Iterator[None]:
    """Within the block, each loader ``"module:name"`` of ``wrappers`` is ``wrappers[target](original)``; the
    originals come back on exit (also on error); nests."""
    slots = []
    for target in wrappers:
        module, _, name = target.partition(":")
        slots.append((importlib.import_module(module), name))
    saved = [getattr(module, name) for module, name in slots]
    for (module, name), original, wrap in zip(slots, saved, wrappers.values(), strict=True):
        setattr(module, name, wrap(original))
    try:
        yield
    finally:
        for (module, name), original in zip(slots, saved, strict=True):
            setattr(module, name, original)


def optimizers_holding(param: torch.Tensor) -> list[torch.optim.Optimizer]:
    """The live optimizers whose ``state`` has an entry for ``param`` (found through ``gc.get_referrers``)."""
    found: list[torch.optim.Optimizer] = []
    for holder in gc.get_referrers(param):
        if not isinstance(holder, dict) or param not in holder:
            continue
        for owner in gc.get_referrers(holder):
            # Python 3.11+ reports the optimizer itself; older versions its __dict__.
            candidates = (
                [owner]
                if isinstance(owner, torch.optim.Optimizer)
                else (
                    [o for o in gc.get_referrers(owner) if isinstance(o, torch.optim.Optimizer)]
                    if isinstance(owner, dict)
                    else []
                )
            )
            for opt in candidates:
                if opt.state is holder and all(opt is not f for f in found):
                    found.append(opt)
    return found
