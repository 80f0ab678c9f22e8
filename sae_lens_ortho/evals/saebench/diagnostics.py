"""The ``diagnostics`` suite of :func:`sae_lens_ortho.evals.saebench.run.run_saebench` (ours, not SAEBench's).

This package's exact disentanglement diagnostics (:mod:`sae_lens_ortho.evals.disentanglement`) on SAE activations
collected the way SAEBench's core collects them, one JSON per SAE under ``out_dir/eval_results/diagnostics/``;
:func:`result_path` says where any suite's JSON for an SAE lives. The running code and the public names are in
:mod:`sae_lens_ortho.evals.saebench.run`, which re-exports ``DIAGNOSTICS_*``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sae_lens_ortho.evals.saebench.specs import (
    CORE_DEFAULTS,
    EVAL_TYPE_IDS,
    SaeSpec,
    llm_defaults,
    sae_meta,
    seed_everything,
)

# The logger of sae_lens_ortho.evals.saebench.run, where this code was before the split: log records keep their name.
log = logging.getLogger("sae_lens_ortho.evals.saebench.run")

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
fractions need ~1/threshold tokens to mean anything (see :mod:`sae_lens_ortho.evals.disentanglement`)."""


def result_path(results_root: Path, suite: str, spec: SaeSpec) -> Path:
    """Where a suite's JSON for ``spec`` lives: SAEBench's file name, or ``diagnostics/<name>.json`` for ours."""
    if suite == DIAGNOSTICS_SUITE:
        return results_root / EVAL_TYPE_IDS[suite] / f"{spec.name}.json"
    return results_root / EVAL_TYPE_IDS[suite] / spec.result_stem


def run_diagnostics(
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
    from sae_lens_ortho.evals.disentanglement import disentanglement_diagnostics

    unknown = sorted(set(options) - set(DIAGNOSTICS_DEFAULTS))
    if unknown:
        raise ValueError(
            f"diagnostics has no option(s) {', '.join(unknown)} (options: {', '.join(DIAGNOSTICS_DEFAULTS)})"
        )
    opts = {**DIAGNOSTICS_DEFAULTS, **options}
    (results_root / EVAL_TYPE_IDS[DIAGNOSTICS_SUITE]).mkdir(parents=True, exist_ok=True)
    failures: dict[str, str] = {}
    model = None
    for spec in group:
        path = result_path(results_root, DIAGNOSTICS_SUITE, spec)
        if path.exists() and not force_rerun:
            log.info("diagnostics/%s: kept the existing result %s (force_rerun=False)", spec.name, path)
            continue
        try:
            sae = spec.sae if spec.sae is not None else _load_hub_sae(spec, device)
            if model is None:
                model = _load_model_like_core(model_name or sae_meta(sae.cfg, "model_name"), sae, device, llm_dtype)
            seed_everything(random_seed)
            t0 = time.perf_counter()
            batches = _sae_activation_batches(model, sae, opts, random_seed)
            report = disentanglement_diagnostics(
                batches, sae.W_dec, top_pairs=opts["top_pairs"], p=opts["p"], chunk_size=opts["decoder_chunk_size"]
            )
            hook = sae_meta(sae.cfg, "hook_name")
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

    assert spec.release is not None and spec.sae_id is not None  # a Hub spec names both
    sae = SAE.from_pretrained(spec.release, spec.sae_id, device=device)
    return sae[0] if isinstance(sae, tuple) else sae


def _load_model_like_core(model_name: str, sae: Any, device: str, llm_dtype: str | None) -> Any:
    """The model as SAEBench's core loads it (its module's ``HookedTransformer``, which :func:`use_model` and the
    offline tests patch)."""
    import sae_bench.evals.core.main as core
    from sae_bench.sae_bench_utils import general_utils

    _, dtype = llm_defaults(model_name, None, llm_dtype)
    kwargs = sae_meta(sae.cfg, "model_from_pretrained_kwargs") or {}
    return core.HookedTransformer.from_pretrained_no_processing(
        model_name, device=device, dtype=general_utils.str_to_dtype(dtype), **kwargs
    )


def _sae_activation_batches(model: Any, sae: Any, opts: Mapping[str, Any], seed: int) -> Iterator[Any]:
    """Sparse (values, indices) batches of ``sae.encode`` on ``opts["n_tokens"]`` tokens (see DIAGNOSTICS_DEFAULTS)."""
    import torch
    from sae_lens.training.activations_store import ActivationsStore

    from sae_lens_ortho.evals.disentanglement import sparse_rows

    hook = sae_meta(sae.cfg, "hook_name")
    head_index = sae_meta(sae.cfg, "hook_head_index")
    store = ActivationsStore.from_sae(
        model,
        sae,
        context_size=opts["context_size"],
        dataset=opts["dataset"],
        dataset_trust_remote_code=True,
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
