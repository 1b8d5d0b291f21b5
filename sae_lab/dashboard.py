"""Launching the Streamlit dashboard (``sae_lab/app/``, shipped in the wheel) on a workspace: ``sae-lab dashboard``.

This module only builds the Streamlit command line; it never imports the app (Streamlit runs its files).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import sys
from pathlib import Path

from sae_lab.configbase import ConfigError
from sae_lab.workspace import Workspace

APP_MAIN = Path(__file__).resolve().parent / "app" / "main.py"  # the app's entry file, inside the package
APP_MODULES = ("streamlit", "plotly", "pandas")  # what the app imports beyond sae_lab: the `app` extra


def missing_app_modules() -> list[str]:
    """The dashboard's own dependencies (the `app` extra) that are not installed."""
    return [m for m in APP_MODULES if importlib.util.find_spec(m) is None]


def is_local_host(host: str) -> bool:
    """True for loopback addresses (127.0.0.0/8, ::1) and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dashboard_command(
    targets: list[str],
    host: str = "127.0.0.1",
    port: int = 8501,
    model: str | None = None,
    device: str = "auto",
    app: Path = APP_MAIN,
) -> tuple[list[str], str, str | None]:
    """(argv that runs Streamlit on the app, the URL to open, a warning or None); checks the targets first.
    A published SAE (``RELEASE:SAE_ID``) is converted to its local SAE directory first."""
    from sae_lab.pretrained import is_release_target, release_dirs

    targets = [str(d) for t in targets for d in (release_dirs(t) if is_release_target(t) else [t])]
    ws = Workspace(targets)  # refuse missing or unrecognised directories before starting a server
    for entry in ws.entries():  # an SAE's recorded model contradicting --model: refused here, not in the app
        ws.model_name(entry, model)
    if missing := missing_app_modules():
        raise ConfigError(
            f"the dashboard needs {', '.join(missing)}, which come with the `app` extra: `pip install 'sae-lab[app]'`"
        )
    if not app.is_file():
        raise ConfigError(
            f"the dashboard app is missing ({app}): this sae-lab install is incomplete; reinstall it "
            f"with the dashboard extra (`pip install --force-reinstall 'sae-lab[app]'`)"
        )
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} is not a TCP port (1-65535)")
    warning = None
    if not is_local_host(host):
        warning = (
            f"binding to {host}: anyone who can reach this machine on port {port} can browse these "
            f"directories and run the model. Use the default 127.0.0.1 unless you mean it."
        )
    flags = {
        "server.address": host,
        "server.port": port,
        "server.headless": "true",
        "server.fileWatcherType": "none",
        "server.runOnSave": "false",
        "browser.gatherUsageStats": "false",
        "server.enableXsrfProtection": "true",
        "client.toolbarMode": "minimal",
    }
    app_args = [str(Path(t).resolve()) for t in targets] + ["--device", device] + (["--model", model] if model else [])
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        *[f"--{k}={v}" for k, v in flags.items()],
        "--",
        *app_args,
    ]
    shown = f"[{host}]" if ":" in host else host
    return cmd, f"http://{shown}:{port}/", warning
