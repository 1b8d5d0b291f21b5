"""HTML for token sequences coloured by activation (exact value on hover), and small figure helpers."""

from __future__ import annotations

import html
import re

import plotly.graph_objects as go

STYLE = (
    "<style>.sae-ex{font-family:ui-monospace,monospace;font-size:0.85rem;line-height:1.7;margin:2px 0;"
    "white-space:pre-wrap}.sae-ex .v{display:inline-block;min-width:5.5em;color:#666}"
    ".sae-ex span.t{border-radius:3px;padding:0 1px}.sae-ex span.h{outline:2px solid #d62728}</style>"
)


def _token_text(t: str) -> str:
    return html.escape(t.replace("\n", "↵").replace("\t", "⇥"))


def tokens_html(
    tokens: list[str], acts: list[float], vmax: float, highlight: int | None = None, label: str | None = None
) -> str:
    """One line of tokens; background opacity = act / vmax (orange positive, blue negative); title = exact value."""
    parts = ['<div class="sae-ex">']
    if label is not None:
        parts.append(f'<span class="v">{html.escape(label)}</span>')
    for i, (t, a) in enumerate(zip(tokens, acts)):
        alpha = min(abs(a) / vmax, 1.0) if vmax > 0 else 0.0
        colour = "255,127,14" if a >= 0 else "31,119,180"
        cls = "t h" if i == highlight else "t"
        parts.append(
            f'<span class="{cls}" style="background:rgba({colour},{alpha:.2f})" '
            f'title="{html.escape(repr(t))}: {a:.4g}">{_token_text(t)}</span>'
        )
    parts.append("</div>")
    return "".join(parts)


def examples_html(examples: list[dict], vmax: float | None = None) -> str:
    """Feature-database examples (tokens, acts, highlight, value), one line each, on a shared colour scale."""
    if not examples:
        return "<p><i>no examples</i></p>"
    vmax = vmax or max((max(e["acts"]) for e in examples if e["acts"]), default=1.0)
    return STYLE + "".join(
        tokens_html(e["tokens"], e["acts"], vmax, e["highlight"], f"{e['value']:.3f}") for e in examples
    )


def histogram(counts: list[int], edges: list[float], title: str = "") -> go.Figure:
    """A bar chart of histogram counts over their bin edges."""
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    fig = go.Figure(go.Bar(x=centres, y=counts, width=[b - a for a, b in zip(edges[:-1], edges[1:])]))
    fig.update_layout(
        title=title,
        height=260,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        bargap=0.02,
        xaxis_title="activation",
        yaxis_title="count",
    )
    return fig


def escape_markdown(text: str) -> str:
    """Model-written text shown literally in st.markdown (no links, emphasis or HTML of its own)."""
    return re.sub(r"([\\`*_{}\[\]()<>#+\-.!|~$])", r"\\\1", text.replace("\n", " "))


def scores_text(e: dict) -> str:
    """An explanation's scores in words: balanced accuracy with its contexts, next to the random baseline."""
    parts = []
    for m in ("detection", "fuzzing"):
        if e.get(m) is None:
            continue
        floor = e.get(f"{m}_random")
        parts.append(
            f"{m} {e[m]:.2f} on {e[f'{m}_n']} contexts"
            + (f" (random explanation {floor:.2f})" if floor is not None else "")
        )
    return "; ".join(parts) + " · 0.5 = chance" if parts else "not scored"
