"""Saving the experiments' Plotly figures offline: HTML that loads one shared ``experiments/results/plotly.min.js``
(written from the installed plotly whenever an experiment saves a figure, so no figure needs the network or carries
its own 4.8 MB copy), plus a PNG when a static renderer (kaleido) is installed. That script is not committed (it is
the installed plotly's own file): after a clone, ``python experiments/figures.py`` writes it, and the committed
figures open offline."""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PLOTLY_JS = "plotly.min.js"


def shared_plotly_js(results: Path = RESULTS) -> Path:
    """``results/plotly.min.js``, written from the installed plotly package if missing."""
    from plotly.offline import get_plotlyjs

    path = results / PLOTLY_JS
    if not path.is_file():
        results.mkdir(parents=True, exist_ok=True)
        path.write_text(get_plotlyjs(), encoding="utf-8")
    return path


def save_figure(fig, out_dir: Path, name: str) -> list[Path]:
    """Write ``out_dir/name.html`` (offline, referencing the shared plotly.min.js by a relative path) and
    ``out_dir/name.png`` when kaleido is installed; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js = shared_plotly_js(out_dir.parent if out_dir.parent.name == "results" else RESULTS)
    html = out_dir / f"{name}.html"
    fig.write_html(html, include_plotlyjs=os.path.relpath(js, out_dir), full_html=True)
    written = [html]
    try:
        fig.write_image(out_dir / f"{name}.png", width=1000, height=600)
        written.append(out_dir / f"{name}.png")
    except Exception:  # noqa: BLE001 - no static renderer here: HTML only
        pass
    return written


if __name__ == "__main__":
    print(f"wrote {shared_plotly_js()}")
