"""SAEBench's own eval code, offline, with known answers (``sae_lens_ortho.evals.saebench.run``).

Every suite runs SAEBench 0.6's real ``run_eval`` / ``multiple_evals`` on a tiny real ``HookedTransformer`` with a
locally trained tokenizer and planted embeddings (``tests/saebench_fixtures.py``); only SAEBench's download call
sites (``load_dataset``, the model loaders, sae-probes's packaged data) are monkeypatched. The SAEs are
``topk_ortho`` training SAEs saved the way a run saves them (``final/`` as plain ``topk``, checkpoints as
``topk_ortho``) and loaded back from those folders:

* ``planted``: TopK (k=4) over the +/- planted basis, so letters, professions, gender and the sae-probes concept
  each have their own latent;
* ``random``: TopK (k=16) over 512 random unit directions;
* ``perfect``: the +/- basis with k = d_model, which reconstructs every activation exactly.

The known answers: core gives explained variance and CE/KL scores of exactly 1 for ``perfect`` (and the same
numbers from its checkpoint folder), absorption is ~0 for ``planted`` and high for ``random``, the planted
concept latent is found by sparse probing and sae-probes (top-1 accuracy ~1 vs near chance), and ablating it
moves SCR and TPP where ablating random latents does not. Every JSON passes SAEBench's validator.

Skipped unless SAEBench is installed (see docs/saebench.md for the recipe).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

pytest.importorskip("sae_bench", reason="SAEBench is not installed (see docs/saebench.md)")

import saebench_fixtures as F  # noqa: E402

from sae_lens_ortho.evals.saebench import run as sb  # noqa: E402
from sae_lens_ortho.evals.saebench.cli import _parse_options, cli_main  # noqa: E402
from sae_lens_ortho.evals.saebench.suites import SAEBENCH_SUITES  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

BIOS = "LabHC/bias_in_bios_class_set1"
SMALL = {
    "core": dict(
        n_eval_reconstruction_batches=3, n_eval_sparsity_variance_batches=2, eval_batch_size_prompts=8, context_size=32
    ),
    "scr": dict(
        dataset_names=[BIOS],
        column1_vals_lookup={BIOS: [("professor", "nurse")]},
        train_set_size=160,
        test_set_size=80,
        context_length=32,
        sae_batch_size=64,
        n_values=[2, 5, 20],
    ),
    "tpp": dict(
        dataset_names=[BIOS],
        train_set_size=160,
        test_set_size=80,
        context_length=32,
        sae_batch_size=64,
        n_values=[2, 5, 20],
    ),
    "sparse_probing": dict(
        dataset_names=[BIOS], probe_train_set_size=160, probe_test_set_size=80, context_length=32, sae_batch_size=64
    ),
    "sae_probes": dict(dataset_names=[F.PROBE_DATASET], ks=[1, 2, 5]),
    # the tiny vocabulary is one probe batch at SAEBench's 4096: use small batches so the k-sparse probes train
    "absorption": dict(max_k_value=3, k_sparse_probe_batch_size=64, precalc_k_sparse_probe_sae_acts=True),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The fixture model/data, SAE folders, the offline patches, and an empty working directory that must stay
    empty (SAEBench writes relative paths unless redirected)."""
    root = tmp_path_factory.mktemp("saebench")
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    with pytest.MonkeyPatch.context() as mp:
        fx = F.build_fixture(root / "fixture")
        downloads = F.install_offline(mp, fx, root / "sae_probes_data")
        cwd = root / "cwd"
        cwd.mkdir()
        mp.chdir(cwd)
        saes = {
            "planted": fx.sae_folder("planted", F.planted_sae(fx.basis, k=4)),
            "random": fx.sae_folder("random", F.random_sae(512, k=16)),
            "perfect": fx.sae_folder("perfect", F.planted_sae(fx.basis, k=F.D_MODEL)),
            # decoder rows of norm 2: the checkpoint must still evaluate exactly like the final SAE
            "perfect_ckpt": fx.sae_folder(
                "perfect_ckpt", F.planted_sae(fx.basis, k=F.D_MODEL, decoder_norm=2.0), checkpoint=True
            ),
        }
        site_artifacts = Path(importlib.util.find_spec("sae_bench").origin).parent / "artifacts"
        existed = site_artifacts.exists()
        yield {"fx": fx, "downloads": downloads, "saes": saes, "root": root, "cwd": cwd}
        assert list(cwd.iterdir()) == [], "SAEBench wrote into the working directory"
        assert site_artifacts.exists() == existed, "SAEBench wrote artifacts into site-packages"
    torch.set_num_threads(threads)


def run(env: dict[str, Any], suites: list[str], names: list[str], out: str, **kw: Any) -> sb.SaebenchResult:
    result = sb.run_saebench(
        [(n, env["saes"][n]) for n in names],
        suites,
        out_dir=env["root"] / out,
        device="cpu",
        suite_options={s: SMALL[s] for s in sb.normalize_suites(suites)},
        llm_batch_size=64,
        progress=False,
        **kw,
    )
    assert result.failures == {}
    for name in names:
        for suite in result.suites:
            path = result.result_files[name][suite]
            assert path.parent.name == sb.EVAL_TYPE_IDS[suite]
            assert path.parent.parent == env["root"] / out / "eval_results"
            sb.validate_result_file(path, suite)  # SAEBench's own validator
    return result


def metrics(result: sb.SaebenchResult, name: str) -> dict[str, float]:
    (row,) = [r for r in result.rows if r["sae"] == name]
    return row


def test_core_known_answers(env):
    r = run(env, ["core"], ["perfect", "perfect_ckpt", "planted", "random"], "core")
    perfect, ckpt = metrics(r, "perfect"), metrics(r, "perfect_ckpt")
    planted, rand = metrics(r, "planted"), metrics(r, "random")
    for m in (perfect, ckpt):
        assert m["core/reconstruction_quality.explained_variance"] > 0.9999
        assert m["core/reconstruction_quality.cossim"] > 0.9999
        assert m["core/model_performance_preservation.ce_loss_score"] == pytest.approx(1.0, abs=1e-3)
        assert m["core/model_behavior_preservation.kl_div_score"] == pytest.approx(1.0, abs=1e-3)
        assert m["core/sparsity.l0"] == pytest.approx(F.D_MODEL, abs=0.5)
    # the checkpoint folder (topk_ortho, unfolded norm-2 decoder) evaluates exactly like the final folder
    for key in (
        "core/reconstruction_quality.explained_variance",
        "core/model_performance_preservation.ce_loss_score",
        "core/sparsity.l0",
        "core/misc_metrics.frac_alive",
    ):
        assert ckpt[key] == pytest.approx(perfect[key], abs=1e-5)
    assert planted["core/sparsity.l0"] == pytest.approx(4, abs=0.01)
    assert rand["core/sparsity.l0"] == pytest.approx(16, abs=0.01)
    assert rand["core/reconstruction_quality.explained_variance"] < 0.5
    assert perfect["l0"] == perfect["core/sparsity.l0"]
    # SAEBench loaded the model and the dataset through the patched download call sites
    assert F.MODEL_NAME in env["downloads"].models and F.OWT_DATASET in env["downloads"].datasets
    # report: tables and plots
    md = r.table_md.read_text()
    assert "| perfect_ckpt |" in md and "explained_variance" in md
    header = r.table_csv.read_text().splitlines()[0].split(",")
    assert "core/reconstruction_quality.explained_variance" in header and "l0" in header
    assert any(p.name.endswith("explained_variance.png") for p in r.plots)
    summary = json.loads(r.summary_json.read_text())
    assert summary["failures"] == [] and len(summary["rows"]) == 4


def test_absorption_known_answer(env):
    with pytest.warns(UserWarning, match="absorption is only meaningful"):
        r = run(env, ["absorption"], ["planted", "random"], "absorption", artifacts_dir=env["root"] / "abs_art")
    planted = metrics(r, "planted")["absorption/mean.mean_absorption_fraction_score"]
    rand = metrics(r, "random")["absorption/mean.mean_absorption_fraction_score"]
    print(f"absorption fraction: planted {planted:.3f}, random {rand:.3f}")
    assert planted < 0.1
    assert rand > 0.5
    # artifacts went where we said: probes, experiments and SAEBench's k-sparse-probing table
    art = env["root"] / "abs_art" / "absorption"
    assert (art / "probes" / F.MODEL_NAME / "layer_0" / "probe.pth").exists()
    assert (art / "experiments" / "feature_absorption" / "planted_custom_sae").is_dir()
    assert (art / "artifacts" / "absorption" / "random_custom_sae_k_sparse_probing.json").exists()
    assert "Absorption is only meaningful" in r.table_md.read_text()


def test_absorption_stop_is_reported(env):
    """Absorption silently stops (no JSON) when too few first letters have a good LLM probe: reported, with why."""
    options = {"absorption": {**SMALL["absorption"], "min_GT_probe_f1": 1.01}}  # no probe can pass
    r = sb.run_saebench(
        [("planted", env["saes"]["planted"])],
        "absorption",
        out_dir=env["root"] / "abs_stop",
        artifacts_dir=env["root"] / "abs_art",
        device="cpu",
        suite_options=options,
        progress=False,
        strict=False,
    )
    why = r.failures[("planted", "absorption")]
    assert "only 0 of 26 first letters have an LLM probe with F1 > 1.01" in why
    with pytest.raises(sb.SaebenchError, match="first letters"):
        sb.run_saebench(
            [("planted", env["saes"]["planted"])],
            "absorption",
            out_dir=env["root"] / "abs_stop",
            artifacts_dir=env["root"] / "abs_art",
            device="cpu",
            suite_options=options,
            progress=False,
        )


def test_scr_tpp_known_answer(env):
    r = run(env, ["scr", "tpp"], ["planted", "random"], "scr_tpp")
    p, q = metrics(r, "planted"), metrics(r, "random")
    scr_p, scr_r = p["scr/scr_metrics.scr_metric_threshold_2"], q["scr/scr_metrics.scr_metric_threshold_2"]
    tpp_p, tpp_r = p["tpp/tpp_metrics.tpp_threshold_2_total_metric"], q["tpp/tpp_metrics.tpp_threshold_2_total_metric"]
    print(f"SCR@2: planted {scr_p:.3f}, random {scr_r:.3f}; TPP@2: planted {tpp_p:.3f}, random {tpp_r:.3f}")
    # ablating the planted gender latents removes the spurious signal; two random latents do not
    assert scr_p > 0.2 and scr_p - scr_r > 0.15
    # ablating a profession's latent hurts that profession's probe only
    assert tpp_p > 0.15 and tpp_r < 0.1
    # n_values were used as given (all <= d_sae); N=50 etc. are absent
    assert p.get("scr/scr_metrics.scr_metric_threshold_50") is None
    md = r.table_md.read_text()
    assert "Reported, not headlined" in md and "Chanin 2026" in md


def test_sparse_probing_known_answer(env):
    r = run(env, ["sparse_probing"], ["planted", "random"], "sparse_probing")
    p = metrics(r, "planted")["sparse_probing/sae.sae_top_1_test_accuracy"]
    q = metrics(r, "random")["sparse_probing/sae.sae_top_1_test_accuracy"]
    llm = metrics(r, "planted")["sparse_probing/llm.llm_test_accuracy"]
    print(f"sparse probing top-1: planted {p:.3f}, random {q:.3f} (LLM probe {llm:.3f})")
    assert p > 0.95 and q < 0.85 and llm > 0.9


def test_sae_probes_known_answer(env):
    r = run(env, ["sparse_probing_sae_probes"], ["planted", "random"], "sae_probes")
    p = metrics(r, "planted")["sae_probes/sae.sae_top_1_test_accuracy"]
    q = metrics(r, "random")["sae_probes/sae.sae_top_1_test_accuracy"]
    llm = metrics(r, "planted")["sae_probes/llm.llm_test_accuracy"]
    print(f"sae-probes top-1: planted {p:.3f}, random {q:.3f} (LLM baseline {llm:.3f})")
    assert p > 0.95 and q < 0.8 and llm > 0.95
    results_root = env["root"] / "sae_probes" / "artifacts" / "sparse_probing_sae_probes"
    assert (results_root / "planted_custom_sae").is_dir()


def test_in_memory_model(env):
    """``model=`` hands SAEBench a HookedTransformer without going through any loader."""
    before = len(env["downloads"].models)
    r = sb.run_saebench(
        [("perfect", env["saes"]["perfect"])],
        "core",
        model=env["fx"].model,
        out_dir=env["root"] / "in_memory",
        device="cpu",
        suite_options={"core": {**SMALL["core"], "n_eval_reconstruction_batches": 1}},
        progress=False,
        plots=False,
    )
    assert len(env["downloads"].models) == before
    assert metrics(r, "perfect")["core/reconstruction_quality.explained_variance"] > 0.9999


def test_swallowed_core_errors_raise(env, monkeypatch):
    """``multiple_evals`` logs per-SAE errors and returns []: run_saebench turns that into an error."""
    import sae_bench.evals.core.main as core

    def boom(*args, **kwargs):
        raise RuntimeError("boom from run_evals")

    monkeypatch.setattr(core, "run_evals", boom)
    with pytest.raises(sb.SaebenchError, match="boom from run_evals") as info:
        sb.run_saebench(
            [("perfect", env["saes"]["perfect"])],
            ["core"],
            out_dir=env["root"] / "boom",
            device="cpu",
            suite_options={"core": SMALL["core"]},
            progress=False,
        )
    assert ("perfect", "core") in info.value.failures
    # strict=False reports instead of raising, and the table lists what is missing
    r = sb.run_saebench(
        [("perfect", env["saes"]["perfect"])],
        ["core"],
        out_dir=env["root"] / "boom2",
        device="cpu",
        suite_options={"core": SMALL["core"]},
        progress=False,
        strict=False,
    )
    assert ("perfect", "core") in r.failures and "Missing results" in r.table_md.read_text()


def test_load_final_run_and_checkpoint_folders(env, tmp_path):
    fx = env["fx"]
    x = torch.randn(32, F.D_MODEL) * 3
    final, kind = sb.load_sae(env["saes"]["perfect"])
    assert kind == "final" and final.cfg.architecture() == "topk"
    ckpt, kind = sb.load_sae(env["saes"]["perfect_ckpt"])
    assert kind == "checkpoint" and ckpt.cfg.architecture() == "topk"
    assert torch.allclose(ckpt.W_dec.norm(dim=-1), torch.ones(2 * F.D_MODEL), atol=1e-5)
    assert torch.allclose(ckpt.encode(x), final.encode(x), atol=1e-5)
    assert torch.allclose(ckpt.decode(ckpt.encode(x)), x, atol=1e-4)
    # a mid-training checkpoint still holds the activation scaler (weights act on s * x): it is folded on load
    sae = F.planted_sae(fx.basis, k=4)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(2 * F.D_MODEL) * 0.5)
        sae.b_dec.copy_(torch.randn(F.D_MODEL))
        s = 0.5
        expected = sae.decode(sae.encode(s * x)) / s
        unfolded = sae.decode(sae.encode(x))
    assert not torch.allclose(expected, unfolded, atol=1e-2)
    scaled = F.save_checkpoint(sae, tmp_path / "scaled_ckpt")
    (scaled / "activation_scaler.json").write_text(json.dumps({"scaling_factor": s, "has_whitening": False}))
    folded, kind = sb.load_sae(scaled)
    assert kind == "checkpoint"
    with torch.no_grad():
        assert torch.allclose(folded.decode(folded.encode(x)), expected, atol=1e-4)
    # a run folder resolves to its final/ folder, and names come from the run
    run_dir = tmp_path / "my_run"
    F.save_final(F.planted_sae(fx.basis, k=4), run_dir / "final")
    spec = sb.resolve_sae(str(run_dir))
    assert spec.kind == "final" and spec.name == "my_run" and spec.source.endswith("final")
    assert sb.resolve_sae(env["saes"]["perfect_ckpt"]).name == "saes-perfect_ckpt"
    with pytest.raises(ValueError, match="not a SAELens pretrained release"):
        sb.resolve_sae("no-such-release/layer_0")
    with pytest.raises(FileNotFoundError):
        sb.resolve_sae(str(tmp_path / "missing"))


def test_suites_and_options(monkeypatch, tmp_path):
    assert sb.normalize_suites("sparse_probing_sae_probes, core") == ["core", "sae_probes"]
    assert sb.normalize_suites(["scr_and_tpp"]) == ["scr", "tpp"]
    with pytest.raises(ValueError, match="unknown SAEBench suite"):
        sb.normalize_suites(["nope"])
    assert _parse_options(["scr.n_values=[2, 5]", "core.dataset=some/path"]) == {
        "scr": {"n_values": [2, 5]},
        "core": {"dataset": "some/path"},
    }
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="autointerp needs an OpenAI API key"):
        sb.run_saebench(["x/y"], ["autointerp"], out_dir=tmp_path / "unused")
    with pytest.raises(ValueError, match="suite_options given for suites that do not run"):
        sb.run_saebench(["x/y"], ["core"], out_dir=tmp_path / "unused", suite_options={"scr": {}})
    assert not (tmp_path / "unused").exists()


def test_cli(env):
    out = env["root"] / "cli"
    argv = [
        f"perfect={env['saes']['perfect']}",
        "--suites",
        "core",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--quiet",
        "--no-plots",
    ]
    argv += [f"--option=core.{k}={json.dumps(v)}" for k, v in SMALL["core"].items()]
    assert cli_main(argv) == 0
    assert (out / "saebench_table.md").exists()
    assert (out / "eval_results" / "core" / "perfect_custom_sae_eval_results.json").exists()
    # the script in evals/ is the same entry point
    script = Path(__file__).resolve().parents[1] / "evals" / "run_saebench.py"
    spec = importlib.util.spec_from_file_location("run_saebench_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def test_every_saebench_suite_is_one_record():
    """One record per suite (its id, output schema, eval config, runner, checks): every SAEBench suite has one, each
    names classes SAEBench has, and the run values it fills in are fields of its config."""
    import dataclasses

    from sae_lens_ortho.evals.saebench.specs import SUITES

    assert list(SAEBENCH_SUITES) == [s for s in SUITES if s != sb.DIAGNOSTICS_SUITE]
    for name, suite in SAEBENCH_SUITES.items():
        assert suite.name == name and suite.id == sb.EVAL_TYPE_IDS[name]
        assert isinstance(_resolve(suite.output_type), type), name
        if suite.config:
            fields = {f.name for f in dataclasses.fields(_resolve(suite.config))}
            assert set(suite.config_defaults) <= fields, name
        else:
            assert name == "core" and not suite.config_defaults
    with pytest.raises(ValueError, match="autointerp needs an OpenAI API key"):
        (check,) = SAEBENCH_SUITES["autointerp"].checks
        check(SimpleNamespace(api_key=None))
