"""``FeatureGraph``: the nodes and edges that ``edges`` finds, with JSON and (offline) Plotly HTML exports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


def plotly_graph_objects():
    """``plotly.graph_objects``, or a clear error: Plotly comes with the dashboard's ``app`` extra, not the core."""
    try:
        import plotly.graph_objects as go
    except ImportError as e:
        raise ImportError(
            "drawing an edge graph (figure(), to_html()) needs Plotly, which comes with the `app` "
            "extra: `pip install 'sae-lab[app]'` (or `pip install plotly`); to_json() needs nothing "
            "more"
        ) from e
    return go


@dataclass
class FeatureGraph:
    """Nodes ``{"id", "sae", "feature" (int, or "error"), "position" (None when summed over positions),
    "activation", "effect"}`` and edges ``{"source", "target", "weight"}`` (node ids). ``activation`` is the
    clean activation (for an error node the norm of its error vector), summed over positions when ``position``
    is None; ``effect`` is the node's own attribution estimate on the metric."""

    tokens: list[str]
    nodes: list[dict] = field(default_factory=list)
    edges: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # method, metric values, SAE names

    def node(self, node_id: str) -> dict:
        """The node with id ``node_id`` (KeyError if absent)."""
        for n in self.nodes:
            if n["id"] == node_id:
                return n
        raise KeyError(f"no node {node_id!r} in the graph")

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(
            {"tokens": self.tokens, "nodes": self.nodes, "edges": self.edges, "info": self.info}, indent=1
        )
        if path is not None:
            from sae_lab.fileio import atomic_write_text

            atomic_write_text(Path(path), text)
        return text

    def figure(self):
        """A Plotly figure: one column per SAE, edges coloured by sign, width by |weight|."""
        go = plotly_graph_objects()
        cols = list(dict.fromkeys(n["sae"] for n in self.nodes))
        pos, rank = {}, {c: 0 for c in cols}
        for n in self.nodes:
            pos[n["id"]] = (cols.index(n["sae"]), -rank[n["sae"]])
            rank[n["sae"]] += 1
        top = max((abs(e["weight"]) for e in self.edges), default=1.0) or 1.0
        fig = go.Figure()
        for e in self.edges:
            (x0, y0), (x1, y1) = pos[e["source"]], pos[e["target"]]
            fig.add_trace(
                go.Scatter(
                    x=[x0, x1],
                    y=[y0, y1],
                    mode="lines",
                    hoverinfo="text",
                    text=f"{e['source']} → {e['target']}: {e['weight']:.3g}",
                    showlegend=False,
                    line=dict(
                        width=0.5 + 6 * abs(e["weight"]) / top, color="#1f77b4" if e["weight"] > 0 else "#d62728"
                    ),
                )
            )
        fig.add_trace(
            go.Scatter(
                x=[pos[n["id"]][0] for n in self.nodes],
                y=[pos[n["id"]][1] for n in self.nodes],
                mode="markers+text",
                text=[n["id"] for n in self.nodes],
                textposition="top center",
                hovertext=[f"{n['id']} act={n['activation']:.3g} effect={n['effect']:.3g}" for n in self.nodes],
                marker=dict(size=12, color=["#999" if n["feature"] == "error" else "#444" for n in self.nodes]),
                showlegend=False,
            )
        )
        fig.update_layout(
            title="feature edges: effect on the metric through the downstream node (blue +, red -)",
            xaxis=dict(tickvals=list(range(len(cols))), ticktext=cols),
            yaxis=dict(visible=False),
            template="plotly_white",
        )
        return fig

    def to_html(self, path: str | Path) -> Path:
        """The figure as a self-contained HTML file (plotly.js inside it: it opens offline)."""
        from sae_lab.fileio import atomic_write_text

        atomic_write_text(Path(path), self.figure().to_html(include_plotlyjs=True))
        return Path(path)
