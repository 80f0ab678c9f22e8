"""Gradient accumulation over micro-batches with the gradient of the whole batch (seed 000's memory saving).

The reconstruction and sparsity losses of SAELens's row-wise architectures are means over rows, so a
micro-batch's loss weighted by its share of rows adds up to the full batch's. The selective ortho penalty is
not: the correlation of two features is taken over *all* rows. So a step runs in two passes:

1. Without a graph, encode every micro-batch and keep only the activations A [b, d_sae]; compute the ortho
   penalty P(A) on the whole batch and its gradient G = dP/dA (one small backward through the penalty). For
   TopK the penalty reads the k captured values per row, so G is taken w.r.t. those: [b, k], not [b, d_sae].
2. Per micro-batch m: the base forward pass, loss_m = (b_m / b) * base_loss_m + sum(G_m * A_m), backward.
   Since G_m is a constant, d(sum(G_m * A_m))/dθ = G_m^T dA_m/dθ, and summed over m this is exactly
   dP/dθ by the chain rule. The decoder penalty does not depend on the batch and is added once.

The last micro-batch's loss is returned with its graph, so SAELens's trainer runs the final backward itself
(earlier micro-batches are backpropagated here). Peak memory holds one micro-batch's graph plus A and G
instead of the whole batch's graph (for TopK, G is [b, k]). Costs one extra encoder pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from torch import Tensor

from sae_lens_ortho.saes.mechanisms.pairs import target_rows

__all__ = ["accumulated_forward"]


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    # PyTorch advises against backward passes under autocast; the trainer's own backward runs outside it.
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def accumulated_forward(
    sae: Any, step_input: TrainStepInput, base_forward: Callable[[TrainStepInput], TrainStepOutput]
) -> TrainStepOutput:
    """One training step of ``sae`` (an ``OrthoTrainingSAE``) in micro-batches of ``cfg.ortho_micro_batch_size``
    rows; ``base_forward`` is the base architecture's ``training_forward_pass``. Backpropagates every
    micro-batch but the last; the returned loss carries the last one's graph and the full batch's value. Talks to
    the SAE through ``ortho_losses`` (the whole batch's ortho losses) and ``ortho_losses_deferred`` (the
    micro-batches' forward passes leave them out)."""
    sae_in = step_input.sae_in
    b = sae_in.shape[0]
    chunks = sae_in.split(sae.cfg.ortho_micro_batch_size)

    # Pass 1: the whole batch's activations, for the ortho penalty (which needs all rows at once).
    with torch.no_grad():
        acts_parts, captured_parts = [], []
        for chunk in chunks:
            acts_parts.append(sae.encode_with_hidden_pre(chunk)[0])
            captured_parts.append(sae.ortho_sparse_activations())
        acts = torch.cat(acts_parts)
        del acts_parts
    # Leaves to differentiate the penalty against: the dense activations, and for TopK the captured [b, k]
    # values, which the co-firing path reads instead (then its gradient is [b, k], not a dense [b, d_sae]).
    acts.requires_grad_(True)
    leaves = [acts]
    idx = None
    captured = None
    if all(c is not None for c in captured_parts):
        idx = torch.cat([c[1] for c in captured_parts])
        vals = torch.cat([c[0] for c in captured_parts]).requires_grad_(True)
        captured = (vals, idx)
        leaves.append(vals)
    del captured_parts
    zero = acts.new_zeros((), dtype=torch.float32)
    with torch.enable_grad():
        on_acts = sae.ortho_losses(acts, step_input, zero, reads_activations=True, captured=captured)
    (name, ortho), *more = on_acts.items()
    assert not more, "one loss reads the activations (the selected-pair penalty)"
    grads: list[Tensor | None] = [None] * len(leaves)
    # On the weights (ortho_target "decoder" or "encoder") the penalty reads W_dec or W_enc directly: that part of
    # its graph is kept and backpropagated with the last micro-batch; through the activation leaves it has no gradient.
    on_weights = target_rows(sae) is not None
    if ortho.requires_grad:  # a leaf the penalty did not read (None) contributes nothing
        with _no_autocast(sae_in.device):  # a backward pass, like the trainer's own: outside autocast
            grads = list(torch.autograd.grad(ortho, leaves, allow_unused=True, retain_graph=on_weights))
    ortho_params = (ortho - ortho.detach()) if on_weights and ortho.requires_grad else zero
    grad_dense, grad_vals = grads[0], (grads[1] if len(grads) > 1 else None)
    acts = acts.detach()
    # The losses of the parameters alone (the decoder penalty, ...) do not depend on the batch: added once.
    on_params = sae.ortho_losses(acts, step_input, zero, reads_activations=False)
    decoder, *more = on_params.values()
    for value in more:
        decoder = decoder + value

    # Pass 2: each micro-batch's own losses plus the ortho term through the constant gradient.
    outs: list[TrainStepOutput] = []
    earlier = zero
    losses: dict[str, Tensor] = {}
    try:
        with sae.ortho_losses_deferred():
            for m, chunk in enumerate(chunks):
                out = base_forward(replace(step_input, sae_in=chunk))
                share = chunk.shape[0] / b
                loss = out.loss * share
                rows = slice(m * chunks[0].shape[0], m * chunks[0].shape[0] + chunk.shape[0])
                surrogate = zero
                if grad_dense is not None:
                    surrogate = surrogate + (grad_dense[rows] * out.feature_acts).sum()
                if grad_vals is not None:  # this micro-batch's TopK values are its activations at the captured indices
                    assert idx is not None  # grad_vals exists only for captured (values, indices)
                    surrogate = surrogate + (grad_vals[rows] * out.feature_acts.gather(1, idx[rows])).sum()
                if surrogate.requires_grad:
                    loss = loss + (surrogate - surrogate.detach())  # the gradient of the ortho term, value 0
                for key, value in out.losses.items():
                    losses[key] = losses.get(key, zero) + value.detach().float() * share
                if m < len(chunks) - 1:
                    with _no_autocast(sae_in.device):
                        loss.backward()
                    earlier = earlier + loss.detach()
                    out = _detached(out)
                else:
                    last_loss = loss + decoder + ortho_params
                outs.append(out)
    finally:
        sae.ortho_sparse_activations()  # drop the last micro-batch's captured activations
    losses[name] = ortho.detach()
    losses.update({key: value.detach() for key, value in on_params.items()})
    return TrainStepOutput(
        sae_in=sae_in,
        sae_out=torch.cat([o.sae_out.detach() for o in outs]),
        feature_acts=acts,
        hidden_pre=torch.cat([o.hidden_pre.detach() for o in outs]),
        # The value is the whole batch's loss; only the last micro-batch's part still has a graph.
        loss=last_loss + (earlier + ortho.detach()),
        losses=losses,
        metrics={k: v for o in outs for k, v in o.metrics.items()},
    )


def _detached(out: TrainStepOutput) -> TrainStepOutput:
    return replace(
        out,
        loss=out.loss.detach(),
        sae_out=out.sae_out.detach(),
        feature_acts=out.feature_acts.detach(),
        hidden_pre=out.hidden_pre.detach(),
    )
