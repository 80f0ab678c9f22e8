"""``sae-lens-ortho train``'s help and usage errors, readable: a short summary first, the ortho flags grouped by
mechanism, and a mistyped flag or architecture as one line with a "did you mean" (argparse printed 108 lines of
usage before the error; SAELens's parser lists every flag in its usage line).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from sae_lens_ortho.describe import FIELD_GROUPS

__all__ = ["PROG", "USAGE", "did_you_mean", "error", "regroup_help", "summary", "usage_error"]

PROG = "sae-lens-ortho"
"""The console script's name (``sae_lens_ortho_cli.PROG``, which must not import the package, says it too)."""


def error(command: str, message: str) -> int:
    """Print ``sae-lens-ortho COMMAND: error: MESSAGE`` on stderr; returns the usage-error status 2."""
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)
    return 2


USAGE = "%(prog)s [-h] [--plugin MODULE] [--architecture NAME] [--FLAG VALUE ...]"

_GROUP_TITLES = {
    "CommandLineRunnerConfig": ("runner (SAELens's LanguageModelSAERunnerConfig)", None),
    "LoggingConfig": ("logging (wandb)", None),
}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, or ``""`` when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def usage_error(message: str, option_strings: Iterable[str], ortho_fields: Mapping[str, tuple[str, ...] | None]) -> str:
    """argparse's error ``message`` as one line, each unrecognised flag with the closest known flag.
    ``ortho_fields``: {ortho field: the base architectures whose twins have it (None: every one)}."""
    m = re.match(r"unrecognized arguments: (.*)", message)
    if not m:
        return message
    known = [s for s in option_strings if s.startswith("--")]
    flags = [a.split("=", 1)[0] for a in m.group(1).split() if a.startswith("-")]
    if not flags:
        return f"unexpected value(s) {m.group(1)}: every value follows its --flag"
    parts = []
    for flag in flags:
        name = flag.removeprefix("--")
        if name in ortho_fields:
            bases = ortho_fields[name]
            where = ", ".join(f"{b}_ortho" for b in bases) if bases else "the *_ortho architectures"
            parts.append(f"{flag} is a flag of {where} only (pick one with --architecture)")
        else:
            parts.append(f"unknown flag {flag}{did_you_mean(flag, known)}")
    return "; ".join(parts)


def summary(ortho_architectures: str, default: str) -> str:
    """The help's opening: what ``train`` is, the flags to start with, the architectures and the mechanisms."""
    width = max(len(g.title) for g in FIELD_GROUPS)
    mechanisms = "\n".join(f"  {g.title:<{width}}  {g.summary}" for g in FIELD_GROUPS)
    return (
        "Train an SAE with SAELens's own runner and the sae_lens_ortho architectures.\n\n"
        "Start with:\n"
        "  --model_name NAME_OR_FOLDER --hook_name HOOK --dataset_path ID_OR_FOLDER --d_in N --d_sae N --k N\n"
        "  --training_tokens N --output_path FOLDER\n"
        "--model_name takes a TransformerLens model name or a local Hugging Face model folder; --dataset_path a Hub\n"
        "dataset or a local one (save_to_disk, parquet, json, text).\n\n"
        f"--architecture (alias --sae) defaults to {default}; the ortho architectures are\n  {ortho_architectures}.\n"
        "Pass --architecture NAME --help for that architecture's flags.\n\n"
        "Ortho mechanisms, all off by default (an *_ortho SAE then trains exactly as its base); their flags are\n"
        f"grouped below under 'ortho: <mechanism>':\n{mechanisms}"
    )


def regroup_help(parser: argparse.ArgumentParser) -> None:
    """Move each ``--ortho_*`` option into a help group of its mechanism (:data:`FIELD_GROUPS`) and give SAELens's
    config groups short titles. Only the help's layout changes: parsing reads ``parser._actions``, untouched."""
    if getattr(parser, "_ortho_regrouped", False):
        return
    by_field: dict[str, Any] = {}
    for group in list(parser._action_groups):
        title = (group.title or "").split(" ", 1)[0]
        if title in _GROUP_TITLES:
            group.title, group.description = _GROUP_TITLES[title]
        elif title.endswith("TrainingSAEConfig"):
            group.title, group.description = f"SAE ({title})", None
        for action in list(group._group_actions):
            field = action.dest.rsplit(".", 1)[-1]
            if field.startswith("ortho_"):
                by_field[field] = action
                group._group_actions.remove(action)
    for spec in FIELD_GROUPS:
        actions = [by_field.pop(name) for name in spec.fields if name in by_field]
        if actions:
            group = parser.add_argument_group(f"ortho: {spec.title}", spec.summary)
            group._group_actions.extend(actions)
    if by_field:  # a field no group names (tests/test_cli.py keeps this empty): listed, not lost
        parser.add_argument_group("ortho: other")._group_actions.extend(by_field.values())
    parser._ortho_regrouped = True  # type: ignore[attr-defined]
