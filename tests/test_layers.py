"""The package's layers hold: a static read of every import in ``sae_lens_ortho/`` (no module is executed).

* ``core/`` is pure torch: it never imports ``sae_lens`` and imports nothing of ours outside ``core/``;
* ``saes/`` (the SAELens adapters) never imports ``evals/`` or the edges (``cli``, ``hub``, ``bench``, ``training``,
  and the command line's own modules ``plugins``, ``local_sources``, ``dataset_checks``);
* nothing in the library imports the console script's module ``sae_lens_ortho_cli`` (it imports the library);
* ``sae_lens_bridge`` (every SAELens workaround) imports nothing of ours, so any layer may use it;
* a mechanism (``saes/mechanisms/<name>.py``) imports only ``core/``, the field checks (``saes/checks``), the
  micro-batch step (``saes/accumulate``) and other mechanisms: never the mixin, the configs, the architectures or
  the resource plan, which reach it through the registry (``saes/mechanisms/__init__.py``) alone;
* the import graph of our own modules has no cycle (function-level imports count too).

``import_graph`` and ``layer_violations`` take the package folder as an argument, so the test that they catch a
``core/`` file importing SAELens runs them on a copy of the package with one such line added.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sae_lens_ortho"
EDGES = (
    "sae_lens_ortho.cli",
    "sae_lens_ortho.hub",
    "sae_lens_ortho.bench",
    "sae_lens_ortho.training",
    "sae_lens_ortho.plugins",
    "sae_lens_ortho.local_sources",
    "sae_lens_ortho.dataset_checks",
)
ENTRY_POINT = "sae_lens_ortho_cli"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> list[str]:
    """Every module name ``path`` imports, at any depth of the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append(base)
            # ``from pkg import sub`` may import a submodule: record it as well.
            out += [f"{base}.{a.name}" for a in node.names]
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """{our module: {names it imports}}; names of ours are resolved to modules that exist."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        names = set(_imports(path, mod))
        ours = {n for n in names if n in files}
        # Other packages' names, ``sae_lens_ortho_cli`` among them (it starts with the package's name: not ours).
        graph[mod] = ours | {n for n in names if n != root.name and not n.startswith(root.name + ".")}
    return graph


def _mechanism_may_import(root: Path, name: str) -> bool:
    allowed = (
        f"{root.name}.core",
        f"{root.name}.saes.mechanisms",
        f"{root.name}.saes.checks",
        f"{root.name}.saes.accumulate",
    )
    packages = (root.name, f"{root.name}.saes")  # ``from sae_lens_ortho.saes import x`` also names the package
    return (
        name in packages
        or not name.startswith(root.name)
        or any(name == a or name.startswith(a + ".") for a in allowed)
    )


def layer_violations(root: Path = PACKAGE) -> list[str]:
    graph = import_graph(root)
    core = f"{root.name}.core"
    saes = f"{root.name}.saes"
    bridge = f"{root.name}.sae_lens_bridge"
    mechanisms = f"{saes}.mechanisms"
    bad = []
    for mod, names in sorted(graph.items()):
        for name in sorted(names):
            top = name.split(".")[0]
            if top == ENTRY_POINT:
                bad.append(f"{mod} imports {name}: the library never imports the console script's module")
            if mod == bridge and top == root.name:
                bad.append(f"{mod} imports {name}: the bridge imports nothing of ours")
            if mod.startswith(mechanisms + ".") and not _mechanism_may_import(root, name):
                bad.append(f"{mod} imports {name}: a mechanism imports only core/, saes.checks and mechanisms")
            if mod.startswith(core):
                if top == "sae_lens":
                    bad.append(f"{mod} imports {name}: core/ never imports SAELens")
                elif top == root.name and not (name == core or name.startswith(core + ".")):
                    bad.append(f"{mod} imports {name}: core/ imports nothing outside core/")
            if mod.startswith(saes):
                if name.startswith(f"{root.name}.evals") or name.startswith(EDGES):
                    bad.append(f"{mod} imports {name}: saes/ never imports evals/ or the edges")
    return bad


def import_cycles(root: Path = PACKAGE) -> list[list[str]]:
    """Cycles among our own modules, each as the path that closes it."""
    full = import_graph(root)
    graph = {m: {n for n in ns if n in full} for m, ns in full.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n) :], n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_layers_hold() -> None:
    assert layer_violations() == []


def test_no_import_cycles() -> None:
    assert import_cycles() == []


def test_a_mechanism_importing_the_mixin_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / PACKAGE.name
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "saes" / "mechanisms" / "adaptive_l1.py"
    target.write_text(target.read_text() + "\n\ndef _late():\n    from sae_lens_ortho.saes import ortho  # noqa\n")
    bad = layer_violations(copy)
    assert bad == [
        "sae_lens_ortho.saes.mechanisms.adaptive_l1 imports sae_lens_ortho.saes.ortho: a mechanism imports only "
        "core/, saes.checks and mechanisms"
    ]


def test_upward_imports_are_caught(tmp_path: Path) -> None:
    copy = tmp_path / PACKAGE.name
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "core" / "pairs.py"
    target.write_text(target.read_text() + "\n\ndef _late():\n    from sae_lens import SAE  # noqa\n")
    (copy / "core" / "schedules.py").write_text(
        (copy / "core" / "schedules.py").read_text() + "\nimport sae_lens_ortho.saes.config\n"
    )
    (copy / "runner_config.py").write_text(
        (copy / "runner_config.py").read_text() + "\nfrom sae_lens_ortho_cli import DEFAULT_ARCHITECTURE\n"
    )
    (copy / "saes" / "twins.py").write_text(
        (copy / "saes" / "twins.py").read_text() + "\nfrom sae_lens_ortho.local_sources import local_sources\n"
    )
    bad = layer_violations(copy)
    assert "sae_lens_ortho.core.pairs imports sae_lens: core/ never imports SAELens" in bad
    assert any(b.startswith("sae_lens_ortho.runner_config imports sae_lens_ortho_cli") for b in bad)
    assert any(b.startswith("sae_lens_ortho.saes.twins imports sae_lens_ortho.local_sources") for b in bad)
    assert any(b.startswith("sae_lens_ortho.core.schedules imports sae_lens_ortho.saes.config") for b in bad)


def test_a_cycle_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / PACKAGE.name
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "core" / "kernels.py"
    target.write_text(target.read_text() + "\n\ndef _late():\n    from sae_lens_ortho.core import pairs  # noqa\n")
    assert any("sae_lens_ortho.core.kernels" in c and "sae_lens_ortho.core.pairs" in c for c in import_cycles(copy))
