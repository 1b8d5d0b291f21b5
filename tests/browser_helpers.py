"""Driving `sae-lab dashboard` in Debian's Chromium through Playwright (the browser test and the benchmark)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dashboard(targets: list[Path], log: Path, extra: list[str] = ()):
    """`sae-lab dashboard TARGETS --port P` (own process group, stopped on exit); yields the URL it printed."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "sae_lab",
        "dashboard",
        *map(str, targets),
        "--port",
        str(port),
        "--device",
        "cpu",
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the dashboard exited with {proc.returncode}: {log.read_text()}")
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"the dashboard did not come up in 120 s: {log.read_text()}") from None
                time.sleep(0.3)
        yield re.search(r"(http://\S+)", log.read_text()).group(1)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


@contextlib.contextmanager
def browser_page(timeout_ms: int = 120_000, width: int = 1400, height: int = 1100):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            browser.close()


def idle(pg) -> None:
    """Wait until the script run is over (Streamlit marks the app root) and no skeleton placeholder is left."""
    pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', state="attached")
    pg.wait_for_function("!document.querySelector('[data-testid=\"stSkeleton\"]')")


def click_and_wait(pg, locator) -> None:
    """Click, then wait for the rerun it starts to finish (a fast rerun may end before 'running' is seen)."""
    locator.click()
    try:
        pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="running"]', state="attached", timeout=2000)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError: the rerun was already over
        pass
    idle(pg)


def open_page(pg, url: str) -> None:
    pg.goto(url)
    pg.wait_for_selector('[data-testid="stMain"]')
    idle(pg)


def metric(pg, label: str) -> str:
    box = pg.locator('[data-testid="stMetric"]').filter(has=pg.get_by_text(label, exact=True)).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def exceptions(pg) -> list[str]:
    return [e.inner_text() for e in pg.locator('[data-testid="stException"]').all()]
