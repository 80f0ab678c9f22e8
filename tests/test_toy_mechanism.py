"""The worked example of docs/architecture.md ("Add a mechanism"): one file (``tests/toy_mechanism.py``) plus one
registration line give an ortho architecture a new field, its check, its loss and its metric, with the real
SAELens step; with the field at its default the SAE trains bit-identically to one without the mechanism."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from sae_lens.saes.sae import TrainStepInput
from toy_mechanism import DecoderNormPenalty
from trainer_harness import batches

from sae_lens_ortho.saes.mechanisms import MECHANISMS
from sae_lens_ortho.saes.ortho import add_ortho
from sae_lens_ortho.saes.topk import TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig

TOY_SAE, TOY_CFG = add_ortho("topk", "topk_toy_ortho", class_prefix="TopKToyOrtho", register=False)
D_IN, D_SAE, BATCH = 8, 32, 16


def step(sae: torch.nn.Module, x: torch.Tensor, logging: bool = True):
    coefficients = sae.get_coefficients()  # type: ignore[operator]
    values = {k: (v.value if hasattr(v, "value") else v) for k, v in coefficients.items()}
    out = sae.training_forward_pass(TrainStepInput(x, values, None, 0, logging))  # type: ignore[operator]
    out.loss.backward()
    return out


def make(cfg_cls: type, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = TOY_SAE if cfg_cls is TOY_CFG else TopKOrthoTrainingSAE
    return cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, k=4, **kw))


def test_it_is_registered_and_its_field_is_flat_with_its_docstring() -> None:
    assert DecoderNormPenalty in MECHANISMS
    cfg = TOY_CFG(d_in=D_IN, d_sae=D_SAE, k=4)
    assert cfg.ortho_decoder_norm_coefficient == 0.0  # off by default
    assert cfg.to_dict()["ortho_decoder_norm_coefficient"] == 0.0  # flat in cfg.json
    assert "ortho_decoder_norm_coefficient" not in {f.name for f in dataclasses.fields(TopKOrthoTrainingSAEConfig)}
    with pytest.raises(ValueError, match=r"ortho_decoder_norm_coefficient must be a finite number in \[0, "):
        TOY_CFG(d_in=D_IN, d_sae=D_SAE, k=4, ortho_decoder_norm_coefficient=-1.0)


def test_its_loss_and_gradient_are_the_l2_penalty_of_the_decoder_norms() -> None:
    x = batches(1, BATCH, D_IN)[0]
    c = 0.25
    on, off = make(TOY_CFG, ortho_decoder_norm_coefficient=c), make(TOY_CFG)
    assert torch.equal(on.W_dec, off.W_dec)
    out_on, out_off = step(on, x), step(off, x)
    expected = c * off.W_dec.detach().pow(2).sum(-1).mean()
    torch.testing.assert_close(out_on.losses["decoder_norm_loss"], expected)
    assert "decoder_norm_loss" not in out_off.losses
    torch.testing.assert_close(out_on.metrics["ortho_decoder_norm_penalty"], expected / c)
    # d/dW_dec of c * mean_i ||d_i||^2 is 2c W_dec / d_sae, on top of the same base gradient.
    torch.testing.assert_close(on.W_dec.grad - off.W_dec.grad, 2 * c * off.W_dec.detach() / D_SAE)
    torch.testing.assert_close(on.W_enc.grad, off.W_enc.grad)


def test_it_adds_its_loss_once_with_micro_batches() -> None:
    x = batches(1, BATCH, D_IN)[0]
    whole = make(TOY_CFG, ortho_decoder_norm_coefficient=0.25)
    micro = make(TOY_CFG, ortho_decoder_norm_coefficient=0.25, ortho_micro_batch_size=4)
    out_whole, out_micro = step(whole, x), step(micro, x)
    torch.testing.assert_close(out_micro.losses["decoder_norm_loss"], out_whole.losses["decoder_norm_loss"])
    torch.testing.assert_close(micro.W_dec.grad, whole.W_dec.grad, rtol=1e-5, atol=1e-6)


def test_off_it_trains_bit_identically_to_the_architecture_without_it() -> None:
    x = batches(3, BATCH, D_IN)
    toy, plain = make(TOY_CFG, ortho_coefficient=0.1), make(TopKOrthoTrainingSAEConfig, ortho_coefficient=0.1)
    for batch in x:
        out_toy, out_plain = step(toy, batch), step(plain, batch)
        assert out_toy.losses.keys() == out_plain.losses.keys()
        assert torch.equal(out_toy.loss, out_plain.loss)
    assert torch.equal(toy.W_dec.grad, plain.W_dec.grad)
