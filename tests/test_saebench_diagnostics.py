"""The ``diagnostics`` suite of ``run_saebench`` (our disentanglement diagnostics in the SAEBench report), offline.

Runs on the fixtures of tests/saebench_fixtures.py (a tiny real HookedTransformer with planted embeddings, synthetic
openwebtext, SAEs saved as run folders), with known answers:

* ``dup``: the 64 planted basis directions, a copy of direction 3 (latent 64) and a random direction whose encoder
  bias keeps it from ever firing (latent 65), with k = d_sae so every positive pre-activation fires. Decoder
  near-duplicates: exactly latents 3 and 64, 2/66; latents 3 and 64 have identical activation columns, so the
  max pair cosine is 1 with the pair (3, 64); dead: exactly latent 65, 1/66.
* ``planted``: the +/- basis; every decoder row has an anti-parallel partner, so the near-duplicate fraction
  (by |cos|) is 1.

Skipped unless SAEBench is installed, like tests/test_saebench.py.
"""

from __future__ import annotations

import csv
import json
from typing import Any

import pytest
import torch

pytest.importorskip("sae_bench", reason="SAEBench is not installed (see docs/saebench.md)")

import saebench_fixtures as F  # noqa: E402
from reference import correlation_matrix  # noqa: E402

from sae_lens_ortho.evals.saebench import run as sb  # noqa: E402
from sae_lens_ortho.evals.saebench.diagnostics import _sae_activation_batches  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

D_SAE = F.D_MODEL + 2
DIAG = {"n_tokens": 1500, "context_size": 32, "batch_size_prompts": 8, "top_pairs": 5}
CORE = dict(
    n_eval_reconstruction_batches=1, n_eval_sparsity_variance_batches=1, eval_batch_size_prompts=8, context_size=32
)


def dup_sae():
    g = torch.Generator().manual_seed(5)
    basis = F.planted_basis()
    rows = torch.cat([basis, basis[3:4], torch.randn(1, F.D_MODEL, generator=g)])
    sae = F.topk_ortho_sae(rows, k=D_SAE)
    with torch.no_grad():
        sae.b_enc[D_SAE - 1] = -1e4  # latent 65 never fires
    return sae


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("saebench_diag")
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    with pytest.MonkeyPatch.context() as mp:
        fx = F.build_fixture(root / "fixture")
        downloads = F.install_offline(mp, fx, root / "sae_probes_data")
        cwd = root / "cwd"
        cwd.mkdir()
        mp.chdir(cwd)
        saes = {
            "dup": fx.sae_folder("dup", dup_sae()),
            "planted": fx.sae_folder("planted", F.planted_sae(fx.basis, k=4), checkpoint=True),
        }
        yield {"fx": fx, "downloads": downloads, "saes": saes, "root": root, "cwd": cwd}
        assert list(cwd.iterdir()) == [], "the diagnostics wrote into the working directory"
    torch.set_num_threads(threads)


def row_of(result: sb.SaebenchResult, name: str) -> dict[str, Any]:
    (row,) = [r for r in result.rows if r["sae"] == name]
    return row


def test_diagnostics_suite_known_answers(env):
    out = env["root"] / "core_and_diag"
    r = sb.run_saebench(
        [(n, env["saes"][n]) for n in ("dup", "planted")],
        ["core", "diagnostics"],
        out_dir=out,
        device="cpu",
        suite_options={"core": CORE, "diagnostics": DIAG},
        llm_batch_size=64,
        progress=False,
    )
    assert r.failures == {}
    assert r.suites == ["core", "diagnostics"]

    # the JSON: out_dir/eval_results/diagnostics/<sae>.json
    path = out / "eval_results" / "diagnostics" / "dup.json"
    assert r.result_files["dup"]["diagnostics"] == path
    data = json.loads(path.read_text())
    m = data["eval_result_metrics"]
    assert m["decoder"]["near_dup_frac_gt0.8"] == m["decoder"]["near_dup_frac_gt0.9"] == 2 / D_SAE
    assert m["activations"]["max_pair_cosine"] == pytest.approx(1.0, abs=1e-9)
    assert (data["top_pairs"][0]["i"], data["top_pairs"][0]["j"]) == (3, F.D_MODEL)
    assert data["top_pairs"][0]["corr"] == pytest.approx(1.0, abs=1e-9)
    assert m["firing"]["dead_frac"] == 1 / D_SAE
    assert m["firing"]["n_tokens"] == DIAG["n_tokens"]
    assert data["sae_cfg_dict"]["d_sae"] == D_SAE and data["eval_config"]["hook_name"] == F.HOOK

    planted = json.loads((out / "eval_results" / "diagnostics" / "planted.json").read_text())
    assert planted["eval_result_metrics"]["decoder"]["near_dup_frac_gt0.9"] == 1.0  # +/- rows: |cos| = 1
    assert planted["eval_result_metrics"]["firing"]["n_tokens"] == DIAG["n_tokens"]

    # the comparison table: diagnostics columns next to core's
    dup = row_of(r, "dup")
    assert dup["diagnostics/decoder.near_dup_frac_gt0.8"] == 2 / D_SAE
    assert dup["diagnostics/firing.dead_frac"] == 1 / D_SAE
    assert dup["core/sparsity.l0"] > 0 and dup["d_sae"] == D_SAE
    with r.table_csv.open() as f:
        rows = {row["sae"]: row for row in csv.DictReader(f)}
    assert float(rows["dup"]["diagnostics/decoder.near_dup_frac_gt0.8"]) == pytest.approx(2 / D_SAE)
    assert float(rows["planted"]["diagnostics/decoder.near_dup_frac_gt0.9"]) == 1.0
    assert "diagnostics/activations.mean_pair_cosine" in rows["dup"]
    md = r.table_md.read_text()
    assert "diagnostics max_pair_cosine ↓" in md and "diagnostics near_dup_frac_gt0.8 ↓" in md
    assert any("near_dup_frac_gt0_8" in p.name for p in r.plots)
    assert "diagnostics" in json.loads(r.summary_json.read_text())["timings_s"]


def test_diagnostics_equal_brute_force_on_the_same_activations(env):
    """The JSON's activation statistics equal an n x n computation on the activations the suite collects."""
    out = env["root"] / "diag_only"
    r = sb.run_saebench(
        [("dup", env["saes"]["dup"])],
        "diagnostics",
        out_dir=out,
        device="cpu",
        suite_options={"diagnostics": DIAG},
        progress=False,
        plots=False,
    )
    m = json.loads(r.result_files["dup"]["diagnostics"].read_text())["eval_result_metrics"]

    sae, _ = sb.load_sae(env["saes"]["dup"])
    batches = list(_sae_activation_batches(env["fx"].model, sae, {**sb.DIAGNOSTICS_DEFAULTS, **DIAG}, 42))
    acts = torch.cat([torch.zeros(v.shape[0], D_SAE).scatter(1, i, v) for v, i in batches])
    assert acts.shape[0] == DIAG["n_tokens"]
    c = correlation_matrix(acts)
    iu = torch.triu_indices(D_SAE, D_SAE, 1)
    pairs = c[iu[0], iu[1]]
    assert m["activations"]["mean_pair_cosine"] == pytest.approx(pairs.mean().item(), rel=1e-9)
    assert m["activations"]["max_pair_cosine"] == pytest.approx(pairs.max().item(), rel=1e-9)
    assert m["firing"]["dead_frac"] == ((acts != 0).sum(0) == 0).double().mean().item()

    # an existing result is kept (force_rerun=False) and re-read
    mtime = r.result_files["dup"]["diagnostics"].stat().st_mtime_ns
    again = sb.run_saebench(
        [("dup", env["saes"]["dup"])],
        "diagnostics",
        out_dir=out,
        device="cpu",
        suite_options={"diagnostics": DIAG},
        progress=False,
        plots=False,
    )
    assert again.result_files["dup"]["diagnostics"].stat().st_mtime_ns == mtime
    assert row_of(again, "dup")["diagnostics/activations.max_pair_cosine"] == m["activations"]["max_pair_cosine"]


def test_unknown_diagnostics_option_is_reported(env):
    with pytest.raises(sb.SaebenchError, match="diagnostics has no option"):
        sb.run_saebench(
            [("dup", env["saes"]["dup"])],
            "diagnostics",
            out_dir=env["root"] / "bad",
            device="cpu",
            suite_options={"diagnostics": {"n_tokenz": 10}},
            progress=False,
            plots=False,
        )
