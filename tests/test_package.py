"""The package outside the repository: `python -m build` makes an sdist and a wheel (the wheel from the sdist),
the wheel installs into a fresh virtual environment, and from there `sae-lab --help` runs and the dashboard's
entry file, inside the installed package, runs under Streamlit's AppTest (``tests/installed_smoke.py``).

The fresh venv sees the test environment's third-party packages through a ``.pth`` file that lists their
site-packages directories. Such a plain path line does not run that directory's own ``.pth`` files, so the
editable install of sae_lab (a finder started by a ``.pth``) stays invisible: the wheel's copy is the only one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP_FILES = ["sae_lab/app/main.py", "sae_lab/app/state.py", "sae_lab/app/views/features.py"]

pytestmark = pytest.mark.package


def run(cmd: list, cwd: Path, env: dict | None = None) -> str:
    """Run ``cmd``; its stdout, or a failure that shows what it printed."""
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p.stdout


def build(tmp: Path) -> tuple[Path, Path]:
    """``python -m build`` on a copy of the project (the build writes egg-info next to its sources)."""
    found = subprocess.run([sys.executable, "-c", "import build; assert build.__file__"], cwd=tmp, capture_output=True)
    if found.returncode != 0:  # (asked where it runs: a build/ folder in the checkout would shadow it here)
        pytest.fail("`build` is not installed: install the dev extra (`python install.py --dev`)")
    src = tmp / "src"
    shutil.copytree(ROOT / "sae_lab", src / "sae_lab", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    # no isolation: the build backend (setuptools) comes from this environment, so the test needs no network
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp / "dist", src], cwd=tmp)
    (sdist,), (wheel,) = sorted((tmp / "dist").glob("*.tar.gz")), sorted((tmp / "dist").glob("*.whl"))
    return sdist, wheel


def fresh_venv(where: Path, wheel: Path) -> tuple[Path, dict]:
    """A venv with only ``wheel`` installed in it (no deps), then this environment's site-packages added."""
    run([sys.executable, "-m", "venv", "--without-pip", where], cwd=where.parent)
    python = where / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            wheel,
        ],
        cwd=where.parent,
        env=env,
    )
    purelib = Path(
        run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=where.parent, env=env).strip()
    )
    ours = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p) != purelib]
    (purelib / "test_environment.pth").write_text("\n".join(ours) + "\n")  # after the install: pip never sees it
    return purelib, {**env, "PATH": f"{where / 'bin'}{os.pathsep}{env.get('PATH', '')}"}


def test_the_wheel_installs_and_runs_the_dashboard(tmp_path):
    sdist, wheel = build(tmp_path)
    with tarfile.open(sdist) as t:
        in_sdist = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert set(APP_FILES) <= in_sdist and set(APP_FILES) <= in_wheel and "sae_lab/cli.py" in in_wheel
    assert not [n for n in in_wheel if n.startswith(("tests/", "app/"))]  # only the package

    purelib, env = fresh_venv(tmp_path / "venv", wheel)
    work = tmp_path / "work"
    work.mkdir()
    python = tmp_path / "venv" / "bin" / "python"
    where = run([python, "-c", "import sae_lab; print(sae_lab.__file__)"], cwd=work, env=env).strip()
    assert Path(where).is_relative_to(purelib), f"sae_lab imported from {where}, not from the fresh venv"

    usage = run([tmp_path / "venv" / "bin" / "sae-lab", "--help"], cwd=work, env=env)
    assert "dashboard" in usage and "train" in usage

    shown = json.loads(run([python, ROOT / "tests" / "installed_smoke.py", work], cwd=work, env=env).splitlines()[-1])
    assert Path(shown["sae_lab"]).is_relative_to(purelib) and Path(shown["app"]) == purelib / "sae_lab/app/main.py"
    assert shown["exceptions"] == [] and shown["errors"] == [], shown
    assert shown["title"][:1] == ["Runs"] and shown["saes"] == ["smoke_topk"], shown
