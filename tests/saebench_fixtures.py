"""Offline fixtures for running SAEBench's own eval code (tests/test_saebench.py).

Everything is built locally and seeded; nothing is downloaded:

* a word-level tokenizer trained with the ``tokenizers`` library on a synthetic corpus and wrapped as a
  ``transformers`` fast tokenizer (saved to a local folder, so TransformerLens's ``AutoTokenizer`` reload with
  ``add_bos_token=True`` resolves locally). Every word carries a leading space; " A".." Z", " has", " the",
  " first", " letter" and ":" are single tokens, as SAEBench's absorption prompt needs;
* a real 1-layer ``HookedTransformer`` whose token embeddings are *planted*: in an orthonormal basis of the
  64-dim residual stream, directions 0..25 are first-letter directions (every word's embedding carries its first
  letter), 26..34 are concept directions (five bias-in-bios professions of class set 1, professor, nurse, gender,
  and a weaker ``probe`` concept for sae-probes), the other 29 carry a random token "identity" as large as the
  letter. Attention and MLP are randomly initialised with their outputs scaled down, so
  ``blocks.0.hook_resid_post`` is the embedding plus small context mixing;
* synthetic stand-ins for the datasets SAEBench downloads (``LabHC/bias_in_bios``, ``Skylion007/openwebtext``)
  and for one sae-probes dataset; a concept is carried by a *set* of 16 words (of different first letters), so
  no single token identifies a class;
* SAEs in SAELens's TopK family, built as ``topk_ortho`` training SAEs and saved as a checkpoint folder
  (architecture ``topk_ortho``, needs the plugin) and/or a final folder (plain ``topk``):
  ``planted`` (decoder rows = the +/- basis, so each latent is one planted direction) and ``random``.

:func:`install_offline` monkeypatches SAEBench's download call sites only: its ``load_dataset`` uses (and the one in
SAELens's ``ActivationsStore``, through which core loads its dataset), the
``HookedTransformer.from_pretrained_no_processing`` model loaders (SAEBench's and sae-probes's), and the
packaged-data lookups of sae-probes.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from datasets import Dataset, DatasetDict

import sae_lens_ortho  # noqa: F401  (registers topk_ortho)
from sae_lens_ortho import TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig

MODEL_NAME = "tiny-saebench-fixture"
D_MODEL = 64
N_CTX = 128
LAYER = 0
HOOK = "blocks.0.hook_resid_post"
SEED = 0

LETTERS = string.ascii_lowercase
WORDS_PER_LETTER = 20
CONCEPT_SET_SIZE = 16
# bias_in_bios profession ids (SAEBench's dataset_info.profession_dict): class set 1 is {0, 1, 2, 6, 9};
# SCR uses professor (21) vs nurse (13).
TPP_PROFESSIONS = (0, 1, 2, 6, 9)
SCR_PROFESSIONS = (21, 13)
PROFESSIONS = TPP_PROFESSIONS + SCR_PROFESSIONS
CONCEPTS = (*tuple(f"prof{p}" for p in PROFESSIONS), "gender", "probe")
LETTER_SCALE = 4.0
# Concepts are weaker than letter + identity for every SAE latent that is not aligned with them, so a random SAE
# picks them up poorly; gender is the strongest (SCR needs the biased probe to lean on it).
CONCEPT_SCALES = {**{f"prof{p}": 3.0 for p in PROFESSIONS}, "gender": 5.0, "probe": 3.0}
NOISE_SCALE = 0.7  # per noise dimension: a token-specific "identity" of norm ~3.8, as large as the letter

BIOS_DATASET = "LabHC/bias_in_bios"
OWT_DATASET = "Skylion007/openwebtext"
PROBE_DATASET = "999_synthetic_concept"  # sae-probes numbered dataset tag


# --- vocabulary, tokenizer, model ---------------------------------------------------------------------------


def _pseudo_words(rng: random.Random) -> list[str]:
    consonants, vowels = "bcdfgklmnprstvz", "aeiou"
    words: set[str] = set()
    out: list[str] = []
    for letter in LETTERS:
        n = 0
        while n < WORDS_PER_LETTER:
            tail = "".join(rng.choice(vowels if j % 2 == 0 else consonants) for j in range(rng.randint(2, 5)))
            w = letter + tail
            if w not in words and w not in ("has", "the", "first", "letter"):
                words.add(w)
                out.append(w)
                n += 1
    return out


@dataclass
class Vocab:
    words: list[str]  # pseudo-words, no leading space
    concept_words: dict[str, list[str]]  # concept -> words carrying it (gender: female words)
    male_words: list[str]  # words carrying -gender
    filler: list[str]  # words carrying no concept


def build_vocab(seed: int = SEED) -> Vocab:
    rng = random.Random(seed)
    words = _pseudo_words(rng)
    pool = words[:]
    rng.shuffle(pool)
    concept_words: dict[str, list[str]] = {}
    for c in CONCEPTS:
        concept_words[c], pool = pool[:CONCEPT_SET_SIZE], pool[CONCEPT_SET_SIZE:]
    male_words, pool = pool[:CONCEPT_SET_SIZE], pool[CONCEPT_SET_SIZE:]
    return Vocab(words=words, concept_words=concept_words, male_words=male_words, filler=pool)


def build_tokenizer(vocab: Vocab, folder: Path):
    """Train a word-level tokenizer on a synthetic corpus; save it to ``folder`` and load it back as a
    ``transformers`` fast tokenizer (so it can be reloaded by path, offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    rng = random.Random(SEED + 1)
    letters_upper = [c.upper() for c in LETTERS]
    corpus = [" " + " ".join(vocab.words[i : i + 20]) for i in range(0, len(vocab.words), 20)]
    corpus += [f"\n {w} has the first letter: {w[0].upper()}" for w in vocab.words]
    corpus += [" " + " ".join(letters_upper)]
    corpus += [" " + " ".join(rng.sample(vocab.words, 10)) + "." for _ in range(20)]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.WordLevelTrainer(special_tokens=["<unk>", "<bos>", "<eos>", "<pad>"], min_frequency=1)
    tok.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    folder.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(folder))
    loaded = AutoTokenizer.from_pretrained(str(folder), add_bos_token=True)
    for piece in [" has", " the", " first", " letter", ":"] + [f" {c}" for c in letters_upper]:
        ids = loaded(piece, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != loaded.unk_token_id, (piece, ids)
    return loaded


def planted_basis(seed: int = SEED) -> torch.Tensor:
    """[D_MODEL, D_MODEL] orthonormal rows: 0..25 letters, 26..33 concepts (CONCEPTS order), 34.. noise."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D_MODEL, D_MODEL, generator=g))
    return q.T.contiguous()


def concept_index(concept: str) -> int:
    return len(LETTERS) + CONCEPTS.index(concept)


N_PLANTED = len(LETTERS) + len(CONCEPTS)


def build_embeddings(tokenizer, vocab: Vocab, basis: torch.Tensor, seed: int = SEED) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 2)
    d_vocab = max(tokenizer.get_vocab().values()) + 1
    noise_dirs = basis[N_PLANTED:]
    emb = (torch.randn(d_vocab, noise_dirs.shape[0], generator=g) * NOISE_SCALE) @ noise_dirs
    concept_of = {w: c for c, ws in vocab.concept_words.items() for w in ws}
    male = set(vocab.male_words)
    for token, idx in tokenizer.get_vocab().items():
        word = tokenizer.convert_tokens_to_string([token])
        stripped = word[1:] if word.startswith(" ") else word
        if stripped and all(ch in string.ascii_letters for ch in stripped):
            emb[idx] += LETTER_SCALE * basis[LETTERS.index(stripped[0].lower())]
        if stripped in concept_of:
            emb[idx] += CONCEPT_SCALES[concept_of[stripped]] * basis[concept_index(concept_of[stripped])]
        if stripped in male:
            emb[idx] -= CONCEPT_SCALES["gender"] * basis[concept_index("gender")]
    return emb


def build_model(tokenizer, vocab: Vocab, basis: torch.Tensor):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=D_MODEL,
        n_ctx=N_CTX,
        d_head=16,
        n_heads=4,
        d_mlp=128,
        d_vocab=max(tokenizer.get_vocab().values()) + 1,
        act_fn="gelu",
        normalization_type="LN",
        model_name=MODEL_NAME,
        seed=SEED,
        device="cpu",
        default_prepend_bos=True,
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    with torch.no_grad():
        model.embed.W_E.copy_(build_embeddings(model.tokenizer, vocab, basis))
        model.pos_embed.W_pos.mul_(0.5)
        # TransformerLens initialises with std 0.8/sqrt(d_model) = 0.1, so the block would add O(1) token-dependent
        # content per dimension; shrink its outputs so resid_post is the planted embedding plus small mixing.
        model.blocks[0].attn.W_O.mul_(0.1)
        model.blocks[0].mlp.W_out.mul_(0.1)
    model.eval()
    return model


# --- SAEs -------------------------------------------------------------------------------------------------------


def topk_ortho_sae(decoder_rows: torch.Tensor, k: int, *, decoder_norm: float = 1.0) -> TopKOrthoTrainingSAE:
    """A ``topk_ortho`` training SAE whose latent i reads and writes direction ``decoder_rows[i]``.

    Rows are stored with norm ``decoder_norm`` (and the encoder divided by it): with SAELens's default
    ``rescale_acts_by_decoder_norm=True`` the function is the same for any norm, and saving the final SAE folds
    the norms away, so a checkpoint and a final folder of the same SAE must evaluate identically.
    """
    rows = torch.nn.functional.normalize(decoder_rows.float(), dim=-1)
    d_sae = rows.shape[0]
    cfg = TopKOrthoTrainingSAEConfig(
        d_in=D_MODEL,
        d_sae=d_sae,
        k=k,
        apply_b_dec_to_input=False,
        dtype="float32",
        device="cpu",
    )
    cfg.metadata.model_name = MODEL_NAME
    cfg.metadata.hook_name = HOOK
    cfg.metadata.context_size = N_CTX
    cfg.metadata.prepend_bos = True
    cfg.metadata.dataset_path = OWT_DATASET
    sae = TopKOrthoTrainingSAE(cfg)
    with torch.no_grad():
        sae.W_dec.copy_(rows * decoder_norm)
        sae.W_enc.copy_(rows.T / decoder_norm)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.ortho_step.fill_(1)  # "trained": the plugin refuses to save an SAE that took no step
    return sae


def planted_sae(basis: torch.Tensor, k: int, **kw: Any) -> TopKOrthoTrainingSAE:
    """Latents = the +/- planted basis (d_sae = 2 * D_MODEL): latent i is +basis[i], latent D_MODEL+i is -basis[i].
    With k = D_MODEL it reconstructs every input exactly."""
    return topk_ortho_sae(torch.cat([basis, -basis]), k, **kw)


def random_sae(d_sae: int, k: int, seed: int = 1, **kw: Any) -> TopKOrthoTrainingSAE:
    g = torch.Generator().manual_seed(seed)
    return topk_ortho_sae(torch.randn(d_sae, D_MODEL, generator=g), k, **kw)


def save_final(sae: TopKOrthoTrainingSAE, folder: Path) -> Path:
    """What the runner writes to ``final/``: the inference SAE (architecture ``topk``)."""
    sae.save_inference_model(str(folder))
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == "topk", cfg["architecture"]
    return folder


def save_checkpoint(sae: TopKOrthoTrainingSAE, folder: Path) -> Path:
    """What the trainer writes to a checkpoint: the training SAE (architecture ``topk_ortho``) plus the
    activation scaler state."""
    sae.save_model(str(folder))
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": None, "has_whitening": False}))
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == "topk_ortho", cfg["architecture"]
    return folder


# --- synthetic datasets -----------------------------------------------------------------------------------------


def _sentence(rng: random.Random, vocab: Vocab, concept_sets: list[tuple[list[str], int]], length: int) -> str:
    words = rng.sample(vocab.filler, length)
    for ws, n in concept_sets:
        for _ in range(n):
            words.insert(rng.randrange(len(words) + 1), rng.choice(ws))
    return " " + " ".join(words)


def bias_in_bios(vocab: Vocab, n_train: int = 100, n_test: int = 50, seed: int = SEED) -> DatasetDict:
    """Columns hard_text / profession / gender (0 male, 1 female), like LabHC/bias_in_bios. A bio carries its
    profession through two profession words and its gender through three gendered words; the gender signal is
    the stronger one, so a probe trained on male-professor vs female-nurse bios leans on gender (SCR's setup)."""
    rng = random.Random(seed + 3)
    splits: dict[str, Dataset] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rows: dict[str, list[Any]] = {"hard_text": [], "profession": [], "gender": []}
        for p in PROFESSIONS:
            for gender in (0, 1):
                gwords = vocab.concept_words["gender"] if gender == 1 else vocab.male_words
                for _ in range(n):
                    rows["hard_text"].append(
                        _sentence(rng, vocab, [(vocab.concept_words[f"prof{p}"], 2), (gwords, 3)], 10)
                    )
                    rows["profession"].append(p)
                    rows["gender"].append(gender)
        order = list(range(len(rows["gender"])))
        rng.shuffle(order)
        splits[split] = Dataset.from_dict({k: [v[i] for i in order] for k, v in rows.items()})
    return DatasetDict(splits)


def openwebtext(vocab: Vocab, n: int = 200, seed: int = SEED) -> Dataset:
    rng = random.Random(seed + 4)
    texts = []
    for _ in range(n):
        sets = [(vocab.concept_words[c], 1) for c in rng.sample(CONCEPTS, 2)]
        texts.append(_sentence(rng, vocab, sets, 40))
    return Dataset.from_dict({"text": texts})


def probe_dataset(vocab: Vocab, n: int = 400, seed: int = SEED) -> pd.DataFrame:
    """An sae-probes style binary dataset (prompt, prompt_len, target): the *last* word of the prompt (the
    position sae-probes reads) carries the (weaker) ``probe`` concept for target 1 and no concept for target 0."""
    rng = random.Random(seed + 5)
    rows = []
    neutral = vocab.filler[:CONCEPT_SET_SIZE]
    fillers = vocab.filler[CONCEPT_SET_SIZE:]
    for i in range(n):
        target = i % 2
        last = rng.choice(vocab.concept_words["probe"] if target else neutral)
        prompt = " " + " ".join([*rng.sample(fillers, 6), last])
        rows.append({"prompt": prompt, "prompt_len": len(prompt), "target": target})
    rng.shuffle(rows)
    return pd.DataFrame(rows)


# --- the whole fixture and the monkeypatches ------------------------------------------------------------------


@dataclass
class SaebenchFixture:
    folder: Path
    vocab: Vocab
    tokenizer: Any
    model: Any
    basis: torch.Tensor
    datasets: dict[str, Any] = field(default_factory=dict)
    probe_df: pd.DataFrame | None = None

    def sae_folder(self, name: str, sae: TopKOrthoTrainingSAE, *, checkpoint: bool = False) -> Path:
        folder = self.folder / "saes" / name
        return save_checkpoint(sae, folder) if checkpoint else save_final(sae, folder)


def build_fixture(folder: Path) -> SaebenchFixture:
    torch.manual_seed(SEED)
    vocab = build_vocab()
    tokenizer = build_tokenizer(vocab, folder / "tokenizer")
    basis = planted_basis()
    model = build_model(tokenizer, vocab, basis)
    fx = SaebenchFixture(folder=folder, vocab=vocab, tokenizer=tokenizer, model=model, basis=basis)
    fx.datasets[BIOS_DATASET] = bias_in_bios(vocab)
    fx.datasets[OWT_DATASET] = openwebtext(vocab)
    fx.probe_df = probe_dataset(vocab)
    return fx


class _Downloads:
    """Records what SAEBench tried to download, and serves the synthetic stand-ins."""

    def __init__(self, fx: SaebenchFixture):
        self.fx = fx
        self.datasets: list[str] = []
        self.models: list[str] = []

    def load_dataset(self, path: str, *args: Any, **kwargs: Any):
        self.datasets.append(path)
        if path not in self.fx.datasets:
            raise AssertionError(f"unexpected dataset download in an offline test: {path!r}")
        ds = self.fx.datasets[path]
        split = kwargs.get("split")
        return ds[split] if split is not None and isinstance(ds, DatasetDict) else ds

    def model_loader(self):
        from transformer_lens import HookedTransformer

        downloads = self

        class _OfflineHookedTransformer(HookedTransformer):
            @classmethod
            def from_pretrained_no_processing(cls, model_name: str, *args: Any, **kwargs: Any):  # type: ignore[override]
                downloads.models.append(model_name)
                if model_name != MODEL_NAME:
                    raise AssertionError(f"unexpected model download in an offline test: {model_name!r}")
                return downloads.fx.model

        return _OfflineHookedTransformer


def install_offline(monkeypatch, fx: SaebenchFixture, probe_data_dir: Path) -> _Downloads:
    """Point every SAEBench / sae-probes download call site at the synthetic fixture."""
    import sae_bench.evals.absorption.main as absorption_main
    import sae_bench.evals.autointerp.main as autointerp_main
    import sae_bench.evals.core.main as core_main
    import sae_bench.evals.scr_and_tpp.dataset_creation as scr_dataset_creation
    import sae_bench.evals.scr_and_tpp.main as scr_main
    import sae_bench.evals.sparse_probing.main as sparse_probing_main
    import sae_bench.sae_bench_utils.dataset_utils as dataset_utils
    import sae_lens.training.activations_store as activations_store
    import sae_probes.generate_model_activations as sp_model_acts
    import sae_probes.generate_sae_activations as sp_sae_acts
    import sae_probes.run_baselines as sp_baselines
    import sae_probes.utils_data as sp_utils_data

    downloads = _Downloads(fx)
    loader = downloads.model_loader()
    for module in (core_main, scr_main, sparse_probing_main, absorption_main, autointerp_main, sp_model_acts):
        monkeypatch.setattr(module, "HookedTransformer", loader)
    # datasets: SAEBench's load_dataset call sites, and SAELens's ActivationsStore (used by core)
    for module in (scr_dataset_creation, dataset_utils, activations_store):
        monkeypatch.setattr(module, "load_dataset", downloads.load_dataset)

    # sae-probes ships its datasets in the wheel; add one synthetic dataset next to them (not instead of them).
    assert fx.probe_df is not None
    cleaned = probe_data_dir / "cleaned_data"
    cleaned.mkdir(parents=True, exist_ok=True)
    fx.probe_df.to_csv(cleaned / f"{PROBE_DATASET}.csv.zst", index=False, compression="zstd")
    monkeypatch.setattr(sp_model_acts, "DATA_PATH", probe_data_dir)
    original_read = sp_utils_data.read_numbered_dataset_df

    def read_numbered_dataset_df(tag: str):
        return fx.probe_df if tag == PROBE_DATASET else original_read(tag)

    monkeypatch.setattr(sp_utils_data, "read_numbered_dataset_df", read_numbered_dataset_df)
    for module in (sp_sae_acts, sp_baselines):
        monkeypatch.setitem(module.DATASET_SIZES, PROBE_DATASET, len(fx.probe_df))
    return downloads
