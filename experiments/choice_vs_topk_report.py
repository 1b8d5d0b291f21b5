"""Tables, verdicts and figures of experiments/choice_vs_topk.py's results (all computed from results.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from choice_vs_topk import BASELINE, CHOICE, MATCHED, METRICS, VARIANTS
from seed_stats import DASH, paired, pick, pm, spread, verdict

LOWER_IS_BETTER = {"fvu", "dead"}


def at_matched_l0(m: list[dict], key: str, variant: str, base: str, k: int) -> list[float]:
    """Per seed: ``key`` of ``variant`` minus TopK's at the matched L0 of k (``base`` is TopK)."""
    return [r[key] - r[f"{key}_topk"] for r in m if r["variant"] == variant and r["k"] == k]


def claim(rows: list[dict], key: str, pairs: list[tuple[str, str]], ks: list[int], digits: int, delta=paired):
    """A verdict table (one row per (variant, baseline) pair, one column per k) and the verdicts found."""
    lines = ["| variant | vs | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|---|" + "---|" * len(ks)]
    found = {}
    for v, base in pairs:
        cells = []
        for k in ks:
            d = delta(rows, key, v, base, k)
            found[(v, k)] = verdict(d, key in LOWER_IS_BETTER)
            cells.append(
                f"{found[(v, k)]}: Δ {pm(d, digits)}" if found[(v, k)] != "n/a" else "n/a (no common L0 range)"
            )
        lines.append(f"| {v} | {base} | " + " | ".join(cells) + " |")
    return "\n".join(lines), found


def sentence(found: dict) -> str:
    """One plain sentence from a claim's verdicts."""
    counts = {w: sum(1 for x in found.values() if x == w) for w in ("holds", "does not hold", "mixed", "tie", "n/a")}
    tally = ", ".join(f"{w} {n}" for w, n in counts.items() if n)
    held = [f"{v} at k={k}" for (v, k), x in found.items() if x == "holds"]
    comparable = len(found) - counts["n/a"]
    if comparable and counts["holds"] == comparable:
        head = "**Holds here** in every comparable case"
    elif not held:
        head = "**Does not hold here**: in no case does the variant win in every seed"
    else:
        head = f"**Holds only in part** ({counts['holds']} of {comparable} comparable cases): " + ", ".join(held)
    return f"{head}. Cases: {tally}."


def verdicts(result: dict) -> tuple[list[str], dict]:
    """The verdict sections (Markdown lines) and the verdicts themselves (for results.json)."""
    rows, m, ks = result["rows"], result["matched"], result["args"]["ks"]
    vs_topk = [(v, BASELINE) for v in CHOICE]
    no_aux = [(v, v.removesuffix("-auxzipf")) for v in VARIANTS if v.endswith("-auxzipf")]
    sections = [
        ("Fewer dead latents than TopK (held-out dead fraction, same k)", rows, "dead", vs_topk, paired),
        ("Better reconstruction at equal sparsity: FVU at matched held-out L0", m, "fvu", vs_topk, at_matched_l0),
        ("Better CE loss recovered at matched L0 (sae-lab, zero-ablation)", m, "ce_zero", vs_topk, at_matched_l0),
        ("Better CE loss recovered at matched L0 (sae-lab, mean-ablation)", m, "ce_mean", vs_topk, at_matched_l0),
        ("Better CE loss score at matched L0 (SAELens's definition)", m, "ce_saelens", vs_topk, at_matched_l0),
        ("aux_zipf_loss: fewer dead latents than the same SAE without it (same k)", rows, "dead", no_aux, paired),
    ]
    lines, out = [], {}
    for title, data, key, pairs, delta in sections:
        table, found = claim(data, key, pairs, ks, 4, delta)
        out[title] = {f"{v}@k={k}": x for (v, k), x in found.items()}
        lines += [f"### {title}", "", sentence(found), "", table, ""]
    return lines, out


def markdown(result: dict) -> str:
    a, rows = result["args"], result["rows"]
    n = len(a["seeds"])
    head = [
        "# Choice vs TopK at matched sparsity (Ayonrinde 2024)",
        "",
        f"Embedded model, `{a['hook']}`; {result['d_in']} → {rows[0]['d_sae']:,} latents; {a['tokens']:,} training "
        f"tokens per sweep (batches of {a['batch']:,}; one sweep per (k, seed) trains all {len(VARIANTS)} variants "
        f"on the same batches); held-out: {result['heldout_rows']:,} validation tokens. k ∈ {a['ks']}, seeds "
        f"{a['seeds']}: every number is the **mean ± half-range over {n} seeds**. Every SAE has AuxK; "
        "`-auxzipf` adds aux_zipf_loss. Time: " + f"{result['seconds'] / 60:.1f} min.",
        "",
        "A verdict *holds* at a point when the paired difference (same seed) favours the variant in every seed, "
        "*does not hold* when it favours it in none, else *mixed*; Δ = variant − baseline. Matched L0: the variant "
        "and TopK compared at the same held-out L0, each k clipped into the L0 range both span in every seed, "
        "metrics interpolated linearly in log L0 between their k points (per seed, never extrapolated).",
        "",
        "## Verdicts (computed from the tables below)",
        "",
    ]
    body, _ = verdicts(result)
    return "\n".join(head + body + per_k_table(result) + [""] + matched_table(result) + [""] + NOTES)


def per_k_table(result: dict) -> list[str]:
    cols = list(METRICS)
    lines = [
        "## Per k (held-out metrics; L0 under each SAE's inference rule)",
        "",
        "| k | variant | " + " | ".join(METRICS[c][1] for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for k in result["args"]["ks"]:
        for v in VARIANTS:
            cells = [pm(pick(result["rows"], c, variant=v, k=k), METRICS[c][2]) for c in cols]
            lines.append(f"| {k} | {v} | " + " | ".join(cells) + " |")
    return lines


def matched_table(result: dict) -> list[str]:
    m = result["matched"]
    titles = [t for c in MATCHED for t in (METRICS[c][1], "TopK", "Δ")]
    lines = [
        "## At matched held-out L0 (each k clipped into the L0 range the variant and TopK both span)",
        "",
        "| k | matched L0 | variant | " + " | ".join(titles) + " |",
        "|---|---|---|" + "---|" * len(titles),
    ]
    for k in result["args"]["ks"]:
        for v in (v for v in VARIANTS if v != BASELINE):
            l0 = pick(m, "l0", variant=v, k=k)
            if not l0:
                lines.append(f"| {k} | {DASH} | {v} | " + " | ".join([DASH] * len(titles)) + " |")
                continue
            cells = [
                x
                for c in MATCHED
                for x in (
                    pm(pick(m, c, variant=v, k=k), 4),
                    pm(pick(m, f"{c}_topk", variant=v, k=k), 4),
                    pm(at_matched_l0(m, c, v, BASELINE, k), 4),
                )
            ]
            lines.append(f"| {k} | {l0[0]:.1f} | {v} | " + " | ".join(cells) + " |")
    return lines


NOTES = [
    "Definitions: FVU, L0, dead (never active on the held-out tokens), dense (active on > 10% of them) and the CE "
    "metrics are `sae-lab eval`'s (eval.json); `CE rec.` = (CE_ablated − CE_sae) / (CE_ablated − CE_clean) with the "
    "hook zero- or mean-ablated at the kept positions; `SAELens CE score` = SAELens's `ce_loss_score` "
    "(sae_lab/evaluation/README.md). Underused (train): run.json's latents whose training density EMA is below half "
    "the Zipf-law density of their rank. Zipf slope / R²: least-squares fit of log density vs log rank over the "
    "latents alive on the held-out tokens (densities under the inference rule; the rarest measurable density is "
    "1 / held-out tokens, which flattens the tail).",
]


def figures(result: dict) -> dict:
    """{name: plotly Figure}: FVU-vs-L0 and CE-vs-L0 frontiers, and rank-density curves."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows, ks = result["rows"], result["args"]["ks"]

    def trace(v: str, key: str, **kw):
        xs = [spread(pick(rows, "l0", variant=v, k=k)) for k in ks]
        ys = [spread(pick(rows, key, variant=v, k=k)) for k in ks]
        return go.Scatter(
            x=[x[0] for x in xs],
            y=[y[0] for y in ys],
            error_x=dict(array=[x[1] for x in xs]),
            error_y=dict(array=[y[1] for y in ys]),
            mode="lines+markers",
            name=v,
            text=[f"k={k}" for k in ks],
            line=dict(dash="dot" if v.endswith("-auxzipf") else "solid"),
            **kw,
        )

    fvu = go.Figure([trace(v, "fvu") for v in VARIANTS])
    fvu.update_layout(title="Held-out FVU vs L0 (mean ± half-range over seeds)", xaxis_title="held-out L0")
    fvu.update_xaxes(type="log")
    fvu.update_yaxes(title="FVU")
    keys = ["ce_zero", "ce_mean", "ce_saelens"]
    ce = make_subplots(rows=1, cols=3, subplot_titles=[METRICS[c][1] for c in keys])
    for col, key in enumerate(keys, 1):
        for i, v in enumerate(VARIANTS):
            ce.add_trace(trace(v, key, legendgroup=v, showlegend=col == 1, marker=dict(color=_color(i))), 1, col)
    ce.update_xaxes(type="log", title="held-out L0")
    ce.update_layout(title="CE loss recovered vs held-out L0 (mean ± half-range over seeds)")
    return {"fvu_vs_l0": fvu, "ce_vs_l0": ce, "rank_density": rank_density(result)}


def rank_density(result: dict):
    """log density vs log rank of every variant at the middle k, first seed."""
    import plotly.graph_objects as go

    a = result["args"]
    k, seed = a["ks"][len(a["ks"]) // 2], a["seeds"][0]
    fig = go.Figure()
    for r in (r for r in result["rows"] if r["k"] == k and r["seed"] == seed):
        pts = r["rank_density"]
        fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name=r["variant"])
    fig.update_layout(title=f"Held-out latent density by rank (k={k}, seed {seed}; alive latents)")
    fig.update_xaxes(type="log", title="rank")
    fig.update_yaxes(type="log", title="density")
    return fig


def _color(i: int) -> str:
    import plotly.express as px

    return px.colors.qualitative.Plotly[i % len(px.colors.qualitative.Plotly)]


def _nulls(x):
    """``x`` with NaN as None (strict JSON)."""
    if isinstance(x, dict):
        return {k: _nulls(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nulls(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def write_outputs(result: dict, out: Path) -> None:
    from figures import save_figure

    out.mkdir(parents=True, exist_ok=True)
    result["verdicts"] = verdicts(result)[1]
    (out / "results.json").write_text(json.dumps(_nulls(result), indent=2, allow_nan=False))
    md = markdown(result)
    (out / "choice_vs_topk.md").write_text(md + "\n")
    for name, fig in figures(result).items():
        save_figure(fig, out, name)
    print(md)
