"""The offline route of the README: ``sae-lens-ortho train`` on a local Hugging Face model folder and a local dataset,
then ``sae-lens-ortho eval --model <folder> --suites core`` on the result.

Everything is real and local: a GPT-NeoX folder written with ``save_pretrained`` and a tokenizer trained with
``tokenizers`` (tests/local_hf.py), a dataset pre-tokenized by SAELens's own ``PretokenizeRunner``, SAELens's
runner, SAEBench's core eval. The Hub is unreachable (``HF_HUB_OFFLINE=1``, set by conftest): any download
attempt fails the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import local_hf as L
import pytest
from sae_lens import SAE

from sae_lens_ortho.local_sources import ModelSourceError, check_model_source, local_sources
from sae_lens_ortho_cli import main

CORE_SMALL = [
    "--option",
    f"core.context_size={L.CONTEXT}",
    "--option",
    "core.n_eval_reconstruction_batches=2",
    "--option",
    "core.n_eval_sparsity_variance_batches=1",
    "--option",
    "core.eval_batch_size_prompts=4",
]


def error_line(stderr: str) -> str:
    """The one ``sae-lens-ortho CMD: error: ...`` line of stderr (progress bars may precede it)."""
    lines = [line for line in stderr.splitlines() if line.startswith("sae-lens-ortho ")]
    assert len(lines) == 1 and ": error: " in lines[0], stderr[-2000:]
    assert stderr.rstrip().endswith(lines[0]) and "Traceback" not in stderr
    return lines[0]


def train_args(model: str, dataset: str, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model_name",
        model,
        "--hook_name",
        L.HOOK,
        "--dataset_path",
        dataset,
        "--streaming",
        "False",
        "--d_in",
        str(L.HIDDEN),
        "--d_sae",
        "64",
        "--k",
        "4",
        "--ortho_coefficient",
        "0.3",
        "--ortho_pair_fraction",
        "0.05",
        "--context_size",
        str(L.CONTEXT),
        "--training_tokens",
        "2048",
        "--train_batch_size_tokens",
        "256",
        "--store_batch_size_prompts",
        "4",
        "--n_batches_in_buffer",
        "8",
        "--n_batches_for_norm_estimate",
        "2",
        "--log_to_wandb",
        "False",
        "--output_path",
        str(out / "final"),
        "--checkpoint_path",
        str(out / "ckpt"),
        "--verbose",
        "False",
        *extra,
    ]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("offline_route")
    model = L.model_folder(root / "model")
    text = L.text_folder(root / "text")
    return {"root": root, "model": model, "text": text, "tokens": L.pretokenize(text, model, root / "tokens")}


def test_train_then_eval_on_a_local_model_folder(
    local: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(local["root"])  # relative paths, as a user types them
    assert main(train_args("model", "tokens", tmp_path / "run")) == 0
    assert "publish it with: sae-lens-ortho publish" in capsys.readouterr().out
    final = tmp_path / "run" / "final"
    sae = SAE.load_from_disk(final)
    assert sae.cfg.architecture() == "topk" and sae.cfg.metadata.training_architecture == "topk_ortho"
    # recorded as absolute paths, so eval finds them from anywhere
    assert sae.cfg.metadata.model_name == str(local["model"].resolve())
    assert sae.cfg.metadata.dataset_path == str(local["tokens"].resolve())

    monkeypatch.chdir(tmp_path)
    evals = {}
    for name, model_flag in (("given", ["--model", str(local["model"])]), ("recorded", [])):
        out = tmp_path / f"eval_{name}"
        argv = [str(final), *model_flag, "--dataset", str(local["tokens"]), "--suites", "core", "--out", str(out)]
        assert main(["eval", *argv, "--device", "cpu", "--quiet", "--no-plots", *CORE_SMALL]) == 0
        result = out / "eval_results" / "core" / "run_custom_sae_eval_results.json"
        from sae_lens_ortho.evals.saebench.run import validate_result_file

        validate_result_file(result, "core")  # SAEBench's own validator
        evals[name] = json.loads(result.read_text())["eval_result_metrics"]
    core = evals["given"]
    assert core["sparsity"]["l0"] == pytest.approx(4.0)  # TopK k = 4, on the model's real activations
    assert 0 < core["misc_metrics"]["frac_alive"] <= 1
    # --model and the folder recorded at training are the same model: the same numbers
    assert evals["recorded"]["reconstruction_quality"] == core["reconstruction_quality"]
    assert evals["recorded"]["model_behavior_preservation"] == core["model_behavior_preservation"]


def test_the_dataset_tokenizer_check_runs_on_local_files(
    local: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SAELens compares the tokenizer named in a pre-tokenized dataset's sae_lens.json with the model's; offline
    and local it now reads that file from the dataset folder (it used to die asking the Hub for it)."""
    other = L.tokenizer_folder(tmp_path / "other_tokenizer", seed=7)  # a different vocabulary
    tokens = L.pretokenize(local["text"], other, tmp_path / "other_tokens")
    assert json.loads((tokens / "sae_lens.json").read_text())["tokenizer_name"] == str(other)
    # The CLI reports a bad run on one line (cli.py) and returns exit status 2.
    assert main(train_args(str(local["model"]), str(tokens), tmp_path / "run")) == 2
    assert "does not match model tokenizer" in capsys.readouterr().err


def test_tokens_made_with_a_relative_tokenizer_path_train_from_a_sibling_folder(
    local: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's recipe: PretokenizeRunnerConfig(tokenizer_name="./my-model", save_path="./tokens") records
    "./my-model" in sae_lens.json; training from a sibling folder died with ``OSError: Repo id must use alphanumeric
    chars ... './my-model'``. The name is now resolved against the dataset folder's parents, and the check runs."""
    project = tmp_path / "project"
    L.model_folder(project / "my-model")
    other = L.tokenizer_folder(tmp_path / "other", seed=7)  # a different vocabulary, for the check's other side
    monkeypatch.chdir(project)
    L.pretokenize(local["text"], "./my-model", Path("./tokens"))  # as the README writes it
    L.pretokenize(local["text"], other, Path("./other_tokens"))
    (project / "other_tokens" / "sae_lens.json").write_text(
        (project / "other_tokens" / "sae_lens.json").read_text().replace(str(other), "../other")
    )
    assert json.loads((project / "tokens" / "sae_lens.json").read_text())["tokenizer_name"] == "./my-model"
    (project / "work").mkdir()
    monkeypatch.chdir(project / "work")
    capsys.readouterr()
    assert main(train_args("../my-model", "../tokens", Path("run"))) == 0
    err = capsys.readouterr().err
    check = [line for line in err.splitlines() if line.startswith("dataset tokenizer check: ")]
    assert check == [
        f"dataset tokenizer check: {(project / 'my-model').resolve()} (named './my-model' in "
        f"{(project / 'tokens' / 'sae_lens.json').resolve()}) has the model's vocabulary"
    ], err[-2000:]
    # the resolved path is really checked: a recorded tokenizer with another vocabulary is refused
    assert main(train_args("../my-model", "../other_tokens", Path("run2"))) == 2
    assert f"Dataset tokenizer {other.resolve()} (named '../other'" in error_line(capsys.readouterr().err)
    # a recorded path found nowhere: the run goes on and says the check did not run
    recorded = project / "tokens" / "sae_lens.json"
    recorded.write_text(recorded.read_text().replace('"./my-model"', '"./gone-model"'))
    assert main(train_args("../my-model", "../tokens", Path("run3"))) == 0
    assert "dataset tokenizer check: not run: the tokenizer './gone-model' named in" in capsys.readouterr().err


@pytest.mark.parametrize(
    "route",
    ["text_dataset", "hf_model_class"],
)
def test_other_local_routes_train(local: dict[str, Path], tmp_path: Path, route: str) -> None:
    if route == "text_dataset":  # a parquet folder of text, tokenized on the fly
        args = train_args(str(local["model"]), str(local["text"]), tmp_path, "--is_dataset_tokenized", "False")
    else:  # SAELens's AutoModelForCausalLM wrapper hooks Hugging Face modules
        args = train_args(str(local["model"]), str(local["tokens"]), tmp_path, "--model_class_name")
        args += ["AutoModelForCausalLM"]
        args[args.index("--hook_name") + 1] = "gpt_neox.layers.0"
    assert main(args) == 0
    sae = SAE.load_from_disk(tmp_path / "final")
    assert sae.cfg.metadata.training_architecture == "topk_ortho"


def test_failures_are_one_line(local: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(train_args("no-such-model", str(local["tokens"]), run)) == 2
    assert "'no-such-model' is neither a local model folder" in error_line(capsys.readouterr().err)
    assert not run.exists()  # refused before anything loaded
    with pytest.raises(ModelSourceError, match=r"folder without config.json"):
        check_model_source(str(local["text"]))
    with pytest.raises(ModelSourceError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
        check_model_source("gpt2")  # a TransformerLens name, offline and never downloaded
    # eval: an SAE reading a Hugging Face module cannot run on a TransformerLens model; said before anything runs
    hf_run = tmp_path / "hf"
    args = train_args(str(local["model"]), str(local["tokens"]), hf_run, "--model_class_name", "AutoModelForCausalLM")
    args[args.index("--hook_name") + 1] = "gpt_neox.layers.0"
    assert main(args) == 0
    capsys.readouterr()
    argv = ["eval", str(hf_run / "final"), "--suites", "core", "--out", str(tmp_path / "ev"), "--quiet"]
    assert main(argv) == 2
    assert "'gpt_neox.layers.0', which is no hook point" in error_line(capsys.readouterr().err)
    assert main([*argv, "--model", "no-such-model"]) == 2
    assert "'no-such-model' is neither a local model folder" in error_line(capsys.readouterr().err)


def dataset_cases(root: Path, tokens: Path) -> dict[str, tuple[str, str]]:
    """Bad --dataset_path values, made for real on disk, with the error each must give."""
    from datasets import Dataset

    (root / "empty").mkdir()
    (root / "binary").mkdir()
    (root / "binary" / "data.bin").write_bytes(bytes(range(256)) * 4)
    Dataset.from_dict({"words": ["a b c"] * 8}).to_parquet(str(root / "no_column" / "train.parquet"))
    Dataset.from_dict({"tokens": [[1, 2, 3]] * 0}).save_to_disk(str(root / "no_rows"))
    return {
        "missing": (str(root / "missing"), "missing does not exist; a local dataset is a save_to_disk folder"),
        "hub_offline": ("someone/some-dataset", "is neither a local folder nor a Hub dataset in the local cache"),
        "empty": (str(root / "empty"), "empty is an empty folder"),
        "wrong_format": (str(root / "binary"), "binary cannot be read as a dataset (DataFilesNotFoundError"),
        "no_tokens_column": (str(root / "no_column"), "no_column has no column SAELens reads: its columns are words"),
        "no_rows": (str(root / "no_rows"), "no_rows has no rows in its train split"),
        "short_context": (str(tokens), f"holds sequences of {L.CONTEXT} tokens, shorter than --context_size"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "hub_offline", "empty", "wrong_format", "no_tokens_column", "no_rows", "short_context"]
)
def test_dataset_mistakes_are_one_line_before_the_model_loads(
    local: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """A bad --dataset_path was a 43-47 line traceback after the model had loaded. The model here is a copy of the
    local folder with its weights truncated: had it been loaded first, its error would be the one reported."""
    import shutil

    broken_model = tmp_path / "broken_model"
    shutil.copytree(local["model"], broken_model)
    weights = broken_model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    path, expected = dataset_cases(tmp_path, local["tokens"])[case]
    extra = ["--context_size", str(2 * L.CONTEXT)] if case == "short_context" else []
    assert main([*train_args(str(broken_model), path, tmp_path / "run"), *extra]) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith("sae-lens-ortho train: error: --dataset_path: ") and expected in line, line


def test_local_sources_restores_what_it_replaced(local: dict[str, Path]) -> None:
    import sae_lens.training.activations_store as store
    from transformer_lens import loading_from_pretrained as loading

    def replaced() -> tuple[Any, ...]:
        names = ("hf_hub_download", "load_dataset", "validate_pretokenized_dataset_tokenizer")
        return (loading.get_official_model_name, *(getattr(store, name) for name in names))

    before = replaced()
    with local_sources():
        assert loading.get_official_model_name(str(local["model"])) == str(local["model"].resolve())
        assert loading.get_official_model_name("pythia-70m-deduped") == "EleutherAI/pythia-70m-deduped"
        assert store.hf_hub_download(str(local["tokens"]), "sae_lens.json", repo_type="dataset").endswith(
            "sae_lens.json"
        )
        assert store.hf_hub_download(str(local["text"]), "sae_lens.json", repo_type="dataset") is None
        assert store.hf_hub_download("someone/some-dataset", "sae_lens.json", repo_type="dataset") is None  # offline
        assert len(store.load_dataset(str(local["tokens"]), split="train")) > 0  # a save_to_disk folder
    assert replaced() == before
