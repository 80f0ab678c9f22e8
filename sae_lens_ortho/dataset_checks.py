"""A training dataset checked before the model loads: one line naming the path instead of a traceback wall.

SAELens opens the dataset inside its ``ActivationsStore``, after the model has loaded, and reports a bad one with
whatever ``datasets`` raised: an empty folder is ``EmptyDatasetError`` after 47 lines, a missing one a Hub
``ConnectionError`` after 43 (``datasets`` takes any name it cannot find on disk for a Hub repo), a dataset without
a column SAELens reads a bare ``ValueError`` from deep in the store. :func:`check_dataset_source` opens it the
way the store will (through :func:`~sae_lens_ortho.local_sources.local_sources`, streamed, so nothing is
converted or cached), reads its first row, and checks what the store checks on that row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sae_lens_ortho.local_sources import first_line, local_sources, looks_like_path

__all__ = ["DatasetSourceError", "check_dataset_source"]

TOKEN_COLUMNS = ("tokens", "input_ids")
TEXT_COLUMNS = ("text", "problem")
CHAT_COLUMNS = ("conversation", "conversations", "messages", "text")
FORMATS = "a save_to_disk folder, as SAELens's pretokenizer writes, or a folder of parquet / json / csv / text files"


class DatasetSourceError(ValueError):
    """A dataset path SAELens's activation store could not train on."""


def _offline() -> bool:
    import datasets.config
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE or datasets.config.HF_DATASETS_OFFLINE)


def _in_local_cache(repo_id: str) -> bool:
    import datasets.config
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(repo_id, repo_type="dataset", local_files_only=True)
        return True
    except (LocalEntryNotFoundError, ValueError):
        pass
    prepared = Path(datasets.config.HF_DATASETS_CACHE)  # what `datasets` prepared earlier, keyed owner___name
    return prepared.is_dir() and any(prepared.glob(repo_id.replace("/", "___") + "*"))


def _first_row(path: str, trust_remote_code: bool | None) -> dict[str, Any] | None:
    import sae_lens.training.activations_store as store

    with local_sources():  # the store's own load_dataset, with save_to_disk folders
        data = store.load_dataset(path, split="train", streaming=True, trust_remote_code=trust_remote_code)
        return next(iter(data), None)


def check_dataset_source(
    path: str,
    *,
    context_size: int | None = None,
    use_chat_formatting: bool = False,
    trust_remote_code: bool | None = None,
    context: str = "--dataset_path",
) -> None:
    """Raise :class:`DatasetSourceError` (one line naming ``path``) unless SAELens can train on the dataset.

    A local path must exist, hold data ``datasets`` reads, have a first row, and have a column the activation store
    reads (``tokens`` / ``input_ids`` pre-tokenized, ``text`` / ``problem`` tokenized as it trains; the chat
    columns with ``use_chat_formatting``); a pre-tokenized row must be at least ``context_size`` tokens long.
    A Hub id is checked only offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), where it must be in the local cache.
    """
    where = f"{context}: " if context else ""
    if not path:
        raise DatasetSourceError(f"{where}no dataset given: a Hub dataset id or a local dataset folder ({FORMATS})")
    local = Path(path).expanduser()
    if not local.exists():
        if looks_like_path(path):
            raise DatasetSourceError(f"{where}{path} does not exist; a local dataset is {FORMATS}")
        if _offline() and not _in_local_cache(path):
            raise DatasetSourceError(
                f"{where}{path} is neither a local folder nor a Hub dataset in the local cache, and the Hub is "
                "offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE): give a local dataset folder, or download it once online"
            )
        return
    if local.is_dir() and not any(local.iterdir()):
        raise DatasetSourceError(f"{where}{path} is an empty folder; a local dataset is {FORMATS}")
    try:
        row = _first_row(str(local), trust_remote_code)
    except Exception as e:  # noqa: BLE001 - whatever `datasets` raised, as one line naming the path
        raise DatasetSourceError(
            f"{where}{path} cannot be read as a dataset ({type(e).__name__}: {first_line(e)}); give {FORMATS}"
        ) from e
    if row is None:
        raise DatasetSourceError(f"{where}{path} has no rows in its train split")
    readable = CHAT_COLUMNS if use_chat_formatting else TOKEN_COLUMNS + TEXT_COLUMNS
    column = next((name for name in readable if name in row), None)
    if column is None:
        wanted = " / ".join(readable) if use_chat_formatting else "tokens / input_ids (pre-tokenized) or text / problem"
        raise DatasetSourceError(
            f"{where}{path} has no column SAELens reads: its columns are {', '.join(row) or 'none'}; it needs {wanted}"
        )
    if column in TOKEN_COLUMNS and context_size is not None and len(row[column]) < context_size:
        raise DatasetSourceError(
            f"{where}{path} holds sequences of {len(row[column])} tokens, shorter than --context_size "
            f"{context_size}: lower --context_size or pre-tokenize with a longer context"
        )
