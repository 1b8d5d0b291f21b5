"""Indirect object identification (IOI) on the embedded model: behaviour, features by attribution, validation
by patching, faithfulness (Marks et al. 2024; Makelov et al. 2024 for IOI as a test bed).

    python experiments/ioi.py [--out experiments/results/ioi] [--reduced]

1. Behaviour: templates "... A and B ... B gave a X to" (answer A), with single-token names; the
   counterfactual swaps the names (answer B). Accuracy = share of prompts with logit(IO) > logit(S); the
   metric is logit(IO) - logit(S). Templates where the model does the task (accuracy >= 0.75) are kept.
2. SAEs: TopK SAEs at three residual-stream layers, trained here with the project's pipeline.
3. Attribution patching (error nodes included) per position, averaged over the pairs of a template.
4. Validation: the top nodes' estimates against exact patching (clean -> counterfactual), Pearson r.
5. Faithfulness: keep the top-n feature nodes (and all error terms), mean-ablate every other feature
   (mean over the template's prompts, per position); faithfulness = (m(C_n) - m(empty)) / (m(model) - m(empty)),
   where "empty" also mean-ablates the error terms. A curve over n.
6. Edges (Marks et al.; ``sae_lab.circuits.edges``) between adjacent SAEs (L6 -> L12, L12 -> L18), per pair,
   nodes summed over positions, error nodes included: each graph's top edges against exact patching of the same
   edge (``validate_edges``: u patched to corrupt, d's new value then set alone in the clean run), Pearson r
   over the edges of all validated pairs, for attribution patching and integrated gradients.
Writes results.md (tables), results.json and ioi.html (Plotly) into --out.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from circuit_saes import main, train_saes  # noqa: E402
from ioi_data import NAMES, OBJECTS, PLACES  # noqa: E402
from ioi_data import logit_diff as batch_metric  # noqa: E402

from sae_lab.circuits import Spliced, edges, logit_diff, validate_edges  # noqa: E402
from sae_lab.circuits.attribution import patch_effect  # noqa: E402
from sae_lab.models import load_model  # noqa: E402

TEMPLATES = [
    "When {A} and {B} went to the {P}, {B} gave a {O} to",
    "After {A} and {B} went to the {P}, {B} gave a {O} to",
    "Then, {A} and {B} had a long talk at the {P}. {B} gave a {O} to",
    "While {A} and {B} were working at the {P}, {B} gave a {O} to",
    "When {A} and {B} got a {O} at the {P}, {B} decided to give it to",
]
LAYERS = [6, 12, 18]
HOPS = [(6, 12), (12, 18)]
KEEP_N = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500]


def pairs(template: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` (clean, counterfactual, IO, S) with distinct names; the counterfactual swaps A and B."""
    g = torch.Generator().manual_seed(seed)
    combos = list(itertools.permutations(NAMES, 2))
    out = []
    for i in torch.randperm(len(combos), generator=g)[:n].tolist():
        a, b = combos[i]
        p, o = PLACES[i % len(PLACES)], OBJECTS[(i // 3) % len(OBJECTS)]
        out.append(
            {
                "clean": template.format(A=a, B=b, P=p, O=o),
                "corrupt": template.format(A=b, B=a, P=p, O=o),
                "io": " " + a,
                "s": " " + b,
            }
        )
    return out


def name_ids(model, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = lambda t: model.tokenizer.encode(t, add_special_tokens=False)[0]  # noqa: E731
    return torch.tensor([enc(r["io"]) for r in rows]), torch.tensor([enc(r["s"]) for r in rows])


@torch.inference_mode()
def behaviour(model, rows: list[dict]) -> dict:
    ids = torch.cat([model.bridge.to_tokens(r["clean"]) for r in rows])
    io, s = name_ids(model, rows)
    ld = batch_metric(model.bridge(ids), io, s)
    return {
        "n": len(rows),
        "tokens": ids.shape[1],
        "accuracy": float((ld > 0).float().mean()),
        "mean_logit_diff": float(ld.mean()),
    }


def attribution(sp: Spliced, rows: list[dict]) -> tuple[dict, dict]:
    """Mean per-position attribution over the pairs: {sae: [T, d_sae]}, {sae: [T]}."""
    feats, errs = {}, {}
    for r in rows:
        a = sp.attribute(r["clean"], r["corrupt"], logit_diff(r["io"], r["s"]))
        for k in a.features:
            feats[k] = feats.get(k, 0) + a.features[k] / len(rows)
            errs[k] = errs.get(k, 0) + a.errors[k] / len(rows)
    return feats, errs


def top_nodes(feats: dict, n: int) -> list[tuple[str, int, int, float]]:
    """The ``n`` feature nodes (sae, position, feature, estimate) with the largest |mean estimate|."""
    rows = []
    for k, eff in feats.items():
        flat = eff.reshape(-1)
        vals, idx = flat.abs().topk(min(n, flat.numel()))
        rows += [(k, *divmod(i, eff.shape[1]), float(flat[i])) for i in idx.tolist()]
    return sorted(rows, key=lambda r: -abs(r[3]))[:n]


def validate(sp: Spliced, rows: list[dict], nodes: list, n_pairs: int) -> list[float]:
    """Exact effect of patching each node, averaged over the first ``n_pairs`` pairs."""
    exact = [0.0] * len(nodes)
    spec = [{"sae": k, "position": p, "feature": f} for k, p, f, _ in nodes]
    for r in rows[:n_pairs]:
        eff = patch_effect(sp, r["clean"], r["corrupt"], logit_diff(r["io"], r["s"]), spec)
        exact = [e + x / n_pairs for e, x in zip(exact, eff)]
    return exact


@torch.inference_mode()
def faithfulness(sp: Spliced, rows: list[dict], feats: dict, keep_n: list[int]) -> list[dict]:
    """Mean metric with the top-n feature nodes + error terms kept, everything else mean-ablated."""
    model = sp.model
    ids = torch.cat([model.bridge.to_tokens(r["clean"]) for r in rows])
    io, s = name_ids(model, rows)
    base = sp.run(ids)
    m_model = float(batch_metric(base.logits, io, s).mean())
    mean_z = {k: sp.nodes[k].z.mean(0) for k in sp.nodes}
    mean_e = {k: sp.nodes[k].err.mean(0) for k in sp.nodes}
    ranked = top_nodes(feats, max(keep_n))

    def metric_with(n: int | None) -> float:
        keep = {k: torch.zeros_like(mean_z[k], dtype=torch.bool) for k in sp.nodes}
        for k, p, f, _ in ranked[: n or 0]:
            keep[k][p, f] = True
        hooks = []
        for k, node in sp.nodes.items():
            hooks.append((node.hp_acts.name, lambda z, hook, k=k: torch.where(keep[k], z, mean_z[k])))
            if n is None:
                hooks.append((node.hp_error.name, lambda e, hook, k=k: mean_e[k].expand_as(e)))
        return float(batch_metric(sp.run(ids, fwd_hooks=hooks).logits, io, s).mean())

    m_empty = metric_with(None)
    out = []
    for n in keep_n:
        m = metric_with(n)
        gap = m_model - m_empty
        out.append(
            {
                "n_kept": n,
                "metric": m,
                "faithfulness": (m - m_empty) / gap if abs(gap) > 1e-9 else math.nan,
                "model": m_model,
                "empty": m_empty,
            }
        )
    return out


def edge_validation(
    sp: Spliced, rows: list[dict], saes: dict, n_pairs: int, n_edges: int, methods=("atp", "ig")
) -> list[dict]:
    """Per pair, hop and method: the graph's (5 x 5 nodes) top ``n_edges`` edges, estimate and exact effect."""
    out = []
    for pi, r in enumerate(rows[:n_pairs]):
        metric = logit_diff(r["io"], r["s"])
        for a, b in HOPS:
            for method in methods:
                g = edges(sp, r["clean"], r["corrupt"], metric, saes[a], saes[b], n_down=5, n_up=5, method=method)
                v = validate_edges(sp, r["clean"], r["corrupt"], metric, g, n=n_edges)
                out += [
                    {
                        "pair": pi,
                        "hop": f"L{a}->L{b}",
                        "method": method,
                        "source": e["source"],
                        "target": e["target"],
                        "estimate": est,
                        "exact": ex,
                    }
                    for e, est, ex in zip(v["edges"], v["estimate"], v["exact"])
                ]
    return out


def edge_summary(ti: int, rows: list[dict]) -> list[dict]:
    """Pearson r of edge estimates against exact patching, per method, pooled and per hop."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        for hop in ["all"] + [f"L{a}->L{b}" for a, b in HOPS]:
            sel = [r for r in rows if r["method"] == method and hop in ("all", r["hop"])]
            out.append(
                {
                    "template": ti,
                    "method": method,
                    "hop": hop,
                    "edges": len(sel),
                    "pearson": pearson([r["estimate"] for r in sel], [r["exact"] for r in sel]),
                    "sum_estimate": sum(r["estimate"] for r in sel),
                    "sum_exact": sum(r["exact"] for r in sel),
                }
            )
    return out


def pearson(a: list[float], b: list[float]) -> float:
    t = torch.tensor([a, b], dtype=torch.float64)
    return float(torch.corrcoef(t)[0, 1]) if len(a) > 1 else math.nan


def table(rows: list[dict], cols: list[str]) -> str:
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows])


def run(out: Path, reduced: bool = False, model=None, work: Path | None = None) -> dict:
    """The experiment; results into ``out``, caches and run directories into ``work`` (default out/work)."""
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    work = work or out / "work"
    model = model or load_model("embedded", device="cpu")
    n_pairs, n_val, n_top = (4, 2, 8) if reduced else (16, 6, 20)
    n_edge_pairs, n_edges = (1, 6) if reduced else (6, 10)
    behav = []
    for i, t in enumerate(TEMPLATES):
        behav.append({"template": i, "text": t, **behaviour(model, pairs(t, 32 if not reduced else 8, seed=i))})
    chosen = [b["template"] for b in behav if b["accuracy"] >= 0.75]
    if not chosen:  # report honestly, analyse the best one anyway
        chosen = [max(behav, key=lambda b: b["mean_logit_diff"])["template"]]
    chosen = sorted(chosen, key=lambda i: -behav[i]["mean_logit_diff"])[: 1 if reduced else 2]
    for b in behav:
        b["chosen"] = b["template"] in chosen
    hooks = [f"blocks.{L}.hook_resid_post" for L in LAYERS]
    saes = train_saes(model, hooks, work, tokens=4096 if reduced else 49152)
    sae_list = [saes[h][0] for h in hooks]
    nodes_rows, faith_rows, val, edge_rows, edge_val = [], [], [], [], []
    with Spliced(model, sae_list) as sp:
        for ti in chosen:
            rows = pairs(TEMPLATES[ti], n_pairs, seed=100 + ti)
            feats, errs = attribution(sp, rows)
            nodes = top_nodes(feats, n_top)
            exact = validate(sp, rows, nodes, n_val)
            toks = sp.run(rows[0]["clean"]).tokens
            for (k, p, f, est), ex in zip(nodes, exact):
                nodes_rows.append(
                    {
                        "template": ti,
                        "sae": k,
                        "position": p,
                        "token": repr(toks[p]),
                        "feature": f,
                        "estimate": est,
                        "exact": ex,
                    }
                )
            err_tot = {k: float(v.sum()) for k, v in errs.items()}
            val.append(
                {
                    "template": ti,
                    "nodes": len(nodes),
                    "pearson": pearson([r[3] for r in nodes], exact),
                    "feature_total": float(sum(v.sum() for v in feats.values())),
                    "error_total": float(sum(err_tot.values())),
                }
            )
            for r in faithfulness(sp, rows, feats, KEEP_N if not reduced else [0, 2, 10]):
                faith_rows.append({"template": ti, **r})
            er = edge_validation(sp, rows, dict(zip(LAYERS, sae_list)), n_edge_pairs, n_edges)
            edge_rows += [{"template": ti, **r} for r in er]
            edge_val += edge_summary(ti, er)
    result = {
        "behaviour": behav,
        "validation": val,
        "nodes": nodes_rows,
        "faithfulness": faith_rows,
        "edge_validation": edge_val,
        "edges": edge_rows,
        "saes": {h: str(saes[h][1]) for h in hooks},
        "reduced": reduced,
        "seconds": round(time.time() - t0, 1),
    }
    write(out, result)
    return result


def write(out: Path, r: dict) -> None:
    md = [
        f"# IOI on the embedded model{' (reduced)' if r['reduced'] else ''}",
        "",
        f"## Does the model do the task? ({r['behaviour'][0]['n']} prompts per template)",
        "",
        table(r["behaviour"], ["template", "text", "tokens", "accuracy", "mean_logit_diff", "chosen"]),
        "",
        "## Attribution validated by exact patching",
        "",
        table(r["validation"], ["template", "nodes", "pearson", "feature_total", "error_total"]),
        "",
        "## Top feature nodes",
        "",
        table(r["nodes"], ["template", "sae", "position", "token", "feature", "estimate", "exact"]),
        "",
        "## Faithfulness over the number of features kept",
        "",
        table(r["faithfulness"], ["template", "n_kept", "metric", "faithfulness", "model", "empty"]),
        "",
        "## Edges validated by exact patching",
        "",
        "Per clean/counterfactual pair, edges between adjacent SAEs (nodes summed over positions, error nodes "
        "included; 5 downstream x 5 upstream nodes per graph), each graph's top edges by |estimate| against the "
        "exact effect of the same edge (u patched to corrupt, then d's new value set alone in the clean run). "
        "Pearson r over all validated edges.",
        "",
        table(r["edge_validation"], ["template", "method", "hop", "edges", "pearson", "sum_estimate", "sum_exact"]),
        "",
        "## Top edges (first pair, attribution patching)",
        "",
        table(
            [e for e in r["edges"] if e["pair"] == 0 and e["method"] == "atp"],
            ["template", "hop", "source", "target", "estimate", "exact"],
        ),
        "",
        f"Total time: {r['seconds']} s.",
        "",
    ]
    (out / "results.md").write_text("\n".join(md))
    (out / "results.json").write_text(json.dumps(r, indent=1))
    _figure(r).write_html(out / "ioi.html", include_plotlyjs="cdn")


def _figure(r: dict):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        1, 3, subplot_titles=("faithfulness vs features kept", "nodes: estimate vs exact", "edges: estimate vs exact")
    )
    for ti in sorted({f["template"] for f in r["faithfulness"]}):
        rows = [f for f in r["faithfulness"] if f["template"] == ti]
        fig.add_trace(
            go.Scatter(
                x=[max(f["n_kept"], 0.5) for f in rows],
                y=[f["faithfulness"] for f in rows],
                mode="lines+markers",
                name=f"template {ti}",
            ),
            1,
            1,
        )
        nodes = [n for n in r["nodes"] if n["template"] == ti]
        fig.add_trace(
            go.Scatter(
                x=[n["estimate"] for n in nodes],
                y=[n["exact"] for n in nodes],
                mode="markers",
                name=f"nodes, template {ti}",
                text=[f"{n['sae']} pos {n['position']} f{n['feature']}" for n in nodes],
            ),
            1,
            2,
        )
        eds = [e for e in r["edges"] if e["template"] == ti and e["method"] == "atp"]
        fig.add_trace(
            go.Scatter(
                x=[e["estimate"] for e in eds],
                y=[e["exact"] for e in eds],
                mode="markers",
                name=f"edges, template {ti}",
                text=[f"{e['source']} -> {e['target']}" for e in eds],
            ),
            1,
            3,
        )
    fig.update_xaxes(type="log", title="features kept (0 shown at 0.5)", row=1, col=1)
    fig.update_xaxes(title="attribution estimate", row=1, col=2)
    fig.update_yaxes(title="exact effect", row=1, col=2)
    fig.update_xaxes(title="edge estimate (atp)", row=1, col=3)
    fig.update_yaxes(title="exact effect through d", row=1, col=3)
    fig.update_layout(template="plotly_white", title="IOI on SmolLM2-135M")
    return fig


if __name__ == "__main__":
    main(run, "ioi")
