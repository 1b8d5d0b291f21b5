"""Edges between features of two spliced SAEs at different layers, for small circuit graphs.

``edge(u -> d) = sum_s sum_t z_up[s, u] * d z_down[t, d] / d z_up[s, u]``: the linear estimate of how much the
downstream feature's total activation over the prompt falls when upstream feature u is removed (activation
times gradient, Marks et al. 2024). The error terms of every other spliced SAE are held fixed at their clean
values, so the paths run through their features only (the downstream SAE's own error does not enter its
code). One backward pass per downstream feature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from sae_lab.circuits.errors import CircuitError
from sae_lab.circuits.prompts import Prompt
from sae_lab.hooknames import parse_hook


@dataclass
class FeatureGraph:
    """Nodes ``{"id", "sae", "feature", "activation"}`` and edges ``{"source", "target", "weight"}``."""

    tokens: list[str]
    nodes: list[dict] = field(default_factory=list)
    edges: list[dict] = field(default_factory=list)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps({"tokens": self.tokens, "nodes": self.nodes, "edges": self.edges}, indent=1)
        if path is not None:
            from sae_lab.fileio import atomic_write_text

            atomic_write_text(Path(path), text)
        return text

    def figure(self):
        """A Plotly figure: one column per SAE, edges coloured by sign, width by |weight|."""
        import plotly.graph_objects as go

        cols = list(dict.fromkeys(n["sae"] for n in self.nodes))
        pos, rank = {}, {c: 0 for c in cols}
        for n in self.nodes:
            pos[n["id"]] = (cols.index(n["sae"]), -rank[n["sae"]])
            rank[n["sae"]] += 1
        top = max((abs(e["weight"]) for e in self.edges), default=1.0) or 1.0
        fig = go.Figure()
        for e in self.edges:
            (x0, y0), (x1, y1) = pos[e["source"]], pos[e["target"]]
            fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="text",
                                     text=f"{e['source']} → {e['target']}: {e['weight']:.3g}", showlegend=False,
                                     line=dict(width=0.5 + 6 * abs(e["weight"]) / top,
                                               color="#1f77b4" if e["weight"] > 0 else "#d62728")))
        fig.add_trace(go.Scatter(x=[pos[n["id"]][0] for n in self.nodes], y=[pos[n["id"]][1] for n in self.nodes],
                                 mode="markers+text", text=[n["id"] for n in self.nodes], textposition="top center",
                                 hovertext=[f"{n['id']} act={n['activation']:.3g}" for n in self.nodes],
                                 marker=dict(size=12, color="#444"), showlegend=False))
        fig.update_layout(title="feature edges (blue +, red -)", xaxis=dict(tickvals=list(range(len(cols))),
                          ticktext=cols), yaxis=dict(visible=False), template="plotly_white")
        return fig

    def to_html(self, path: str | Path) -> Path:
        from sae_lab.fileio import atomic_write_text

        atomic_write_text(Path(path), self.figure().to_html(include_plotlyjs="cdn"))
        return Path(path)


def _layer(sae) -> int:
    layer = parse_hook(sae.cfg.hook_name).layer
    return 10**6 if layer is None else layer


def edges(s, prompt: Prompt, upstream, downstream, down_features: Sequence[int] | None = None, n_down: int = 5,
          up_features: Sequence[int] | None = None, n_up: int = 5) -> FeatureGraph:
    """Edges from ``upstream``'s features to ``downstream``'s (two SAEs spliced in ``s``, upstream earlier).
    Downstream features: given, or the ``n_down`` with the largest total activation on the prompt; upstream:
    given, or per downstream feature the ``n_up`` largest |edge|."""
    up, down = s.node(upstream), s.node(downstream)
    if up is None or down is None:
        raise CircuitError("both SAEs must be spliced in: Spliced(model, [upstream, downstream, ...])")
    if not _layer(upstream) < _layer(downstream):
        raise CircuitError(f"the upstream SAE ({upstream.cfg.hook_name}) must sit at an earlier layer than the "
                           f"downstream one ({downstream.cfg.hook_name})")
    ids, _ = s.ids(prompt)
    with torch.no_grad():
        out = s.run(ids)
    held = {k: n.err.detach().clone() for k, n in s.nodes.items() if n is not up and n is not down}
    for k, e in held.items():
        s.nodes[k].fixed_error = e
    try:
        out = s.run(ids, grad=True)
        z_up, z_down = up.z, down.z
        totals = z_down.detach()[0].sum(0)
        dfeat = list(down_features) if down_features is not None else totals.topk(n_down).indices.tolist()
        graph = FeatureGraph(out.tokens)
        weights = {}
        for d in dfeat:
            (g,) = torch.autograd.grad(z_down[..., d].sum(), [z_up], retain_graph=True, allow_unused=True)
            g = torch.zeros_like(z_up) if g is None else g
            weights[d] = (g * z_up.detach())[0].sum(0)  # [d_sae_up]
    finally:
        for k in held:
            s.nodes[k].fixed_error = None
    up_tot = z_up.detach()[0].sum(0)
    return _graph(graph, upstream, downstream, weights, up_features, n_up, up_tot, totals)


def _graph(graph: FeatureGraph, upstream, downstream, weights: dict, up_features, n_up: int, up_tot, down_tot
           ) -> FeatureGraph:
    ups: list[int] = []
    for d, w in weights.items():
        chosen = list(up_features) if up_features is not None else w.abs().topk(n_up).indices.tolist()
        ups += [u for u in chosen if u not in ups]
        for u in chosen:
            graph.edges.append({"source": f"{upstream.name}/{u}", "target": f"{downstream.name}/{d}",
                                "weight": float(w[u])})
    graph.nodes = ([{"id": f"{upstream.name}/{u}", "sae": upstream.name, "feature": u, "activation": float(up_tot[u])}
                    for u in ups] +
                   [{"id": f"{downstream.name}/{d}", "sae": downstream.name, "feature": d,
                     "activation": float(down_tot[d])} for d in weights])
    return graph
