"""``LanguageModelSAERunnerConfig(architecture="topk_ortho", k=64, ortho_coefficient=1.0, model_name=..., ...)``.

SAELens 6 dropped the flat form of SAELens 5 (and of SAELens's own CLI): its runner config takes the SAE's
config as ``sae=<TrainingSAEConfig>``, and ``architecture=`` is a ``TypeError``. ``sae_lens_ortho``'s
``LanguageModelSAERunnerConfig`` takes the flat form and returns SAELens's real, unmodified
``sae_lens.LanguageModelSAERunnerConfig``; SAELens's class is not patched. Each keyword goes where it belongs:

* a field of SAELens's runner config, to the runner;
* a field of its ``LoggingConfig`` (``log_to_wandb``, ``wandb_project``, ``run_name``, ...), to ``logger``;
* a field of the architecture's training config (``d_in``, ``d_sae``, ``k``, every ``ortho_*`` field, ...), to
  ``sae``; ``device`` and ``dtype`` are fields of both and go to both, as in SAELens 5.

A keyword that is none of these raises ``TypeError`` naming it and the closest field names. ``sae=`` (a config
object) may be given instead of ``architecture=``; flat SAE fields then replace its values. Presets build their
runner configs with :func:`split_runner_kwargs` too, so ``preset.runner_config(ortho_coefficient=0.3)`` works.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from sae_lens import LanguageModelSAERunnerConfig as _SAELensRunnerConfig
from sae_lens import LoggingConfig
from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY
from sae_lens.saes.sae import TrainingSAEConfig

__all__ = ["DEFAULT_ARCHITECTURE", "LanguageModelSAERunnerConfig", "build_runner_config", "split_runner_kwargs"]

DEFAULT_ARCHITECTURE = "topk_ortho"
"""``architecture=`` of :func:`LanguageModelSAERunnerConfig` and ``--architecture`` of ``sae-lens-ortho train`` when
not given (SAELens's own default is ``standard``). The light entry point ``sae_lens_ortho_cli`` names it in its help
without importing the package; ``tests/test_cli.py`` checks the two agree."""


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def _config_class(architecture: str) -> type[TrainingSAEConfig]:
    if architecture not in SAE_TRAINING_CLASS_REGISTRY:
        raise ValueError(
            f"architecture must be a registered training architecture, one of "
            f"{', '.join(SAE_TRAINING_CLASS_REGISTRY)}; got {architecture!r}"
        )
    return SAE_TRAINING_CLASS_REGISTRY[architecture][1]


def split_runner_kwargs(
    kwargs: Mapping[str, Any], *, architecture: str | None = None, sae: TrainingSAEConfig | None = None
) -> tuple[TrainingSAEConfig, dict[str, Any]]:
    """Sort flat keywords into (the SAE config, the runner's keywords with ``logger`` built).

    The SAE config is ``sae`` with the SAE fields in ``kwargs`` replaced, or, without ``sae``, the config of
    ``architecture`` (default ``topk_ortho``) built from them. Raises ``TypeError`` for a keyword that is no field
    of the runner, its logger or the SAE config, ``ValueError`` for an unknown architecture or an SAE field given
    out of range (the SAE config's own validation).
    """
    if sae is not None and architecture is not None and architecture != sae.architecture():
        raise ValueError(f"architecture={architecture!r} contradicts sae= (a {sae.architecture()} config)")
    cfg_cls = type(sae) if sae is not None else _config_class(architecture or DEFAULT_ARCHITECTURE)
    runner_fields = _field_names(_SAELensRunnerConfig) - {"sae"}
    logger_fields = _field_names(LoggingConfig)
    sae_fields = _field_names(cfg_cls)
    unknown = sorted(set(kwargs) - runner_fields - logger_fields - sae_fields)
    if unknown:
        arch = sae.architecture() if sae is not None else architecture or DEFAULT_ARCHITECTURE
        known = runner_fields | logger_fields | sae_fields
        hints = [m for name in unknown for m in difflib.get_close_matches(name, known, n=2)]
        raise TypeError(
            f"LanguageModelSAERunnerConfig: {', '.join(map(repr, unknown))} is not a field of the runner "
            f"(sae_lens.LanguageModelSAERunnerConfig), its logger (LoggingConfig) or the {arch} SAE config "
            f"({cfg_cls.__name__})" + (f"; did you mean {', '.join(map(repr, hints))}?" if hints else "")
        )
    sae_kwargs = {k: v for k, v in kwargs.items() if k in sae_fields}
    runner = {k: v for k, v in kwargs.items() if k in runner_fields}
    logger_kwargs = {k: v for k, v in kwargs.items() if k in logger_fields and k not in runner_fields}
    if logger_kwargs:
        logger = runner.get("logger")
        runner["logger"] = dataclasses.replace(logger, **logger_kwargs) if logger else LoggingConfig(**logger_kwargs)
    if sae is None:
        sae = cfg_cls(**sae_kwargs)
    elif sae_kwargs:
        sae = dataclasses.replace(sae, **sae_kwargs)  # validated again by the config's __post_init__
    return sae, runner


def build_runner_config(
    architecture: str | None = None, *, sae: TrainingSAEConfig | None = None, **kwargs: Any
) -> _SAELensRunnerConfig[Any]:
    """SAELens's ``LanguageModelSAERunnerConfig`` from the flat form (see the module docstring)."""
    sae_cfg, runner = split_runner_kwargs(kwargs, architecture=architecture, sae=sae)
    return _SAELensRunnerConfig(sae=sae_cfg, **runner)


class _BuildsSAELensConfig(type):
    """Calling the class builds SAELens's config; ``isinstance`` and class attributes (``from_dict``) are
    SAELens's class's."""

    def __call__(cls, architecture: str | None = None, **kwargs: Any) -> _SAELensRunnerConfig[Any]:
        return build_runner_config(architecture, **kwargs)

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, _SAELensRunnerConfig)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, _SAELensRunnerConfig)

    def __getattr__(cls, name: str) -> Any:
        return getattr(_SAELensRunnerConfig, name)


class LanguageModelSAERunnerConfig(metaclass=_BuildsSAELensConfig):
    """``LanguageModelSAERunnerConfig(architecture="topk_ortho", d_in=512, d_sae=16384, k=64, ortho_coefficient=1.0,
    model_name=..., hook_name=..., ...)`` returns SAELens's ``LanguageModelSAERunnerConfig`` with
    ``sae=TopKOrthoTrainingSAEConfig(d_in=512, d_sae=16384, k=64, ortho_coefficient=1.0)``.

    ``architecture`` defaults to ``topk_ortho``; ``sae=`` (a config) may be given instead. See
    :mod:`sae_lens_ortho.runner_config` for where each keyword goes.
    """
