"""Tables, verdicts and figures of experiments/gsae_vs_topk.py's results (all computed from results.json)."""

from __future__ import annotations

import json
from pathlib import Path

from gsae_vs_topk import BASELINE, CLAIMS, METRICS, variant
from seed_stats import paired, pick, pm, spread, verdict


def variants(result: dict) -> list[str]:
    return [BASELINE] + [variant(b) for b in result["args"]["betas"]]


def per_k_table(result: dict) -> list[str]:
    cols = list(METRICS)
    lines = [
        "| k | variant | " + " | ".join(METRICS[c][1] for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for k in result["args"]["ks"]:
        for v in variants(result):
            cells = [pm(pick(result["rows"], c, variant=v, k=k), METRICS[c][2]) for c in cols]
            lines.append(f"| {k} | {v} | " + " | ".join(cells) + " |")
    return lines


def verdicts(result: dict) -> tuple[list[str], dict]:
    """One verdict table per metric (g-SAE minus TopK, paired by seed) and the verdicts themselves."""
    rows, ks = result["rows"], result["args"]["ks"]
    lines, out = [], {}
    for key in CLAIMS:
        _, title, digits, lower = METRICS[key]
        found, table = {}, ["| variant | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for v in variants(result)[1:]:
            cells = []
            for k in ks:
                d = paired(rows, key, v, BASELINE, k)
                found[f"{v}@k={k}"] = verdict(d, lower)
                cells.append(f"{found[f'{v}@k={k}']}: Δ {pm(d, digits)}")
            table.append(f"| {v} | " + " | ".join(cells) + " |")
        better = "lower" if lower else "higher"
        held = sorted(c for c, x in found.items() if x == "holds")
        head = (
            "**Holds here** in every case"
            if len(held) == len(found)
            else "**Does not hold here**: in no case does the g-SAE win in every seed"
            if not held
            else f"**Holds only in part** ({len(held)} of {len(found)}): " + ", ".join(held)
        )
        out[title] = found
        lines += [f"### g-SAE {better} {title} than TopK (same k, same tokens)", "", head + ".", "", *table, ""]
    return lines, out


def cost_lines(result: dict) -> list[str]:
    c = result["cost"]
    if not c:
        return ["Not measured in this run (`--no-cost`)."]
    return [
        "| sweep | SAEs | tokens/s (training, whole call) |",
        "|---|---|---|",
        f"| gradient stream (TopK + g-SAEs) | {len(c['gradient_saes'])} | {c['gradient_stream_tokens_per_s']:,.0f} |",
        f"| activation-only stream (TopK alone) | {len(c['plain_saes'])} | {c['plain_stream_tokens_per_s']:,.0f} |",
        "",
        f"Training a g-SAE costs **{c['ratio']:.1f}×** the time per token of training TopK from the live stream on "
        "the same tokens (first seed; both include the model, the stream's buffer fill and the SAE steps; the SAE "
        "steps are a few percent of either).",
    ]


NOTES = [
    "Definitions: `sae-lab eval`'s (`sae_lab/evaluation/README.md`). CE rec. = (CE_ablated − CE_sae) / "
    "(CE_ablated − CE_clean) with the hook zero- or mean-ablated; SAELens CE score = SAELens's `ce_loss_score`; "
    "KL = mean over predicted tokens of KL(clean ‖ with the SAE spliced in). Held-out L0 is k for both: a g-SAE "
    "selects with plain TopK at inference (there is no gradient there).",
    "Not measured: the paper's steering claim (that g-SAE latents steer the model more effectively). It needs a "
    "steering evaluation with a judge of the generated text, which this 135M setting does not support credibly.",
]


def markdown(result: dict) -> str:
    a = result["args"]
    head = (
        f"Embedded model, `{a['hook']}`; 576 → {576 * a['expansion']:,} latents; {a['tokens']:,} training tokens "
        f"per sweep (batches of {a['batch']:,}; one sweep per seed trains every SAE on the same rows of one gradient "
        f"stream, shuffle window {a['buffer']:,} tokens); held-out: {a['eval_tokens']:,} validation tokens. "
        f"k ∈ {a['ks']}, β ∈ {a['betas']}, seeds {a['seeds']}: every number is the **mean ± half-range over "
        f"{len(a['seeds'])} seeds**. Time: {result['seconds'] / 60:.1f} min."
    )
    lines = ["# g-SAE vs TopK at equal L0 (Olmo et al. 2024)", "", head, "", "## Verdicts", ""]
    lines += verdicts(result)[0]
    lines += ["## Per k (held-out)", "", *per_k_table(result), "", "## Training cost", "", *cost_lines(result), ""]
    lines += ["## Notes", "", *(f"- {n}" for n in NOTES)]
    return "\n".join(lines)


def figure(result: dict, key: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    for v in variants(result):
        stats = [spread(pick(result["rows"], key, variant=v, k=k)) for k in result["args"]["ks"]]
        fig.add_trace(
            go.Scatter(
                x=result["args"]["ks"],
                y=[m for m, _ in stats],
                error_y={"array": [h for _, h in stats]},
                mode="lines+markers",
                name=v,
            )
        )
    title = METRICS[key][1]
    fig.update_layout(title=f"{title} against k (mean ± half-range over seeds)", xaxis_title="k", yaxis_title=title)
    return fig


def write_outputs(result: dict, out: Path) -> None:
    from figures import save_figure

    out.mkdir(parents=True, exist_ok=True)
    result["verdicts"] = verdicts(result)[1]
    (out / "results.json").write_text(json.dumps(result, indent=2, allow_nan=False))
    md = markdown(result)
    (out / "gsae_vs_topk.md").write_text(md + "\n")
    for key in ("ce_zero", "kl", "fvu"):
        save_figure(figure(result, key), out, f"{key}_vs_k")
    print(md)
