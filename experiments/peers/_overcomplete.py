"""Import ``overcomplete.sae`` without overcomplete's top-level ``__init__``.

overcomplete 0.3.0's ``overcomplete/__init__.py`` eagerly imports its vision model zoo
(``overcomplete.models`` -> torchvision, timm). PyPI's torchvision wheels are CUDA builds whose C
extension cannot load next to the CPU torch 2.13.0 used here ("operator torchvision::nms does not
exist"), and installing them pulls a CUDA torch. The SAE code (``overcomplete.sae``: TopKSAE, MpSAE,
train_sae) needs none of that, so the venv installs overcomplete with ``--no-deps`` plus the few
packages the SAE path imports (einops, numpy, scipy, scikit-learn), and this helper registers a bare
``overcomplete`` package (same directory, no ``__init__`` side effects) before importing
``overcomplete.sae``. The SAE classes and trainer are the library's own, unmodified.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def import_overcomplete_sae():
    try:
        return importlib.import_module("overcomplete.sae")
    except (ImportError, RuntimeError, OSError):
        for name in [m for m in sys.modules if m == "overcomplete" or m.startswith("overcomplete.")]:
            del sys.modules[name]
    spec = importlib.util.find_spec("overcomplete")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("overcomplete is not installed in this environment")
    pkg = types.ModuleType("overcomplete")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__file__ = spec.origin
    pkg.__package__ = "overcomplete"
    pkg.__spec__ = spec
    sys.modules["overcomplete"] = pkg
    return importlib.import_module("overcomplete.sae")
