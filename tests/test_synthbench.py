"""SynthSAEBench inside the project, on a tiny scale of the recipe: real SAELens synthetic model, runner and
evaluation; pairing is exact; the report, JSON and plots are written; the CLI parses arms and recipes."""

from __future__ import annotations

import json

import pytest

from sae_lens_ortho.evals.synthetic import scales
from sae_lens_ortho.evals.synthetic.sweep import run_synthbench
from sae_lens_ortho.evals.synthetic.synthbench import (
    Arm,
    SynthBenchSettings,
    build_model,
    hierarchy_pairs,
    parse_arms,
)
from sae_lens_ortho.evals.synthetic.synthbench_cli import main as synthbench_main
from sae_lens_ortho.evals.synthetic.synthbench_report import comparisons, format_synthbench_table


def test_scales_keep_the_recipes_ratios():
    big = scales.SCALES["16k"]
    for s in (scales.SCALES["small"], scales.SCALES["mini"], scales.SCALES["proxy"]):
        assert s.num_features / s.hidden_dim == pytest.approx(big.num_features / big.hidden_dim, rel=0.01)
        assert s.num_features / s.d_sae == big.num_features / big.d_sae
        assert s.root_nodes * 128 == s.num_features
        assert [w / s.d_sae for w in s.matryoshka_widths] == [w / big.d_sae for w in big.matryoshka_widths]
    cfg = big.model_config()
    assert (cfg.num_features, cfg.hidden_dim, cfg.seed, cfg.bias) == (16384, 768, 42, 0.5)
    assert (cfg.hierarchy.total_root_nodes, cfg.hierarchy.branching_factor, cfg.hierarchy.max_depth) == (128, 4, 3)
    assert cfg.hierarchy.mutually_exclusive_portion == 1.0 and cfg.hierarchy.compensate_probabilities
    assert (cfg.correlation.rank, cfg.correlation.correlation_scale) == (25, 0.1)
    assert (cfg.firing_probability.exponent, cfg.firing_probability.max_prob, cfg.firing_probability.min_prob) == (
        0.5, 0.4, 5e-4,
    )  # fmt: skip
    assert (cfg.orthogonalization.num_steps, cfg.orthogonalization.lr) == (100, 3e-4)
    with pytest.raises(ValueError, match="config must be one of"):
        scales.get_scale("huge")


def test_hierarchy_pairs_walk_every_parent(tiny):
    model = build_model(tiny)
    pairs = hierarchy_pairs(model)
    # 2 trees of branching 4, depth 3: 1 + 4 + 16 parents each.
    assert len(pairs) == 2 * 21
    assert all(len(children) == 4 for _, children in pairs)
    assert len({c for _, cs in pairs for c in cs}) == 2 * (4 + 16 + 64)


def test_arms_parse_specs_and_reject_bad_ones():
    arms = parse_arms(["topk", "soft=topk_ortho:ortho_coefficient=0,ortho_target=decoder"])
    assert arms[0] == Arm("topk", "topk", {})
    assert arms[1] == Arm("soft", "topk_ortho", {"ortho_coefficient": 0, "ortho_target": "decoder"})
    assert arms[1].base == "topk"
    with pytest.raises(ValueError, match="neither a registered training architecture"):
        parse_arms(["nope"])
    with pytest.raises(ValueError, match="field=value"):
        parse_arms(["topk_ortho:ortho_coefficient"])
    with pytest.raises(ValueError, match="unique"):
        parse_arms(["topk", "topk"])


def test_paired_arms_are_exact_and_the_report_is_written(tiny, tmp_path):
    # topk_ortho with every penalty off is SAELens topk plus bookkeeping: from the same init and batches it must
    # train to the same SAE, so its metrics equal topk's exactly. A penalised arm must differ.
    arms = parse_arms(["topk", "off=topk_ortho:ortho_coefficient=0", "on=topk_ortho:ortho_target=decoder,ortho_coefficient=0.5,ortho_scale=input_energy,ortho_pair_fraction=0.05"])  # fmt: skip
    settings = SynthBenchSettings(config="tiny", arms=arms, seeds=(0, 1), heldout_samples=4096, progress=False)
    res = run_synthbench(settings)
    assert len(res.runs) == 6
    for seed in (0, 1):
        base = next(r for r in res.runs if r.arm == "topk" and r.seed == seed).metrics
        off = next(r for r in res.runs if r.arm == "off" and r.seed == seed).metrics
        on = next(r for r in res.runs if r.arm == "on" and r.seed == seed).metrics
        assert off == base
        assert on["mcc"] != base["mcc"]
        assert 0 < base["f1"] <= 1 and 0 < base["mcc"] <= 1 and base["l0"] == pytest.approx(4.0)
    assert res.paired_delta("off", "topk", "mcc")[:1] == (0.0,)
    assert set(comparisons(res)) == {("off", "topk"), ("on", "topk")}
    table = format_synthbench_table(res, 4)
    assert "| F1 |" in table and "Δ on − topk" in table
    from sae_lens_ortho.evals.synthetic.synthbench_report import write_synthbench_report

    path = write_synthbench_report(res, tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["runs"]) == 6 and data["settings"]["config"] == "tiny"
    assert (tmp_path / "synthbench.png").stat().st_size > 10_000  # one L0: bars
    assert "SynthSAEBench `tiny`" in path.read_text()


def test_cli_runs_a_sweep_and_refuses_bad_input(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    code = synthbench_main(["--config", "tiny", "--arm", "topk", "--seeds", "0", "--l0-sweep", "--out", str(out),
                            "--quiet", "--eval-samples", "4096", "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert code == 0
    # The stream is recorded in the scale's chunks (stream_chunk_rows), one file per chunk.
    (folder,) = (tmp_path / "cache").glob("tiny-*/seed1000_rows*")  # seed 0 training stream
    assert folder.name.endswith("_rows2048") and len(list(folder.glob("chunk*.pt"))) >= 40_960 // 2048
    data = json.loads((out / "results.json").read_text())
    assert sorted({r["l0_target"] for r in data["runs"]}) == [3, 4]
    printed = capsys.readouterr().out
    assert "Target L0 3" in printed and "What this run shows (L0 3)" in printed
    assert synthbench_main(["--config", "nope", "--out", str(out)]) == 2
    assert "config must be one of" in capsys.readouterr().err
    assert synthbench_main(["--config", "tiny", "--l0", "999", "--out", str(out)]) == 2
    assert "l0s must be integers" in capsys.readouterr().err
