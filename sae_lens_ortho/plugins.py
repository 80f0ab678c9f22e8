"""``--plugin MODULE``: import a user's module before a command reads SAELens's architecture registry.

SAELens has no entry points: an architecture exists once some import has registered it. A module that calls
``sae_lens_ortho.add_ortho(...)`` (or registers its own SAE classes) becomes reachable from ``sae-lens-ortho
train`` / ``eval`` with ``--plugin my_module`` (a module name importable from the working directory) or
``--plugin path/to/my_module.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PLUGIN_HELP", "PluginError", "import_plugins", "pop_plugin_args"]

PLUGIN_HELP = (
    "import this module first (a module name found from the working directory, or a .py path), e.g. one that "
    "calls sae_lens_ortho.add_ortho(...) to register an architecture; repeatable"
)


class PluginError(ValueError):
    """A ``--plugin`` module that cannot be imported."""


def pop_plugin_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``--plugin X`` / ``--plugin=X`` (repeatable) out of ``argv``: returns (plugins, the other args)."""
    plugins: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--plugin":
            value = next(args, None)
            if value is None or value.startswith("-"):
                raise PluginError("--plugin needs a module name or a .py path")
            plugins.append(value)
        elif arg.startswith("--plugin="):
            plugins.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return plugins, rest


def _import_file(path: Path) -> None:
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"--plugin {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def import_plugins(plugins: Sequence[str]) -> None:
    """Import each plugin: a ``.py`` path by file, otherwise a module name, with the working directory on
    ``sys.path`` (console scripts do not put it there). Raises :class:`PluginError` with a one-line reason."""
    for plugin in plugins:
        path = Path(plugin).expanduser()
        try:
            if plugin.endswith(".py") or path.is_file():
                if not path.is_file():
                    raise PluginError(f"--plugin {plugin}: no such file")
                _import_file(path.resolve())
                continue
            cwd = os.getcwd()
            if cwd not in sys.path and "" not in sys.path:
                sys.path.insert(0, cwd)
            importlib.import_module(plugin)
        except PluginError:
            raise
        except Exception as e:  # noqa: BLE001 - any import-time error becomes one line naming the plugin
            raise PluginError(f"--plugin {plugin}: cannot import it: {type(e).__name__}: {e}") from e
