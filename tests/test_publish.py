"""``publish_run``: a real tiny training run, uploaded through SAELens's uploader to a fake Hub.

Only huggingface_hub's network methods are replaced (``HfApi.repo_info / create_repo / create_branch /
file_exists / upload_folder / upload_file``): every commit lands in a local folder per repo and revision, which
then stands in for the remote. Loading back uses SAELens's own loaders: ``SAE.load_from_disk`` on the uploaded
folder, and ``SAE.from_pretrained(repo_id, sae_id)`` through the real ``hf_hub_download`` in offline mode, after
the "remote" is mirrored into the Hugging Face cache layout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import sae_lens_ortho  # noqa: F401  (registers topk_ortho)
from sae_lens_ortho.hub import (
    INSTALL_FROM_SOURCE,
    SEED_PAPERS,
    SEED_TITLES,
    PublishError,
    SeedPaper,
    model_card,
    publish_run,
)
from sae_lens_ortho_cli import main as cli_main

ORTHO = dict(
    ortho_coefficient=0.3,
    ortho_warm_up_steps=2,
    ortho_pair_fraction=0.05,
    ortho_weighting="hinge",
    ortho_tau=0.25,
    ortho_decoder_coefficient=0.01,
    ortho_decoder_reduction="mean",
    ortho_method="sparse",
    ortho_chunk_size=128,
)
HOOK = "blocks.0.hook_resid_post"
REPO = "tester/tiny-ortho"
SEED000 = "Memory-efficient feature disentanglement: selective orthogonality constraints for sparse autoencoders"


# --- a tiny real training run ------------------------------------------------------------------------------------


def _isolated_env(mp: pytest.MonkeyPatch, root: Path) -> None:
    mp.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "HF_HOME", "HF_DATASETS_CACHE"):
        mp.setenv(var, str(root / "home" / var.lower()))


def _train_tiny_run(root: Path) -> SimpleNamespace:
    from datasets import Dataset
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from sae_lens_ortho import TopKOrthoTrainingSAEConfig

    torch.manual_seed(0)
    model = HookedTransformer(
        HookedTransformerConfig(
            n_layers=1,
            d_model=32,
            n_ctx=64,
            d_head=8,
            n_heads=4,
            d_mlp=128,
            d_vocab=500,
            act_fn="gelu",
            normalization_type="LN",
        )
    )
    tokens = torch.randint(0, 500, (32, 64), generator=torch.Generator().manual_seed(0))
    dataset = Dataset.from_dict({"tokens": tokens.tolist()})
    cfg = LanguageModelSAERunnerConfig(
        sae=TopKOrthoTrainingSAEConfig(d_in=32, d_sae=64, k=4, **ORTHO),
        model_name="tiny-test-model",
        hook_name=HOOK,
        dataset_path="local/tiny-tokens",
        is_dataset_tokenized=True,
        streaming=False,
        context_size=64,
        training_tokens=2048,
        train_batch_size_tokens=256,
        store_batch_size_prompts=4,
        n_batches_in_buffer=8,
        n_checkpoints=1,
        logger=LoggingConfig(log_to_wandb=False),
        model_from_pretrained_kwargs={},
        device="cpu",
        output_path=str(root / "run" / "final"),
        checkpoint_path=str(root / "run" / "checkpoints"),
        seed=0,
        verbose=False,
    )
    trained = LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=dataset).run()
    checkpoints = sorted(p.parent for p in (root / "run" / "checkpoints").glob("*/*/trainer_state.pt"))
    assert checkpoints, "the run saved no checkpoint"
    return SimpleNamespace(
        run_dir=root / "run", final=root / "run" / "final", checkpoint=checkpoints[0], trained=trained.eval()
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("tiny_run")
    with pytest.MonkeyPatch.context() as mp:
        _isolated_env(mp, root)
        return _train_tiny_run(root)


# --- a fake Hub: huggingface_hub's network methods, writing to local folders --------------------------------------


def _repo_not_found(repo_id: str) -> Exception:
    from huggingface_hub.utils import RepositoryNotFoundError

    err = RepositoryNotFoundError.__new__(RepositoryNotFoundError)  # the real one wants an HTTP response
    Exception.__init__(err, f"404 Client Error: Repository Not Found for {repo_id}")
    return err


class FakeHub:
    """Repos live in ``root/<owner>/<name>/<revision>/``; ``calls`` records (method, repo_id, kwargs)."""

    def __init__(self, root: Path):
        self.root = root
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.private: dict[str, bool] = {}

    def tree(self, repo_id: str, revision: str | None = None) -> Path:
        return self.root / repo_id / (revision or "main")

    def files(self, repo_id: str, revision: str = "main") -> set[str]:
        base = self.tree(repo_id, revision)
        return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}

    def _require(self, repo_id: str, revision: str | None = None) -> Path:
        if not (self.root / repo_id).is_dir():
            raise _repo_not_found(repo_id)
        tree = self.tree(repo_id, revision)
        if not tree.is_dir():
            raise ValueError(f"fake hub: {repo_id} has no revision {revision!r}")
        return tree

    def install(self, mp: pytest.MonkeyPatch) -> None:
        from huggingface_hub import HfApi, constants
        from huggingface_hub.utils import filter_repo_objects

        hub = self

        def repo_info(api, repo_id, *, revision=None, repo_type=None, **kw):
            hub.calls.append(("repo_info", repo_id, dict(revision=revision)))
            hub._require(repo_id)
            return SimpleNamespace(id=repo_id, private=hub.private[repo_id], sha="0" * 40)

        def create_repo(api, repo_id, *, private=None, repo_type=None, exist_ok=False, **kw):
            hub.calls.append(("create_repo", repo_id, dict(private=private, repo_type=repo_type, exist_ok=exist_ok)))
            assert repo_type in (None, "model")
            if (hub.root / repo_id).is_dir():
                if not exist_ok:
                    raise RuntimeError(f"409: {repo_id} exists")
            else:
                hub.tree(repo_id).mkdir(parents=True)
                (hub.tree(repo_id) / ".gitattributes").write_text("*.safetensors filter=lfs\n")
                hub.private[repo_id] = bool(private)
            return f"{constants.ENDPOINT}/{repo_id}"

        def create_branch(api, repo_id, *, branch, revision=None, repo_type=None, exist_ok=False, **kw):
            hub.calls.append(("create_branch", repo_id, dict(branch=branch, revision=revision, exist_ok=exist_ok)))
            source = hub._require(repo_id, revision)
            if hub.tree(repo_id, branch).exists():
                if not exist_ok:
                    raise RuntimeError(f"409: branch {branch} exists")
                return
            shutil.copytree(source, hub.tree(repo_id, branch))

        def file_exists(api, repo_id, filename, *, repo_type=None, revision=None, **kw):
            hub.calls.append(("file_exists", repo_id, dict(filename=filename, revision=revision)))
            if not (hub.root / repo_id).is_dir():
                return False
            return (hub.tree(repo_id, revision) / filename).is_file()

        def upload_folder(
            api,
            *,
            repo_id,
            folder_path,
            path_in_repo=None,
            revision=None,
            repo_type=None,
            allow_patterns=None,
            ignore_patterns=None,
            delete_patterns=None,
            **kw,
        ):
            hub.calls.append(
                (
                    "upload_folder",
                    repo_id,
                    dict(path_in_repo=path_in_repo, revision=revision, allow_patterns=allow_patterns),
                )
            )
            assert delete_patterns is None
            tree = hub._require(repo_id, revision)
            folder = Path(folder_path)
            rel = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            for name in filter_repo_objects(rel, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
                dest = tree / (path_in_repo or "") / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / name, dest)
            return SimpleNamespace(commit_url=f"{constants.ENDPOINT}/{repo_id}/commit/fake")

        def upload_file(api, *, path_or_fileobj, path_in_repo, repo_id, revision=None, repo_type=None, **kw):
            hub.calls.append(("upload_file", repo_id, dict(path_in_repo=path_in_repo, revision=revision)))
            tree = hub._require(repo_id, revision)
            if isinstance(path_or_fileobj, (str, Path)):
                data = Path(path_or_fileobj).read_bytes()
            elif isinstance(path_or_fileobj, bytes):
                data = path_or_fileobj
            else:
                data = path_or_fileobj.read()
            dest = tree / path_in_repo
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            return f"{constants.ENDPOINT}/{repo_id}/blob/{revision or 'main'}/{path_in_repo}"

        for name, fn in dict(
            repo_info=repo_info,
            create_repo=create_repo,
            create_branch=create_branch,
            file_exists=file_exists,
            upload_folder=upload_folder,
            upload_file=upload_file,
        ).items():
            mp.setattr(HfApi, name, fn)
        # Anything not faked must fail at once instead of reaching the network (or waiting on a cut one).
        mp.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
        mp.setattr(constants, "HF_HUB_OFFLINE", False)

    def mirror_to_hf_cache(self, repo_id: str, cache_dir: Path, revision: str = "main") -> None:
        """Lay the repo out as huggingface_hub's cache does, so hf_hub_download resolves it offline."""
        from huggingface_hub import constants

        commit = "f" * 40
        storage = cache_dir / f"models{constants.REPO_ID_SEPARATOR}{repo_id.replace('/', constants.REPO_ID_SEPARATOR)}"
        shutil.copytree(self.tree(repo_id, revision), storage / "snapshots" / commit)
        (storage / "refs").mkdir(parents=True)
        (storage / "refs" / revision).write_text(commit)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    _isolated_env(monkeypatch, tmp_path)
    fake = FakeHub(tmp_path / "remote")
    fake.install(monkeypatch)
    return fake


# --- tests -------------------------------------------------------------------------------------------------------


def _roundtrip(sae: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        acts = sae.encode(x)
        return acts, sae.decode(acts)


def test_publish_uploads_final_sae_and_card_and_loads_back_identically(
    tiny_run: SimpleNamespace, hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants
    from sae_lens import SAE
    from sae_lens.saes.topk_sae import TopKSAE

    result = publish_run(tiny_run.run_dir, REPO, show_progress=False)  # the run folder: final/ is found

    assert result.uploaded and result.folder == tiny_run.final and result.sae_id == HOOK
    assert result.readme_paths == (f"{HOOK}/README.md", "README.md")
    assert hub.files(REPO) == {
        ".gitattributes",
        "README.md",
        *(
            f"{HOOK}/{f}"
            for f in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "runner_cfg.json", "README.md")
        ),
    }
    remote = hub.tree(REPO) / HOOK
    for name in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors"):
        assert (remote / name).read_bytes() == (tiny_run.final / name).read_bytes(), name
    # SAELens's own uploader did the SAE upload (its file list), and the repo was made public on main.
    folder_calls = [c for c in hub.calls if c[0] == "upload_folder"]
    assert len(folder_calls) == 1 and folder_calls[0][2]["path_in_repo"] == HOOK
    assert "cfg.json" in folder_calls[0][2]["allow_patterns"]
    assert ("create_repo", REPO, dict(private=False, repo_type="model", exist_ok=True)) in hub.calls
    assert hub.private[REPO] is False

    # The model card is the repo's README: architecture, every ortho value, shapes, model/hook/dataset, seed paper.
    card = (hub.tree(REPO) / "README.md").read_text()
    assert card == (remote / "README.md").read_text() == result.readme
    assert card.startswith("---\nlibrary_name: saelens\n")
    assert "topk_ortho" in card and SEED000 in card and "seed 000" in card
    assert "selective top-p pair selection" in card
    for name, value in ORTHO.items():
        assert f"| {name} | {value} |" in card, name
    for row in (
        "| d_in | 32 |",
        "| d_sae | 64 |",
        "| k | 4 |",
        "| architecture | topk |",
        "| model_name | tiny-test-model |",
        f"| hook_name | {HOOK} |",
        "| dataset_path | local/tiny-tokens |",
        "| training_tokens | 2048 |",
        "| seed | 0 |",
    ):
        assert row in card, row
    assert SEED_TITLES["002"] in card  # hinge weighting
    assert SEED_TITLES["003"] in card  # decoder penalty is on
    assert f'SAE.from_pretrained("{REPO}", "{HOOK}")' in card

    # Load back with SAELens: the published SAE is a plain TopK SAE identical to the run's final SAE.
    original = SAE.load_from_disk(tiny_run.final)
    published = SAE.load_from_disk(remote)
    assert type(published) is TopKSAE and published.cfg.architecture() == "topk"
    assert published.cfg.metadata.training_architecture == "topk_ortho"
    for key, tensor in original.state_dict().items():
        assert torch.equal(published.state_dict()[key], tensor), key
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(1))
    acts, recon = _roundtrip(published, x)
    ref_acts, ref_recon = _roundtrip(original, x)
    assert torch.equal(acts, ref_acts) and torch.equal(recon, ref_recon)
    assert ((acts != 0).sum(-1) <= 4).all()
    # ... and it reconstructs like the training SAE the run returned (decoder norms folded on save).
    with torch.no_grad():
        torch.testing.assert_close(recon, tiny_run.trained(x), rtol=1e-4, atol=1e-5)

    # SAE.from_pretrained(repo_id, sae_id): the real hf_hub_download, offline, reading the mirrored "remote".
    cache = tmp_path / "hf_cache"
    hub.mirror_to_hf_cache(REPO, cache)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    from_hub = SAE.from_pretrained(REPO, HOOK)
    assert type(from_hub) is TopKSAE
    hub_acts, hub_recon = _roundtrip(from_hub, x)
    assert torch.equal(hub_acts, ref_acts) and torch.equal(hub_recon, ref_recon)


def test_published_sae_loads_without_the_plugin(tiny_run: SimpleNamespace, hub: FakeHub, tmp_path: Path) -> None:
    publish_run(tiny_run.final, REPO, show_progress=False)
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(2))
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from sae_lens import SAE
        sae = SAE.load_from_disk({str(hub.tree(REPO) / HOOK)!r})
        assert "sae_lens_ortho" not in sys.modules, "the plugin was imported"
        x = torch.load({str(tmp_path / "x.pt")!r})
        with torch.no_grad():
            torch.save(sae.decode(sae.encode(x)), {str(tmp_path / "recon.pt")!r})
        print(type(sae).__name__)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "HF_HOME": str(tmp_path / "hf_home")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "TopKSAE"
    from sae_lens import SAE

    expected = _roundtrip(SAE.load_from_disk(tiny_run.final), x)[1]
    assert torch.equal(torch.load(tmp_path / "recon.pt"), expected)


def test_publish_refuses_a_training_checkpoint(tiny_run: SimpleNamespace, hub: FakeHub) -> None:
    assert json.loads((tiny_run.checkpoint / "cfg.json").read_text())["architecture"] == "topk_ortho"
    with pytest.raises(PublishError) as info:
        publish_run(tiny_run.checkpoint, REPO, show_progress=False)
    message = str(info.value)
    assert "training checkpoint" in message and "'topk_ortho'" in message
    assert "plugin" in message and "final" in message and "topk" in message
    # A folder holding only checkpoints is refused with the same explanation.
    with pytest.raises(PublishError, match=r"no final SAE folder.*training checkpoint"):
        publish_run(tiny_run.checkpoint.parent, REPO, show_progress=False)
    assert hub.calls == []  # refused before touching the Hub


def test_publish_refuses_a_checkpoint_even_with_topk_cfg(
    tiny_run: SimpleNamespace, hub: FakeHub, tmp_path: Path
) -> None:
    folder = tmp_path / "ckpt_like"
    shutil.copytree(tiny_run.final, folder)
    (folder / "trainer_state.pt").write_bytes(b"")
    with pytest.raises(PublishError, match=r"training checkpoint.*trainer_state.pt"):
        publish_run(folder, REPO, show_progress=False)
    assert hub.calls == []


def test_publish_errors_for_missing_or_ambiguous_folders(
    tiny_run: SimpleNamespace, hub: FakeHub, tmp_path: Path
) -> None:
    with pytest.raises(PublishError, match="does not exist"):
        publish_run(tmp_path / "nope", REPO)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PublishError, match=r"no SAE found.*cfg.json.*sae_weights.safetensors"):
        publish_run(tmp_path / "empty", REPO)
    two = tmp_path / "two"
    shutil.copytree(tiny_run.final, two / "a")
    shutil.copytree(tiny_run.final, two / "b")
    with pytest.raises(PublishError, match="several SAE folders"):
        publish_run(two, REPO)
    with pytest.raises(PublishError, match="owner/name"):
        publish_run(tiny_run.final, "no-owner")
    assert hub.calls == []


def test_second_publish_keeps_the_sae_and_readme_unless_asked(tiny_run: SimpleNamespace, hub: FakeHub) -> None:
    publish_run(tiny_run.final, REPO, show_progress=False)
    first_weights = (hub.tree(REPO) / HOOK / "sae_weights.safetensors").read_bytes()
    with pytest.raises(PublishError, match="already has an SAE under"):
        publish_run(tiny_run.final, REPO, show_progress=False)
    # A second SAE in the same repo: its own folder and card; the root README stays.
    (hub.tree(REPO) / "README.md").write_text("hand-written README\n")
    second = publish_run(tiny_run.final, REPO, sae_id="sweep/coef0.3", show_progress=False)
    assert second.readme_paths == ("sweep/coef0.3/README.md",)
    assert (hub.tree(REPO) / "README.md").read_text() == "hand-written README\n"
    assert "topk_ortho" in (hub.tree(REPO) / "sweep/coef0.3/README.md").read_text()
    # overwrite=True replaces the SAE; readme="overwrite" replaces the root card.
    publish_run(tiny_run.final, REPO, overwrite=True, readme="overwrite", show_progress=False)
    assert (hub.tree(REPO) / HOOK / "sae_weights.safetensors").read_bytes() == first_weights
    assert SEED000 in (hub.tree(REPO) / "README.md").read_text()


def test_publish_private_repo_on_a_branch(tiny_run: SimpleNamespace, hub: FakeHub) -> None:
    result = publish_run(tiny_run.final, REPO, revision="dev", private=True, sae_id="my-sae", show_progress=False)
    assert hub.private[REPO] is True
    assert ("create_branch", REPO, dict(branch="dev", revision=None, exist_ok=True)) in hub.calls
    assert {"my-sae/cfg.json", "my-sae/sae_weights.safetensors", "README.md"} <= hub.files(REPO, "dev")
    assert hub.files(REPO, "main") == {".gitattributes"}
    assert 'revision="dev"' in result.readme and "SAE.load_from_disk" in result.readme
    assert result.url.endswith(f"/{REPO}/tree/dev/my-sae")


def test_publish_refuses_offline_mode(tiny_run: SimpleNamespace, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE"):
        publish_run(tiny_run.final, REPO)
    assert hub.calls == []


def test_dry_run_uploads_nothing(tiny_run: SimpleNamespace, hub: FakeHub) -> None:
    result = publish_run(tiny_run.run_dir, REPO, dry_run=True)
    assert not result.uploaded and result.readme_paths == () and SEED000 in result.readme
    assert hub.calls == []


def test_cli_publish(tiny_run: SimpleNamespace, hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["publish", str(tiny_run.run_dir), REPO, "--sae-id", "cli-sae"]) == 0
    out = capsys.readouterr().out
    assert "published" in out and 'SAE.from_pretrained("tester/tiny-ortho", "cli-sae")' in out
    assert "cli-sae/sae_weights.safetensors" in hub.files(REPO)
    assert cli_main(["publish", str(tiny_run.checkpoint), REPO]) == 2
    err = capsys.readouterr().err
    assert "sae-lens-ortho publish: error:" in err and "training checkpoint" in err
    assert cli_main(["publish", str(tiny_run.final), REPO, "--dry-run"]) == 0
    assert SEED000 in capsys.readouterr().out


# --- the card and the seed-paper table, without training -----------------------------------------------------------


def _cfg_dict(training_arch: str, **details: Any) -> dict[str, Any]:
    return {
        "architecture": "jumprelu" if training_arch.startswith("jumprelu") else "topk",
        "d_in": 8,
        "d_sae": 16,
        "metadata": {
            "training_architecture": training_arch,
            "training_architecture_details": details,
            "model_name": "m",
            "hook_name": "h",
        },
    }


def test_model_card_seed_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    card = model_card(_cfg_dict("topk_ortho", ortho_coefficient=0.5, ortho_weighting="scaled"))
    assert SEED000 in card and "| ortho_coefficient | 0.5 |" in card
    # Another *_ortho base follows the same selective penalty.
    assert SEED000 in model_card(_cfg_dict("jumprelu_ortho", ortho_coefficient=1.0))
    # A preset registers its own seed paper; the card follows metadata's ortho_preset.
    monkeypatch.setitem(SEED_PAPERS, "adaptive_demo", SeedPaper("001", "the adaptive orthogonality strength"))
    card = model_card(_cfg_dict("topk_ortho", ortho_preset="adaptive_demo", ortho_weighting="squared"))
    assert SEED_TITLES["001"] in card and "adaptive orthogonality strength" in card and "preset `adaptive_demo`" in card
    assert SEED000 not in card
    # A plain topk SAE loads without the plugin: the usage snippet does not import it.
    assert "import sae_lens_ortho" not in model_card(_cfg_dict("topk_ortho"))
    # standard_ortho with a changed encoder saves as our inference architecture: install from source, import it.
    card = model_card(
        {
            "architecture": "standard_ortho",
            "d_in": 8,
            "d_sae": 16,
            "metadata": {"training_architecture": "standard_ortho", "training_architecture_details": {}},
        }
    )
    usage = card[card.index("## Usage") :]
    assert INSTALL_FROM_SOURCE in card and "pip install sae-lens-ortho" not in card
    assert usage.index("import sae_lens_ortho") < usage.index("from sae_lens import SAE") < usage.index("SAE.from_")
    # A plain SAELens architecture has no seed paper, and the card still renders.
    card = model_card({"architecture": "topk", "d_in": 8, "d_sae": 16, "k": 2, "metadata": {}})
    assert "no seed paper" in card and "| k | 2 |" in card
    assert "loads with SAELens alone" in card and "import sae_lens_ortho" not in card


def test_model_card_describes_the_config_it_trained_with() -> None:
    """The card said the penalty acts on "activation columns" whatever the config; it now says what the fields do,
    and shows local folders by name, not the training machine's absolute paths."""
    method = lambda card: card[card.index("## Method") : card.index("## Hyperparameters")]  # noqa: E731
    card = model_card(_cfg_dict("topk_ortho", ortho_coefficient=0.1))  # the defaults: decoder target
    assert "activation columns" not in card
    assert "where c is the cosine of the pair's decoder rows" in method(card)
    assert "penalty c², averaged over them" in method(card) and "coefficient 0.1 × E‖x‖² of the batch" in method(card)
    seed_form = model_card(
        _cfg_dict("topk_ortho", ortho_coefficient=1.0, ortho_target="activations", ortho_scale="none")
    )
    assert "where c is the pair's activation cosine; coefficient 1\n" in method(seed_form) + "\n"
    off = method(model_card(_cfg_dict("topk_ortho")))
    assert "none: every orthogonality term was off" in off and "SAELens `topk`" in off and SEED000 not in off
    decoder_only = method(
        model_card(
            _cfg_dict("topk_ortho", ortho_decoder_coefficient=0.2, ortho_groups=4, ortho_decoder_penalty="grouped")
        )
    )
    assert "selective pair penalty" not in decoder_only and "within 4 groups of decoder rows" in decoder_only
    assert SEED_TITLES["003"] in decoder_only and SEED000 not in decoder_only
    local = _cfg_dict("topk_ortho")
    local["metadata"] |= {"model_name": "/home/me/models/my-model", "dataset_path": "/home/me/data/tokens"}
    card = model_card(local)
    assert "/home/me" not in card
    assert "| model_name | my-model (a local folder) |" in card and "| dataset_path | tokens (a local folder) |" in card


def test_seed_titles_match_the_seed_files() -> None:
    seeds = Path("/work/shared/seeds")
    if not seeds.is_dir():
        pytest.skip("seed papers not available on this machine")
    for path in sorted(seeds.glob("*.txt")):
        seed = path.name.split("_", 1)[0]
        head = " ".join(path.read_text(errors="replace")[:600].split()).lower()
        assert SEED_TITLES[seed].lower() in head, (seed, head[:200])
