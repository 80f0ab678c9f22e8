"""Do-no-harm at a small scale of the SynthSAEBench recipe (issue 14, item 3): every ``*_ortho`` twin with default
fields is at least as good as its base from the same init and batches, by the report's own criteria
(``harm_check``: paired Δ MCC and Δ F1 not below -1 SE, |Δ explained variance| <= 0.01, dead latents at most the
base's + 1% of the width).

The negative control shows the check bites at this scale: the co-active decoder penalty at 0.1 (the recipe
``coactive_decoder_topk``, the default before this test existed) silences latents here (seed 0: 16 dead of 128
against topk's 3, explained variance -0.04), so it must fail. Under half a minute on 2 idle cores, about 3 min under heavy load."""

from __future__ import annotations

import pytest

from sae_lens_ortho.evals.synthetic import scales
from sae_lens_ortho.evals.synthetic.sweep import run_synthbench
from sae_lens_ortho.evals.synthetic.synthbench import SynthBenchSettings, parse_arms
from sae_lens_ortho.evals.synthetic.synthbench_report import harm_check

# 512 features in 24 dims (the recipe's 21.3 features per dimension), 128 latents (4 features per latent),
# 4 hierarchy roots, L0 4; 146 steps of 1024.
MICRO = scales.get_scale("micro")


@pytest.fixture(scope="module")
def results():
    arms = parse_arms(["topk", "topk_ortho", "coactive_decoder_topk", "batchtopk", "batchtopk_ortho"])
    return run_synthbench(SynthBenchSettings(config="micro", arms=arms, seeds=(0,), progress=False))


@pytest.mark.parametrize(("arm", "base"), [("topk_ortho", "topk"), ("batchtopk_ortho", "batchtopk")])
def test_defaults_do_no_harm(results, arm, base):
    assert harm_check(results, arm, base) == []


def test_the_check_catches_a_penalty_that_silences_latents(results):
    harm = harm_check(results, "coactive_decoder_topk", "topk")
    assert any("dead latents" in h for h in harm), harm
    recipe, base = (results.values(a, "dead_latents")[0] for a in ("coactive_decoder_topk", "topk"))
    assert recipe > base + 0.01 * MICRO.d_sae
