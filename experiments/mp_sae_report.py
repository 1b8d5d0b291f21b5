"""Tables and figures of experiments/mp_sae.py's results."""

from __future__ import annotations

import math


def _pm(mean: float, std: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def markdown(result: dict) -> str:
    from mp_sae import summarise

    a, syn, emb = result["args"], result["synthetic"], result["embedded"]
    keys = ["parents", "child_offsets", "whole_children", "fvu", "l0"]
    summary = summarise(syn["rows"], keys)
    lines = [
        f"Synthetic tree: d {a['d']}, {a['parents']} parents x {a['children']} mutually exclusive children "
        f"(child offsets ⊥ their parent), p_parent {a['p_parent']}, p_child {a['p_child']}, "
        f"{a['samples']:,} samples, {a['tokens']:,} training tokens, k {a['k']}, latents = true features "
        f"({a['parents'] * (1 + a['children'])}); seeds {a['seeds']} (mean ± std over seeds).",
        "",
        "| architecture | parents: best cos | child offsets: best cos | whole children: best cos | held-out FVU | L0 |",
        "|---|---|---|---|---|---|",
    ]
    for arch, s in summary.items():
        lines.append(f"| {arch} | " + " | ".join(_pm(*s[k]) for k in keys) + " |")
    curves = summarise(syn["adaptive"], ["l0", "fvu"], by="tau")
    lines += [
        "",
        "MP adaptive inference on the synthetic held-out set (relative residual stop τ, cap 4k):",
        "",
        "| τ | L0 | FVU |",
        "|---|---|---|",
    ]
    lines += [f"| {tau} | {_pm(*c['l0'], 2)} | {_pm(*c['fvu'])} |" for tau, c in curves.items()]
    lines += [
        "",
        f"Embedded model ({emb['source']}, {emb['hook']}, {emb['n_tokens']:,} validation tokens, k "
        f"{emb['k']}, cap {4 * emb['k']}):",
        "",
        "| τ | mean L0 | std L0 | FVU | Spearman(L0, next-token loss) | Spearman(L0, rarity) | "
        "mean L0 by loss quintile (easiest → hardest) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in emb["rows"]:
        q = ", ".join(f"{v:.1f}" for v in r.get("l0_by_loss_quintile", []))
        lines.append(
            f"| {r['tau']} | {r['l0']:.2f} | {r['l0_std']:.2f} | {r['fvu']:.3f} | "
            f"{r.get('spearman_loss', math.nan):.3f} | {r.get('spearman_rarity', math.nan):.3f} | {q} |"
        )
    lines.append(f"\nTime: {result['seconds']:.0f} s.")
    return "\n".join(lines)


def figures(result: dict) -> dict:
    """{name: plotly Figure}: recovery by architecture, and MP's L0-FVU curves (synthetic and embedded)."""
    import plotly.graph_objects as go
    from mp_sae import summarise

    summary = summarise(result["synthetic"]["rows"], ["parents", "child_offsets", "whole_children"])
    rec = go.Figure()
    for key in ("parents", "child_offsets", "whole_children"):
        rec.add_bar(
            name=key.replace("_", " "),
            x=list(summary),
            y=[s[key][0] for s in summary.values()],
            error_y=dict(array=[0 if math.isnan(s[key][1]) else s[key][1] for s in summary.values()]),
        )
    rec.update_layout(
        title="Recovery of the true directions (mean best |cos|, ± std over seeds)",
        yaxis_title="best |cosine|",
        barmode="group",
    )
    curve = go.Figure()
    syn = summarise(result["synthetic"]["adaptive"], ["l0", "fvu"], by="tau")
    curve.add_scatter(
        x=[c["l0"][0] for c in syn.values()],
        y=[c["fvu"][0] for c in syn.values()],
        mode="lines+markers",
        name="synthetic",
        text=[f"τ={t}" for t in syn],
    )
    emb = result["embedded"]["rows"]
    curve.add_scatter(
        x=[r["l0"] for r in emb],
        y=[r["fvu"] for r in emb],
        mode="lines+markers",
        name="embedded model",
        text=[f"τ={r['tau']}" for r in emb],
    )
    curve.update_layout(
        title="MP adaptive inference: FVU against mean L0 as the residual threshold τ varies",
        xaxis_title="mean L0",
        yaxis_title="FVU",
        yaxis_type="log",
    )
    return {"recovery": rec, "adaptive_l0_fvu": curve}
