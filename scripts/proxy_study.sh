#!/usr/bin/env bash
# The yardstick study on the proxy (docs/synthbench.md), resumable: every job writes one result file under
# docs/results/, so rerunning this script trains only what is missing (Ctrl-C keeps what finished).
#   bash scripts/proxy_study.sh            # every step; finished jobs are skipped
# Streams are cached in .synth_cache/ (about 100 MB per seed and model).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN="$PY -m sae_lens_ortho.evals.synthetic.synthbench_cli --config proxy --seeds 0 1 2 --jobs 2 --cache .synth_cache"
M=matryoshka_batchtopk_ortho
CO="ortho_target=decoder,ortho_select_by=activations,ortho_pair_fraction=0.001,ortho_weighting=squared,ortho_scale=input_energy"
LEAD="matryoshka_coactive_0.03=$M:$CO,ortho_coefficient=0.03"
BUILTINS=(--arm topk --arm batchtopk --arm matryoshka_batchtopk)
# The mechanism families on the best built-in (Matryoshka), each a config option of matryoshka_batchtopk_ortho.
FAMILIES=(
    --arm "$LEAD"
    --arm "matryoshka_coactive_0.01=$M:$CO,ortho_coefficient=0.01"
    --arm "matryoshka_coactive_0.1=$M:$CO,ortho_coefficient=0.1"
    --arm "matryoshka_coactive_0.03_late=$M:$CO,ortho_coefficient=0.03,ortho_warm_up_steps=2000"
    --arm "matryoshka_coactive_0.1_gated=$M:$CO,ortho_coefficient=0.1,ortho_gate_firing_rate=0.002"
    --arm "matryoshka_coactive_0.1_inner=$M:$CO,ortho_coefficient=0.1,ortho_inner_levels_only=true"
    --arm "matryoshka_coactive_momentum=$M:$CO,ortho_coefficient=0.03,ortho_adaptive=momentum"
    --arm "matryoshka_decoder_hinge_0.36=$M:ortho_target=decoder,ortho_select_by=decoder,ortho_weighting=hinge,ortho_tau=0.36,ortho_scale=input_energy,ortho_coefficient=0.1"
    --arm "matryoshka_chunk_max_0.01=$M:ortho_decoder_penalty=chunk_max,ortho_decoder_coefficient=0.01,ortho_decoder_warm_up_steps=1000"
    --arm "matryoshka_gram_0.01=$M:ortho_decoder_penalty=gram,ortho_decoder_coefficient=0.01"
    --arm "matryoshka_seed_form=$M:ortho_target=activations,ortho_select_by=activations,ortho_weighting=abs,ortho_scale=none,ortho_coefficient=1.0"
    --arm "matryoshka_management=$M:ortho_manage_every=500"
    --arm "matryoshka_coactive_encoder_0.1=$M:ortho_target=encoder,ortho_select_by=activations,ortho_pair_fraction=0.001,ortho_weighting=squared,ortho_scale=input_energy,ortho_coefficient=0.1"
    --arm "matryoshka_bias_adapt=$M:ortho_bias_adapt_rate=0.001,ortho_bias_band=16"
)
BEST=${BEST:-"matryoshka_coactive_0.03_late=$M:$CO,ortho_coefficient=0.03,ortho_warm_up_steps=2000"}  # best family at L0 8

# 1. The built-ins, the recipe and every family at the proxy's budget, L0 8 (the leaderboard).
$RUN "${BUILTINS[@]}" --arm coactive_decoder_topk "${FAMILIES[@]}" --out docs/results/proxy_1x --quiet
# 2. Twice the budget (8 epochs of the same recorded rows): the sign-stability criterion and the best arm's hold.
$RUN --samples 8192000 "${BUILTINS[@]}" --arm "$LEAD" --arm "$BEST" --arm coactive_decoder_topk \
    --out docs/results/proxy_2x --quiet
# 3. A second synthetic model (seed 7, not tuned on).
$RUN --model-seed 7 --arm batchtopk --arm matryoshka_batchtopk --arm "$LEAD" --arm "$BEST" \
    --out docs/results/proxy_model7 --quiet
# 4. The second L0 (11): the built-ins, then every family.
$RUN --l0 11 --arm batchtopk --arm matryoshka_batchtopk --arm "$LEAD" --arm "$BEST" --out docs/results/proxy_1x_l011 --quiet
$RUN --l0 11 "${BUILTINS[@]}" --arm coactive_decoder_topk "${FAMILIES[@]}" --out docs/results/proxy_1x_l011 --quiet
# 5. The best families at L0 11 (the co-active penalty 0.03 and its late start) on the second model, and the
#    best at twice the budget.
$RUN --l0 11 --model-seed 7 --arm matryoshka_batchtopk --arm "$LEAD" --arm "$BEST" --out docs/results/proxy_model7_l011 --quiet
$RUN --l0 11 --samples 8192000 --arm matryoshka_batchtopk --arm "$LEAD" --out docs/results/proxy_2x_l011 --quiet
