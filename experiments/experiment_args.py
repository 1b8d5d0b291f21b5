"""The command-line plumbing the seeded experiments share: full/quick presets and the work directory."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Callable


def apply_preset(a: argparse.Namespace, presets: dict[str, dict]) -> None:
    """Fill every option left unset (None or absent) from the ``quick`` or ``full`` preset."""
    for key, value in presets["quick" if a.quick else "full"].items():
        if getattr(a, key, None) is None:
            setattr(a, key, value)


def run_in_work(a: argparse.Namespace, run: Callable[[argparse.Namespace], dict], default_work: str) -> dict:
    """``run(a)`` with ``a.work`` set: ``--work``, else a temporary directory for ``--quick``, else ``default_work``."""
    if a.work is None and a.quick:
        with tempfile.TemporaryDirectory() as tmp:
            a.work = Path(tmp)
            return run(a)
    a.work = a.work or Path(default_work)
    return run(a)
