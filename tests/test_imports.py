"""The package's import graph has no circle, and the library never imports the dashboard (sae_lab/app/).

Every import statement counts: also those inside functions (a lazy import still couples two modules) and those
under ``if TYPE_CHECKING:`` (a type annotation does too: a module that names another's class in its signatures
depends on it). ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = "sae_lab.app"  # the dashboard; its files also import one another by their own names (main.py puts the
APP_DIR = ROOT / "sae_lab" / "app"  # app's folder on sys.path), so those names count as the dashboard too
APP_NAMES = {p.stem for p in APP_DIR.iterdir() if p.suffix == ".py" or p.is_dir() and p.name != "__pycache__"}


def is_app(module: str) -> bool:
    return module == APP or module.startswith(APP + ".") or module.split(".")[0] in APP_NAMES


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return {m for m in out if m in modules or is_app(m)}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in (ROOT / "sae_lab").rglob("*.py")}
    return {m: imports_of(p, set(files)) - {m} for m, p in files.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_sae_lab():
    g = graph()
    assert "sae_lab.saes.registry" in g and "sae_lab.saes.config" in g["sae_lab.saes.base"]  # the graph is real
    assert cycles(g) == []


def test_the_library_never_imports_the_dashboard():
    g = graph()
    assert "sae_lab.workspace" in g["sae_lab.app.state"] and "state" in g["sae_lab.app.views.runs"]  # app is seen
    assert not [(m, d) for m, deps in g.items() if not is_app(m) for d in deps if is_app(d)]
