"""Local Hugging Face artefacts for the offline routes of the CLI, built by the tests themselves.

* :func:`tokenizer_folder`: a byte-level BPE tokenizer trained with the ``tokenizers`` library on a synthetic
  corpus, saved as a ``transformers`` fast tokenizer;
* :func:`model_folder`: a tiny randomly initialised GPT-NeoX (the Pythia architecture) written with
  ``save_pretrained`` next to that tokenizer, so TransformerLens and ``AutoModelForCausalLM`` load it by path;
* :func:`text_folder`: a parquet folder with a ``text`` column (what ``load_dataset(folder)`` reads);
* :func:`pretokenize`: that text, tokenized by SAELens's own ``PretokenizeRunner`` and saved locally
  (``save_to_disk`` plus the ``sae_lens.json`` that names the tokenizer).

Nothing is downloaded. Everything is seeded.
"""

from __future__ import annotations

import random
from pathlib import Path

WORDS = (
    "the a cat dog bird fish sat ran flew swam on under over near mat log tree river big small red blue "
    "quick slow happy sad and but while then"
).split()
CONTEXT = 64
HIDDEN = 32
HOOK = "blocks.0.hook_resid_post"


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 80))) + "." for _ in range(n)]


def tokenizer_folder(folder: Path, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<|endoftext|>", "<unk>", "<pad>"])
    tok.train_from_iterator(corpus(seed=seed), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<unk>", pad_token="<pad>"
    )
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return folder


def model_folder(folder: Path, seed: int = 0) -> Path:
    """A 2-layer GPT-NeoX (d_model 32, context 64) with its tokenizer, saved with ``save_pretrained``."""
    import torch
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

    tokenizer_folder(folder, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    cfg = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=4 * HIDDEN,
        max_position_embeddings=CONTEXT,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    GPTNeoXForCausalLM(cfg).save_pretrained(str(folder))
    return folder


def text_folder(folder: Path, n: int = 400, seed: int = 1) -> Path:
    from datasets import Dataset

    folder.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict({"text": corpus(n, seed)}).to_parquet(str(folder / "train.parquet"))
    return folder


def pretokenize(text: Path, tokenizer: Path | str, out: Path) -> Path:
    """SAELens's ``PretokenizeRunner`` on a local text folder with a local tokenizer, saved to ``out``."""
    from sae_lens import PretokenizeRunner, PretokenizeRunnerConfig

    cfg = PretokenizeRunnerConfig(
        tokenizer_name=str(tokenizer),
        dataset_path=str(text),
        context_size=CONTEXT,
        num_proc=1,
        shuffle=False,
        save_path=str(out),
    )
    PretokenizeRunner(cfg).run()
    return out
