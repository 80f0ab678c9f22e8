#!/usr/bin/env bash
# The yardstick study on the proxy (docs/synthbench.md), resumable: every job writes one result file under
# docs/results/, so rerunning this script trains only what is missing (Ctrl-C keeps what finished).
#   bash scripts/proxy_study.sh            # 2x budget first (the faithfulness criterion), then the family search
# Streams are cached in .synth_cache/ (about 100 MB per seed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN="$PY -m sae_lens_ortho.evals.synthetic.synthbench_cli --config proxy --seeds 0 1 2 --jobs 2 --cache .synth_cache"
M=matryoshka_batchtopk_ortho
CO="ortho_target=decoder,ortho_select_by=activations,ortho_pair_fraction=0.001,ortho_weighting=squared,ortho_scale=input_energy"
LEAD="matryoshka_coactive_0.03=$M:$CO,ortho_coefficient=0.03"

# 1. Twice the budget (8 epochs of the same recorded rows): the sign-stability criterion.
$RUN --samples 8192000 --arm topk --arm batchtopk --arm matryoshka_batchtopk --arm "$LEAD" \
    --arm coactive_decoder_topk --out docs/results/proxy_2x

# 2. The mechanism families on the best built-in, at the proxy's budget, next to the arms already measured.
for ARM in \
    "matryoshka_coactive_0.03_late=$M:$CO,ortho_coefficient=0.03,ortho_warm_up_steps=2000" \
    "matryoshka_decoder_hinge_0.36=$M:ortho_target=decoder,ortho_select_by=decoder,ortho_weighting=hinge,ortho_tau=0.36,ortho_scale=input_energy,ortho_coefficient=0.1" \
    "matryoshka_chunk_max_0.01=$M:ortho_decoder_penalty=chunk_max,ortho_decoder_coefficient=0.01,ortho_decoder_warm_up_steps=1000" \
    "matryoshka_coactive_0.01=$M:$CO,ortho_coefficient=0.01" \
    "matryoshka_coactive_momentum=$M:$CO,ortho_coefficient=0.03,ortho_adaptive=momentum" \
    "matryoshka_seed_form=$M:ortho_target=activations,ortho_select_by=activations,ortho_weighting=abs,ortho_scale=none,ortho_coefficient=1.0" \
    "matryoshka_management=$M:ortho_manage_every=500" \
    "matryoshka_gram_0.01=$M:ortho_decoder_penalty=gram,ortho_decoder_coefficient=0.01"; do
    $RUN --arm topk --arm batchtopk --arm matryoshka_batchtopk --arm "$LEAD" --arm coactive_decoder_topk --arm "$ARM" \
        --out docs/results/proxy_1x --quiet
done
