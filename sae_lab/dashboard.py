"""Launching the Streamlit dashboard (``app/`` in the repository) on a workspace: the ``sae-lab dashboard`` command.

This module only builds the Streamlit command line; it never imports ``app/``.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from sae_lab.configbase import ConfigError
from sae_lab.workspace import Workspace

APP_MAIN = Path(__file__).resolve().parent.parent / "app" / "main.py"


def is_local_host(host: str) -> bool:
    """True for loopback addresses (127.0.0.0/8, ::1) and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dashboard_command(targets: list[str], host: str = "127.0.0.1", port: int = 8501, model: str | None = None,
                      device: str = "auto", app: Path = APP_MAIN) -> tuple[list[str], str, str | None]:
    """(argv that runs Streamlit on the app, the URL to open, a warning or None); checks the targets first."""
    Workspace(targets)  # refuse missing or unrecognised directories before starting a server
    if not app.is_file():
        raise ConfigError(f"the dashboard app is missing ({app}); install sae-lab from its repository "
                          f"(`python install.py`), which keeps app/ next to the package")
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} is not a TCP port (1-65535)")
    warning = None
    if not is_local_host(host):
        warning = (f"binding to {host}: anyone who can reach this machine on port {port} can browse these "
                   f"directories and run the model. Use the default 127.0.0.1 unless you mean it.")
    flags = {"server.address": host, "server.port": port, "server.headless": "true", "server.fileWatcherType": "none",
             "server.runOnSave": "false", "browser.gatherUsageStats": "false", "server.enableXsrfProtection": "true",
             "client.toolbarMode": "minimal"}
    app_args = [str(Path(t).resolve()) for t in targets] + ["--device", device] + (["--model", model] if model else [])
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), *[f"--{k}={v}" for k, v in flags.items()],
           "--", *app_args]
    shown = f"[{host}]" if ":" in host else host
    return cmd, f"http://{shown}:{port}/", warning
