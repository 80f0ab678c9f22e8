"""The ortho fields in words: grouped by mechanism (for ``train --help``) and a run's mechanisms described from its
own field values (for the model card), so neither can say something the config does not do.

:data:`FIELD_GROUPS` lists every field of :class:`~sae_lens_ortho.saes.config.OrthoConfig` exactly once
(``tests/test_cli.py`` checks it); :func:`describe_ortho` turns a saved config's ``ortho_*`` values (a
``cfg.json``'s ``metadata.training_architecture_details``; missing fields take their defaults) into one line per
mechanism that was switched on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["FIELD_GROUPS", "FieldGroup", "describe_ortho", "ortho_values"]


@dataclass(frozen=True)
class FieldGroup:
    title: str
    summary: str
    """One line: what the mechanism does and which field switches it on."""
    fields: tuple[str, ...]


FIELD_GROUPS: tuple[FieldGroup, ...] = (
    FieldGroup(
        "selective pair penalty",
        "on with --ortho_coefficient > 0: each batch, penalise the most correlated pairs",
        (
            "ortho_coefficient",
            "ortho_warm_up_steps",
            "ortho_pair_fraction",
            "ortho_weighting",
            "ortho_tau",
            "ortho_target",
            "ortho_scale",
            "ortho_select_by",
            "ortho_select_every",
            "ortho_pair_filter",
            "ortho_z",
            "ortho_min_pairs",
            "ortho_method",
            "ortho_chunk_size",
        ),
    ),
    FieldGroup(
        "firing-rate gate",
        "on with --ortho_gate_firing_rate > 0: the pair penalty selects only established latents",
        ("ortho_gate_firing_rate", "ortho_gate_decay"),
    ),
    FieldGroup(
        "inner Matryoshka levels",
        "on with --ortho_inner_levels_only: the pair penalty selects only inner Matryoshka latents",
        ("ortho_inner_levels_only",),
    ),
    FieldGroup(
        "adaptive strength",
        "--ortho_adaptive recon / momentum / threshold: the pair penalty adapts",
        (
            "ortho_adaptive",
            "ortho_strength_init",
            "ortho_strength_min",
            "ortho_strength_max",
            "ortho_target_recon_loss",
            "ortho_momentum",
            "ortho_target_corr",
        ),
    ),
    FieldGroup(
        "decoder penalty",
        "on with --ortho_decoder_coefficient > 0: push decoder directions apart",
        (
            "ortho_decoder_coefficient",
            "ortho_decoder_reduction",
            "ortho_decoder_penalty",
            "ortho_decoder_start",
            "ortho_decoder_warm_up_steps",
            "ortho_groups",
            "ortho_group_decay",
            "ortho_decoder_chunks",
            "ortho_unit_norm_decoder",
        ),
    ),
    FieldGroup(
        "encoder and L1 (standard_ortho)",
        "LayerNorm encoder, local competition, adaptive L1",
        (
            "ortho_encoder_layer_norm",
            "ortho_competition_gamma",
            "ortho_competition_radius",
            "ortho_competition_threshold",
            "ortho_competition_decay",
            "ortho_l1_target_rate",
            "ortho_l1_step_size",
        ),
    ),
    FieldGroup(
        "dictionary management",
        "on with --ortho_manage_every > 0: re-initialise weak and redundant features",
        (
            "ortho_manage_every",
            "ortho_importance_decay",
            "ortho_realloc_threshold",
            "ortho_realloc_steps",
            "ortho_prune_threshold",
            "ortho_prune_steps",
            "ortho_prune_protect_quantile",
        ),
    ),
    FieldGroup(
        "bias adaptation",
        "on with --ortho_bias_adapt_rate > 0: encoder biases keep each latent's firing rate near a target",
        ("ortho_bias_adapt_rate", "ortho_bias_target_rate", "ortho_bias_band", "ortho_bias_decay"),
    ),
    FieldGroup(
        "memory",
        "micro-batches with exactly the whole batch's gradient",
        ("ortho_micro_batch_size",),
    ),
)


def ortho_values(details: dict[str, Any]) -> dict[str, Any]:
    """Every ortho field's value: ``details`` where it has one, the field's default otherwise."""
    from sae_lens_ortho.saes.mechanisms import MECHANISMS

    defaults = {f.name: f.default for m in MECHANISMS for f in dataclasses.fields(m.Fields)}
    return {**defaults, **{k: v for k, v in details.items() if k in defaults}}


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _pair_penalty(v: dict[str, Any]) -> str:
    if v["ortho_select_by"] == "decoder":
        ranked = "by the cosine of their decoder rows"
    else:
        ranked = "by the cosine of their activations over the batch (pairs that fire together)"
    kept = (
        f", keeping only those above mean + {_num(v['ortho_z'])} std of all pairs"
        if v["ortho_pair_filter"] == "zscore"
        else ""
    )
    at_least = f" (at least {v['ortho_min_pairs']})" if v["ortho_min_pairs"] else ""
    c = {
        "decoder": "the cosine of the pair's decoder rows",
        "encoder": "the cosine of the pair's encoder columns",
    }.get(v["ortho_target"], "the pair's activation cosine")
    tau = "mean + std of all pair cosines" if v["ortho_adaptive"] == "threshold" else _num(v["ortho_tau"])
    phi = {
        "abs": "|c|",
        "squared": "c²",
        "hinge": f"max(0, |c| − τ) with τ = {tau}",
        "scaled": f"|c|²/τ with τ = {tau}",
    }
    line = (
        f"selective pair penalty: each step, the top {v['ortho_pair_fraction'] * 100:g}% of feature pairs ranked "
        f"{ranked}{kept}{at_least}; penalty {phi[v['ortho_weighting']]}, averaged over them, where c is {c}; "
        f"coefficient {_num(v['ortho_coefficient'])}"
    )
    if v["ortho_scale"] == "input_energy":
        line += " × E‖x‖² of the batch"
    if v["ortho_warm_up_steps"]:
        line += f", warmed up over {v['ortho_warm_up_steps']} steps"
    if v["ortho_adaptive"] == "recon":
        line += (
            f"; strength adapted toward reconstruction loss {_num(v['ortho_target_recon_loss'])} within "
            f"[{_num(v['ortho_strength_min'])}, {_num(v['ortho_strength_max'])}] from {_num(v['ortho_strength_init'])}"
        )
    if v["ortho_adaptive"] == "momentum":
        line += (
            f"; strength adapted (momentum {_num(v['ortho_momentum'])}) toward mean |c| {_num(v['ortho_target_corr'])} "
            f"within [{_num(v['ortho_strength_min'])}, {_num(v['ortho_strength_max'])}]"
        )
    return line


def _decoder_penalty(v: dict[str, Any]) -> str:
    where = {
        "gram": "over all pairs of unit decoder rows",
        "grouped": f"within {v['ortho_groups']} groups of decoder rows (moving centroids)",
        "chunk_max": f"the largest per feature within {v['ortho_decoder_chunks']} random chunks of decoder rows",
    }[v["ortho_decoder_penalty"]]
    line = (
        f"decoder penalty: squared cosine {where} ({v['ortho_decoder_reduction']}), coefficient "
        f"{_num(v['ortho_decoder_coefficient'])}"
    )
    if v["ortho_decoder_start"] is not None:
        line += f", annealed from {_num(v['ortho_decoder_start'])} over {v['ortho_decoder_warm_up_steps']} steps"
    return line


def describe_ortho(details: dict[str, Any], base: str = "its base architecture") -> list[str]:
    """One line per orthogonality mechanism the config switched on, from its field values; a single line saying
    all were off when none was."""
    v = ortho_values(details)
    lines = []
    if v["ortho_coefficient"] > 0:
        lines.append(_pair_penalty(v))
    if v["ortho_decoder_coefficient"] > 0:
        lines.append(_decoder_penalty(v))
    if v["ortho_unit_norm_decoder"]:
        lines.append("decoder rows kept at unit norm after every update")
    if v["ortho_encoder_layer_norm"]:
        lines.append("encoder ReLU(LayerNorm(W_e x + b_e))")
    if v["ortho_competition_gamma"] > 0:
        lines.append(
            f"local competition: an active feature with a stronger active neighbour (co-firing rate above "
            f"{_num(v['ortho_competition_threshold'])}) is scaled by 1 − {_num(v['ortho_competition_gamma'])}"
        )
    if v["ortho_l1_target_rate"] is not None:
        lines.append(f"L1 coefficient adapted toward activation rate {_num(v['ortho_l1_target_rate'])}")
    if v["ortho_gate_firing_rate"] > 0:
        lines.append(
            f"pairs selected only among latents with an EMA firing rate ≥ {_num(v['ortho_gate_firing_rate'])} "
            f"(decay {_num(v['ortho_gate_decay'])})"
        )
    if v["ortho_inner_levels_only"]:
        lines.append("pairs selected only among the inner Matryoshka levels' latents")
    if v["ortho_manage_every"] > 0:
        lines.append(
            f"dictionary management every {v['ortho_manage_every']} steps: re-initialise features with importance "
            f"below {_num(v['ortho_realloc_threshold'])} for {v['ortho_realloc_steps']} steps, and the weaker of "
            f"pairs correlated above {_num(v['ortho_prune_threshold'])} for {v['ortho_prune_steps']} steps"
        )
    if v["ortho_bias_adapt_rate"] > 0:
        target = _num(v["ortho_bias_target_rate"]) if v["ortho_bias_target_rate"] > 0 else "k / d_sae"
        lines.append(
            f"bias adaptation: each step, encoder biases of latents firing outside [target / "
            f"{_num(v['ortho_bias_band'])}, target × {_num(v['ortho_bias_band'])}] (target {target}) move by "
            f"{_num(v['ortho_bias_adapt_rate'])} × a firing latent's typical activation toward it"
        )
    if not lines:
        return [
            f"none: every orthogonality term was off (ortho_coefficient and ortho_decoder_coefficient 0), so it "
            f"trained exactly as {base}"
        ]
    return lines
