"""Local model folders and local datasets for SAELens's runner, TransformerLens and SAEBench, without the Hub.

Three calls (and one check) reach for the Hugging Face Hub although what they want is on disk:

* TransformerLens's ``HookedTransformer.from_pretrained`` accepts only official model names
  (``loading.get_official_model_name`` raises with a list of every one), although the rest of its loading reads a
  local folder's ``config.json`` and weights. SAELens's runner and SAEBench load models through it.
* SAELens's ``ActivationsStore`` checks a pre-tokenized dataset's tokenizer by downloading ``sae_lens.json`` from
  the dataset's Hub repo (``hf_hub_download``) and catches only HTTP errors: a local path dies with
  ``HFValidationError``, offline mode with ``LocalEntryNotFoundError``. The tokenizer that file names is loaded
  as written: SAELens's pretokenizer records ``tokenizer_name`` as the user typed it, so tokens made with
  ``tokenizer_name="./my-model"`` died with ``OSError: Repo id must use alphanumeric chars`` when training ran
  from another folder.
* Its ``load_dataset`` refuses a folder written by ``Dataset.save_to_disk`` (what SAELens's own
  ``PretokenizeRunner`` writes when it saves locally).

Inside ``with local_sources():`` those names are replaced by versions that look on disk first and call the
original otherwise: a folder holding ``config.json`` is its own model name; a local dataset folder's
``sae_lens.json`` is read from the folder (so SAELens's tokenizer check still runs, on local files), a relative
tokenizer path in it is resolved against the working directory, then the dataset folder and its parents (where
the pretokenizer ran), and when the Hub cannot be asked (offline) the check is skipped instead of a crash; one
line on stderr says which check ran (``dataset tokenizer check: ...``); a ``save_to_disk`` folder is loaded with
``load_from_disk``. Nothing else of SAELens, TransformerLens or SAEBench changes. The replacing itself is
:func:`sae_lens_ortho.sae_lens_bridge.replaced_loaders`, where the replaced names are checked against SAELens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sae_lens_ortho.sae_lens_bridge import replaced_loaders  # the loader patches (checked against SAELens)

__all__ = [
    "ModelSourceError",
    "check_model_source",
    "first_line",
    "is_local_model",
    "is_saved_dataset",
    "load_hooked_transformer",
    "local_sources",
    "looks_like_path",
    "resolve_recorded_tokenizer",
]

log = logging.getLogger(__name__)


class ModelSourceError(ValueError):
    """A model name that is neither a local model folder nor a loadable TransformerLens model."""


def is_local_model(name: str) -> bool:
    """Whether ``name`` is a local Hugging Face model folder (it holds ``config.json``)."""
    return (Path(name).expanduser() / "config.json").is_file()


def looks_like_path(name: str) -> bool:
    """Whether ``name`` can only be a local path: a Hub repo id is ``name`` or ``owner/name``."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def is_saved_dataset(path: str) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    folder = Path(path).expanduser()
    return (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()


def _official_names() -> set[str]:
    from transformer_lens import loading_from_pretrained as loading

    return set(loading.make_model_alias_map())


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def check_model_source(name: str, *, context: str = "") -> None:
    """Raise :class:`ModelSourceError` (one line) unless ``name`` is a local model folder or a TransformerLens
    model name that can be loaded here (offline: one whose config is in the local Hugging Face cache)."""
    where = f"{context}: " if context else ""
    if is_local_model(name):
        return
    path = Path(name).expanduser()
    if path.is_dir():
        raise ModelSourceError(
            f"{where}{name} is a folder without config.json, not a Hugging Face model folder (write one with "
            "model.save_pretrained(folder) and tokenizer.save_pretrained(folder))"
        )
    if name.lower() not in _official_names():
        raise ModelSourceError(
            f"{where}model {name!r} is neither a local model folder (no {path / 'config.json'}) nor a "
            "TransformerLens model name: give a model name such as pythia-70m-deduped, or a folder holding "
            "config.json, the weights and the tokenizer (model.save_pretrained + tokenizer.save_pretrained)"
        )
    if _offline():
        from huggingface_hub import try_to_load_from_cache
        from transformer_lens import loading_from_pretrained as loading

        repo = loading.get_official_model_name(name)
        if not isinstance(try_to_load_from_cache(repo, "config.json"), str):
            raise ModelSourceError(
                f"{where}model {name!r} ({repo}) is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
                "give a local model folder, or download it once online"
            )


def first_line(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_hooked_transformer(name: str, *, device: str = "cpu", dtype: str = "float32", **kwargs: Any) -> Any:
    """A ``HookedTransformer`` from a TransformerLens model name or a local Hugging Face model folder (with the
    folder's tokenizer), loaded as SAELens and SAEBench load models (``from_pretrained_no_processing``).

    Raises :class:`ModelSourceError` with a one-line reason when it cannot be loaded.
    """
    import torch
    from transformer_lens import HookedTransformer

    check_model_source(name)
    with local_sources():
        try:
            return HookedTransformer.from_pretrained_no_processing(
                name, device=device, dtype=getattr(torch, dtype), **kwargs
            )
        except Exception as e:  # noqa: BLE001 - turned into one line naming the model
            raise ModelSourceError(f"cannot load {name!r} into TransformerLens: {first_line(e)}") from e


def _resolving_local_models(original: Callable[[str], str]) -> Callable[[str], str]:
    def get_official_model_name(model_name: str) -> str:
        if is_local_model(model_name):
            return str(Path(model_name).expanduser().resolve())
        return original(model_name)

    return get_official_model_name


def _local_first_download(original: Callable[..., Any]) -> Callable[..., Any]:
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, OfflineModeIsEnabled

    def hf_hub_download(repo_id: str, filename: str, *args: Any, **kwargs: Any) -> Any:
        folder = Path(repo_id).expanduser()
        if folder.is_dir():  # a local dataset: its sae_lens.json, if the pretokenizer wrote one
            local = folder / filename
            return str(local) if local.is_file() else None
        try:
            return original(repo_id, filename, *args, **kwargs)
        except (LocalEntryNotFoundError, OfflineModeIsEnabled, HFValidationError) as e:
            log.warning("cannot fetch %s of %s (%s): skipping SAELens's dataset tokenizer check", filename, repo_id, e)
            return None

    return hf_hub_download


TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


def _is_tokenizer_folder(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def resolve_recorded_tokenizer(dataset_path: str, name: str) -> str | None:
    """The tokenizer a dataset's ``sae_lens.json`` names, as something ``AutoTokenizer.from_pretrained`` loads.

    The pretokenizer records the name as typed, relative to the folder it ran in, which the file does not record.
    A relative name is looked for in the working directory, then in the dataset folder and each of its parents
    (nearest first): the first that holds a tokenizer is taken, as an absolute path. A name that only a Hub repo
    can be (``owner/name``) is returned as it is; a path found nowhere is ``None``.
    """
    path = Path(name).expanduser()
    if path.is_absolute():
        return str(path) if _is_tokenizer_folder(path) else None
    dataset = Path(dataset_path).expanduser().resolve()
    for base in (Path.cwd(), dataset, *dataset.parents):
        if _is_tokenizer_folder(base / path):
            return str((base / path).resolve())
    return None if looks_like_path(name) else name


def _report_tokenizer_check(line: str) -> None:
    print(f"dataset tokenizer check: {line}", file=sys.stderr, flush=True)


def _validating_with_local_tokenizers() -> Callable[[str, Any], None]:
    def validate_pretokenized_dataset_tokenizer(dataset_path: str, model_tokenizer: Any) -> None:
        """SAELens's check (the dataset's recorded tokenizer has the model tokenizer's vocabulary), with the
        recorded name resolved by :func:`resolve_recorded_tokenizer` and a skipped check said on one line."""
        import sae_lens.training.activations_store as store
        from huggingface_hub.errors import HfHubHTTPError
        from transformers import AutoTokenizer

        try:
            recorded_file = store.hf_hub_download(dataset_path, "sae_lens.json", repo_type="dataset")
        except HfHubHTTPError:
            recorded_file = None
        if recorded_file is None:
            _report_tokenizer_check(f"not run: no sae_lens.json naming the tokenizer of {dataset_path} was found")
            return
        recorded = json.loads(Path(recorded_file).read_text())["tokenizer_name"]
        source = resolve_recorded_tokenizer(dataset_path, recorded)
        if source is None:
            _report_tokenizer_check(
                f"not run: the tokenizer {recorded!r} named in {recorded_file} is not in the working directory, "
                f"{dataset_path} or its parents"
            )
            return
        try:
            dataset_tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as e:  # offline and not cached, or gone: SAELens catches only HTTP errors
            _report_tokenizer_check(f"not run: cannot load the dataset's tokenizer {source!r} ({first_line(e)})")
            return
        if dataset_tokenizer.get_vocab() != model_tokenizer.get_vocab():
            raise ValueError(
                f"Dataset tokenizer {source} (named {recorded!r} in {recorded_file}) does not match model "
                f"tokenizer {getattr(model_tokenizer, 'name_or_path', model_tokenizer)}: re-tokenize the dataset "
                "with the model's tokenizer"
            )
        _report_tokenizer_check(f"{source} (named {recorded!r} in {recorded_file}) has the model's vocabulary")

    return validate_pretokenized_dataset_tokenizer


def _loading_saved_datasets(original: Callable[..., Any]) -> Callable[..., Any]:
    def load_dataset(path: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(path, (str, Path)) and is_saved_dataset(str(path)):
            from datasets import DatasetDict, load_from_disk

            data = load_from_disk(str(Path(path).expanduser()))
            split = kwargs.get("split")
            if isinstance(data, DatasetDict):
                if split is None:
                    return data
                if split not in data:
                    raise ValueError(f"dataset {path} has no split {split!r} (splits: {', '.join(data)})")
                return data[split]
            return data
        return original(path, *args, **kwargs)

    return load_dataset


def local_sources() -> contextlib.AbstractContextManager[None]:
    """Within the block, TransformerLens, SAELens's activation store and SAEBench (through them) take local model
    folders and local datasets (see the module docstring). Restores the originals on exit; nests."""
    return replaced_loaders(
        {
            "transformer_lens.loading_from_pretrained:get_official_model_name": _resolving_local_models,
            "sae_lens.training.activations_store:hf_hub_download": _local_first_download,
            "sae_lens.training.activations_store:load_dataset": _loading_saved_datasets,
            "sae_lens.training.activations_store:validate_pretokenized_dataset_tokenizer": (
                lambda _original: _validating_with_local_tokenizers()
            ),
        }
    )
