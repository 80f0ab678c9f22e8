"""Publish a trained run's final SAE to the Hugging Face Hub, with a model card.

The upload itself is SAELens's own ``upload_saes_to_huggingface`` (so the repo layout is the one
``SAE.from_pretrained(repo_id, sae_id)`` reads); this module adds what it lacks:

* finding the runner's final SAE folder inside a run directory, and refusing training checkpoints
  (their ``cfg.json`` holds the ``*_ortho`` training config, which loads only with this plugin);
* a model card (``README.md``) naming the training architecture, its hyperparameters and the seed paper
  the method follows (:data:`SEED_PAPERS`), instead of SAELens's generic default README;
* ``--private`` repos and non-``main`` revisions (the repo / branch is created first, SAELens then uploads
  into it), and a refusal to overwrite an SAE already published under the same ``sae_id``.

Authentication is huggingface_hub's usual one (``HF_TOKEN`` or ``hf auth login``).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sae_lens_ortho.saes.catalogue import CATALOGUE, SEED_TITLES
from sae_lens_ortho.saes.loading import INSTALL_FROM_SOURCE  # how a card says to install the plugin

__all__ = [
    "SEED_PAPERS",
    "SEED_TITLES",
    "PublishError",
    "PublishResult",
    "SeedPaper",
    "check_publishable",
    "find_final_sae_folder",
    "model_card",
    "publish_run",
    "seed_paper_for",
]

log = logging.getLogger(__name__)

CFG_FILENAME = "cfg.json"  # sae_lens.constants.SAE_CFG_FILENAME
WEIGHTS_FILENAME = "sae_weights.safetensors"  # sae_lens.constants.SAE_WEIGHTS_FILENAME
RUNNER_CFG_FILENAME = "runner_cfg.json"  # sae_lens.constants.RUNNER_CFG_FILENAME
TRAINER_STATE_FILENAME = "trainer_state.pt"  # written only into training checkpoints
README_FILENAME = "README.md"

# Sub-folders of a run directory that may hold the final SAE, in order of preference. The runner writes the final
# SAE straight into its ``output_path``; this project's scripts and docs use ``<run>/final``.
FINAL_FOLDER_NAMES = ("final", "output")


# --- seed papers -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedPaper:
    """The seed paper a training architecture / preset follows, and what it takes from it."""

    seed: str
    """Seed number, a key of :data:`SEED_TITLES`."""
    follows: str
    """What the method takes from the paper, completing "it follows ... of <title>"."""

    @property
    def title(self) -> str:
        return SEED_TITLES[self.seed]


SEED_PAPERS: dict[str, SeedPaper] = {
    entry.name: SeedPaper(entry.seed, entry.follows) for entry in CATALOGUE if entry.seed
}
"""Which seed paper each training architecture or preset follows, keyed by its name.

The model card looks up ``metadata.training_architecture_details["ortho_preset"]`` (when a preset sets it),
then ``metadata.training_architecture``; any other ``*_ortho`` architecture falls back to the ``topk_ortho`` entry
(the same selective penalty on another base SAE). The entries come from the catalogue of named settings
(``sae_lens_ortho.saes.catalogue``): a preset or architecture added there with a seed is named here.
"""

# Optional terms of the ortho config and the seed each follows, listed on the card when enabled.
_WEIGHTING_SEEDS = {"abs": ("001", "004"), "hinge": ("002",), "scaled": ("000",)}
_DECODER_SEED = "003"


def seed_paper_for(cfg_dict: dict[str, Any]) -> tuple[str, SeedPaper] | None:
    """``(key, SeedPaper)`` for a saved SAE config dict, or None if its training architecture has no seed paper."""
    metadata = cfg_dict.get("metadata") or {}
    details = metadata.get("training_architecture_details") or {}
    training_arch = metadata.get("training_architecture") or cfg_dict.get("architecture")
    for key in (details.get("ortho_preset"), metadata.get("ortho_preset"), training_arch):
        if isinstance(key, str) and key in SEED_PAPERS:
            return key, SEED_PAPERS[key]
    if isinstance(training_arch, str) and training_arch.endswith("_ortho") and "topk_ortho" in SEED_PAPERS:
        return "topk_ortho", SEED_PAPERS["topk_ortho"]
    return None


# --- finding and checking the folder ---------------------------------------------------------------------------


class PublishError(ValueError):
    """A run folder that cannot be published (not found, ambiguous, a checkpoint, already published...)."""


@dataclass(frozen=True)
class PublishResult:
    repo_id: str
    sae_id: str
    revision: str
    folder: Path
    """The final SAE folder that was uploaded."""
    readme: str
    """The model card text."""
    readme_paths: tuple[str, ...]
    """Paths in the repo the card was written to (empty on a dry run)."""
    uploaded: bool
    """False on a dry run."""

    @property
    def url(self) -> str:
        from huggingface_hub import constants

        return f"{constants.ENDPOINT}/{self.repo_id}/tree/{self.revision}/{self.sae_id}"


def _is_sae_folder(path: Path) -> bool:
    return (path / CFG_FILENAME).is_file() and (path / WEIGHTS_FILENAME).is_file()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise PublishError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise PublishError(f"{path} does not hold a JSON object")
    return data


def _checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` (holding cfg.json + weights) is not a publishable final SAE, or None if it is."""
    from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY

    from sae_lens_ortho.saes.config import is_ortho_training_cfg

    cfg = _read_json(folder / CFG_FILENAME)
    arch = cfg.get("architecture")
    has_state = (folder / TRAINER_STATE_FILENAME).is_file()
    final_hint = (
        "Publish the runner's final SAE folder instead (its output_path, e.g. <run>/final): the final SAE is saved "
        "as the base SAELens architecture (topk_ortho -> topk) with folded weights, and loads with plain SAELens "
        "(a standard_ortho SAE with a changed encoder saves as our inference architecture standard_ortho)."
    )
    ortho_training = (
        isinstance(arch, str)
        and arch.endswith("_ortho")
        and (arch not in SAE_CLASS_REGISTRY or is_ortho_training_cfg(cfg))
    )
    if isinstance(arch, str) and (ortho_training or arch not in SAE_CLASS_REGISTRY):
        state = f" and the folder holds {TRAINER_STATE_FILENAME}" if has_state else ""
        if arch.endswith("_ortho"):
            return (
                f"{folder} is a training checkpoint, not a final SAE: its cfg.json has the training architecture "
                f"{arch!r}{state}. A {arch!r} config is a sae_lens_ortho training config with unfolded weights: it "
                "loads only where the sae_lens_ortho plugin is installed and imported, and SAE.from_pretrained would "
                f"fail for everyone else (KeyError: {arch!r}). " + final_hint
            )
        if arch in SAE_TRAINING_CLASS_REGISTRY:
            return (
                f"{folder} is a training checkpoint, not a final SAE: its cfg.json has the SAELens training "
                f"architecture {arch!r}{state}, which has no inference SAE class to load it. " + final_hint
            )
        return (
            f"{folder}: cfg.json has architecture {arch!r}, which is not a registered SAELens inference architecture "
            f"(known: {', '.join(sorted(SAE_CLASS_REGISTRY))}); the published SAE would not load. " + final_hint
        )
    if not isinstance(arch, str):
        return f"{folder}: cfg.json has no 'architecture' field; this is not a SAELens SAE folder."
    if has_state:
        return (
            f"{folder} is a training checkpoint, not a final SAE: it holds {TRAINER_STATE_FILENAME} (optimizer and "
            "trainer state for resuming). " + final_hint
        )
    return None


def check_publishable(folder: str | Path) -> None:
    """Raise :class:`PublishError` unless ``folder`` is a final SAE folder (cfg.json + weights, not a checkpoint)."""
    folder = Path(folder)
    if not _is_sae_folder(folder):
        raise PublishError(f"{folder} is not an SAE folder: it needs {CFG_FILENAME} and {WEIGHTS_FILENAME}")
    problem = _checkpoint_problem(folder)
    if problem is not None:
        raise PublishError(problem)


def find_final_sae_folder(run_dir: str | Path) -> Path:
    """The final SAE folder of a run: ``run_dir`` itself if it holds cfg.json + sae_weights.safetensors (the runner's
    ``output_path``), else ``run_dir/final`` or ``run_dir/output``, else its only sub-folder holding a final SAE.

    Raises :class:`PublishError` if there is none, if several sub-folders qualify, or if the folder found is a
    training checkpoint.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PublishError(f"run folder {run_dir} does not exist or is not a directory")
    if _is_sae_folder(run_dir):
        check_publishable(run_dir)
        return run_dir
    for name in FINAL_FOLDER_NAMES:
        if _is_sae_folder(run_dir / name):
            check_publishable(run_dir / name)
            return run_dir / name
    candidates = sorted(p for p in run_dir.iterdir() if p.is_dir() and _is_sae_folder(p))
    finals = [p for p in candidates if _checkpoint_problem(p) is None]
    if len(finals) == 1:
        return finals[0]
    if len(finals) > 1:
        listed = ", ".join(str(p) for p in finals)
        raise PublishError(f"{run_dir} holds several SAE folders ({listed}); pass the one to publish")
    if candidates:  # only checkpoints (or otherwise unpublishable folders): explain the first
        problem = _checkpoint_problem(candidates[0])
        raise PublishError(f"no final SAE folder in {run_dir}; {problem}")
    raise PublishError(
        f"no SAE found in {run_dir}: expected {CFG_FILENAME} and {WEIGHTS_FILENAME} there or in one of "
        f"{' or '.join(n + '/' for n in FINAL_FOLDER_NAMES)} (the training runner writes the final SAE into its output_path)"
    )


# --- the model card --------------------------------------------------------------------------------------------

# Fields of cfg.json shown in the architecture table, in this order (when present).
_SAE_FIELDS = (
    "architecture",
    "d_in",
    "d_sae",
    "k",
    "dtype",
    "apply_b_dec_to_input",
    "normalize_activations",
    "reshape_activations",
    "rescale_acts_by_decoder_norm",
)
# Metadata fields shown in the model/data table.
_DATA_FIELDS = (
    "model_name",
    "model_class_name",
    "hook_name",
    "hook_head_index",
    "dataset_path",
    "context_size",
    "prepend_bos",
    "exclude_special_tokens",
    "sequence_separator_token",
    "disable_concat_sequences",
    "seqpos_slice",
    "model_from_pretrained_kwargs",
)
# runner_cfg.json fields shown in the training table.
_RUNNER_FIELDS = (
    "training_tokens",
    "train_batch_size_tokens",
    "lr",
    "lr_scheduler_name",
    "lr_warm_up_steps",
    "lr_decay_steps",
    "lr_end",
    "adam_beta1",
    "adam_beta2",
    "n_batches_in_buffer",
    "store_batch_size_prompts",
    "dead_feature_window",
    "feature_sampling_window",
    "dead_feature_threshold",
    "seed",
    "dtype",
    "autocast",
    "sae_lens_version",
)
# Final statistics the trainer stores in metadata.
_STAT_FIELDS = ("l0", "num_dead_features")


def _fmt(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)  # as in cfg.json: true, null, [..]
    return text.replace("|", "\\|").replace("\n", " ")


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| field | value |", "|---|---|"]
    lines += [f"| {name} | {_fmt(value)} |" for name, value in rows]
    return "\n".join(lines)


def _method_section(training_arch: str, details: dict[str, Any], found: tuple[str, SeedPaper] | None) -> list[str]:
    """What the run's own fields switched on (:func:`sae_lens_ortho.describe.describe_ortho`), then the papers
    each term comes from: a card never describes a mechanism the config did not use."""
    from sae_lens_ortho.describe import describe_ortho, ortho_values

    out = ["## Method", ""]
    base = training_arch.removesuffix("_ortho")
    if not training_arch.endswith("_ortho"):
        out.append(f"Trained with the `{training_arch}` training architecture (no seed paper is recorded for it).")
        return out
    out += [f"Trained with `{training_arch}`; what its fields switched on:", ""]
    out += [f"- {line}" for line in describe_ortho(details, base=f"SAELens `{base}`")]
    values = ortho_values(details)
    terms = []
    if found is not None and found[0] != "topk_ortho":
        key, paper = found
        terms.append(f"- preset `{key}`: {paper.follows} of *{paper.title}* (seed {paper.seed})")
    elif found is not None and values["ortho_coefficient"] > 0:
        paper = found[1]
        terms.append(f"- {paper.follows}: *{paper.title}* (seed {paper.seed})")
    weighting = values["ortho_weighting"]
    if values["ortho_coefficient"] > 0 and weighting in _WEIGHTING_SEEDS:
        named = "; ".join(f"*{SEED_TITLES[s]}* (seed {s})" for s in _WEIGHTING_SEEDS[weighting])
        terms.append(f"- pair weighting `{weighting}`, as in {named}")
    if values["ortho_decoder_coefficient"] > 0:
        terms.append(f"- decoder orthogonality penalty: *{SEED_TITLES[_DECODER_SEED]}* (seed {_DECODER_SEED})")
    if terms:
        out += ["", "Terms and their sources:", "", *terms]
    return out


def _public(value: Any) -> Any:
    """A local absolute path (the training machine's) as the folder's name only; anything else as it is."""
    if isinstance(value, str) and value.startswith(("/", "~")):
        return f"{Path(value).name} (a local folder)"
    return value


def model_card(
    cfg_dict: dict[str, Any],
    *,
    runner_cfg: dict[str, Any] | None = None,
    repo_id: str | None = None,
    sae_id: str | None = None,
    revision: str = "main",
) -> str:
    """A model card (README.md, markdown with YAML front matter) for a final SAE's ``cfg.json`` dict.

    Names the training architecture, every training hyperparameter it saved (all ortho fields, k, d_in, d_sae...),
    the model / hook / dataset from its metadata, the seed paper the method follows (:data:`SEED_PAPERS`), the
    runner's training settings when ``runner_cfg`` (``runner_cfg.json``) is given, and how to load it.
    """
    metadata = dict(cfg_dict.get("metadata") or {})
    details = dict(metadata.get("training_architecture_details") or {})
    arch = cfg_dict.get("architecture", "?")
    training_arch = metadata.get("training_architecture") or arch
    found = seed_paper_for(cfg_dict)
    model_name = _public(metadata.get("model_name"))
    hook_name = metadata.get("hook_name")

    tags = ["saelens", "sae-lens-ortho", "sparse-autoencoder", "interpretability", str(training_arch)]
    if found is not None and found[0] != training_arch:
        tags.append(found[0])
    front = ["---", "library_name: saelens", "tags:"] + [f"- {t}" for t in dict.fromkeys(tags)] + ["---", ""]

    where = " / ".join(str(x) for x in (model_name, hook_name) if x)
    title = f"# {training_arch} SAE" + (f" for {where}" if where else "")
    lines = [*front, title, ""]
    lines.append(
        f"A sparse autoencoder trained with the `{training_arch}` training architecture of sae-lens-ortho "
        "(selective orthogonality constraints for sparse autoencoders, a SAELens plugin)."
    )
    needs_plugin = arch == training_arch and str(arch).endswith("_ortho")
    if needs_plugin:  # an encoder option changed inference (e.g. standard_ortho with a LayerNorm)
        lines.append(
            f"Its encoder differs from SAELens's built-ins, so it is saved as the `{arch}` inference architecture "
            "of sae-lens-ortho and loads only where sae-lens-ortho is installed and imported. sae-lens-ortho is "
            f"not on PyPI: install it from its source, `{INSTALL_FROM_SOURCE}`, then `import sae_lens_ortho` "
            "before loading (see Usage)."
        )
    else:
        lines.append(
            f"It is saved as a plain SAELens `{arch}` SAE (the orthogonality terms only change training), so it "
            "loads with SAELens alone, without the plugin."
        )
    lines.append("")
    lines += _method_section(str(training_arch), details, found)

    lines += ["", "## Hyperparameters", ""]
    rows: list[tuple[str, Any]] = [("training_architecture", training_arch)]
    rows += [(name, cfg_dict[name]) for name in _SAE_FIELDS if name in cfg_dict]
    ortho = [(k, v) for k, v in details.items() if k.startswith("ortho_")]
    other = [(k, v) for k, v in details.items() if not k.startswith("ortho_")]
    rows += ortho + other
    lines.append(_table(rows))

    data_rows = [(name, _public(metadata[name])) for name in _DATA_FIELDS if name in metadata]
    if data_rows:
        lines += ["", "## Model and data", "", _table(data_rows)]
    if runner_cfg:
        run_rows = [(name, runner_cfg[name]) for name in _RUNNER_FIELDS if name in runner_cfg]
        if run_rows:
            lines += ["", "## Training run", "", _table(run_rows)]
    stat_rows = [(name, metadata[name]) for name in _STAT_FIELDS if name in metadata]
    if stat_rows:
        lines += ["", "## Final statistics (from training)", "", _table(stat_rows)]

    lines += ["", "## Usage", "", "```python"]
    if needs_plugin:  # saved as our own inference architecture: the plugin must register it first
        lines += [f"import sae_lens_ortho  # registers the {arch} architecture this SAE is saved as"]
    lines += ["from sae_lens import SAE", ""]
    rid = repo_id or "<repo_id>"
    sid = sae_id or (hook_name if isinstance(hook_name, str) else "<sae_id>")
    if revision == "main":
        lines.append(f'sae = SAE.from_pretrained("{rid}", "{sid}")')
    else:  # SAE.from_pretrained always reads the main revision
        lines += [
            "from pathlib import Path",
            "from huggingface_hub import snapshot_download",
            "",
            f'root = snapshot_download("{rid}", revision="{revision}", allow_patterns=["{sid}/*"])',
            f'sae = SAE.load_from_disk(Path(root) / "{sid}")',
        ]
    lines += ["```", ""]
    return "\n".join(lines)


# --- publishing ------------------------------------------------------------------------------------------------


def _default_sae_id(cfg_dict: dict[str, Any], folder: Path) -> str:
    hook = (cfg_dict.get("metadata") or {}).get("hook_name")
    return hook if isinstance(hook, str) and hook else folder.name


def _check_sae_id(sae_id: str) -> None:
    parts = sae_id.split("/")
    if not sae_id or sae_id.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise PublishError(f"invalid sae_id {sae_id!r}: use a relative folder path inside the repo, e.g. a hook name")


def publish_run(
    run_dir: str | Path,
    hf_repo_id: str,
    *,
    sae_id: str | None = None,
    revision: str = "main",
    private: bool = False,
    overwrite: bool = False,
    readme: Literal["if_missing", "overwrite", "skip"] = "if_missing",
    dry_run: bool = False,
    show_progress: bool = True,
) -> PublishResult:
    """Upload a run's final SAE to ``hf_repo_id`` under folder ``sae_id``, with a model card.

    Args:
        run_dir: the runner's ``output_path`` (holding cfg.json + sae_weights.safetensors) or a run folder with a
            ``final/`` sub-folder; see :func:`find_final_sae_folder`. Training checkpoints are refused.
        hf_repo_id: ``owner/name`` of the Hub model repo (created if missing).
        sae_id: folder inside the repo, the ``sae_id`` of ``SAE.from_pretrained(hf_repo_id, sae_id)``.
            Default: the SAE's hook name.
        revision: branch to upload to (created from ``main`` if missing). ``SAE.from_pretrained`` reads ``main``.
        private: create the repo private (only when it does not exist yet).
        overwrite: replace an SAE already published under ``sae_id`` (otherwise refused).
        readme: the repo-root ``README.md``: ``"if_missing"`` writes the card unless a README exists,
            ``"overwrite"`` always writes it, ``"skip"`` leaves it. The card is also written to
            ``<sae_id>/README.md`` (except with ``"skip"``).
        dry_run: resolve the folder and build the card, upload nothing.
        show_progress: SAELens's upload progress bar.
    """
    if readme not in ("if_missing", "overwrite", "skip"):
        raise ValueError(f"readme must be 'if_missing', 'overwrite' or 'skip', got {readme!r}")
    if not isinstance(hf_repo_id, str) or hf_repo_id.count("/") != 1 or not all(hf_repo_id.split("/")):
        raise PublishError(f"hf_repo_id must look like 'owner/name', got {hf_repo_id!r}")
    folder = find_final_sae_folder(run_dir)
    cfg_dict = _read_json(folder / CFG_FILENAME)
    runner_cfg = _read_json(folder / RUNNER_CFG_FILENAME) if (folder / RUNNER_CFG_FILENAME).is_file() else None
    sae_id = sae_id if sae_id is not None else _default_sae_id(cfg_dict, folder)
    _check_sae_id(sae_id)
    card = model_card(cfg_dict, runner_cfg=runner_cfg, repo_id=hf_repo_id, sae_id=sae_id, revision=revision)
    if dry_run:
        return PublishResult(hf_repo_id, sae_id, revision, folder, card, (), False)

    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise PublishError(
            "cannot publish: huggingface_hub is in offline mode (HF_HUB_OFFLINE is set; this project's Makefile sets "
            "it). Unset HF_HUB_OFFLINE to upload."
        )
    from sae_lens.training.upload_saes_to_huggingface import upload_saes_to_huggingface

    api = HfApi()
    # Create the repo (and branch) here: SAELens's uploader creates a missing repo public and on main only.
    api.create_repo(hf_repo_id, repo_type="model", private=private, exist_ok=True)
    if revision != "main":
        api.create_branch(hf_repo_id, branch=revision, repo_type="model", exist_ok=True)
    if not overwrite and api.file_exists(hf_repo_id, f"{sae_id}/{CFG_FILENAME}", repo_type="model", revision=revision):
        raise PublishError(
            f"{hf_repo_id} (revision {revision}) already has an SAE under {sae_id!r}; pass another sae_id "
            "(--sae-id) or overwrite=True (--overwrite) to replace it"
        )
    upload_saes_to_huggingface(
        {sae_id: folder}, hf_repo_id, hf_revision=revision, show_progress=show_progress, add_default_readme=False
    )

    written: list[str] = []
    if readme != "skip":
        targets = [f"{sae_id}/{README_FILENAME}"]
        if readme == "overwrite" or not api.file_exists(
            hf_repo_id, README_FILENAME, repo_type="model", revision=revision
        ):
            targets.append(README_FILENAME)
        else:
            log.info("%s already has a README.md; the card went to %s only", hf_repo_id, targets[0])
        for path_in_repo in targets:
            api.upload_file(
                path_or_fileobj=io.BytesIO(card.encode("utf-8")),
                path_in_repo=path_in_repo,
                repo_id=hf_repo_id,
                repo_type="model",
                revision=revision,
                commit_message=f"Model card for SAE {sae_id}",
            )
            written.append(path_in_repo)
    return PublishResult(hf_repo_id, sae_id, revision, folder, card, tuple(written), True)
