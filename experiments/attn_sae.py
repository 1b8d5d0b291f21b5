"""An attention-output SAE on a mid-layer ``hook_z`` of the embedded model (Kissane et al. 2024): trained with
the project's own pipeline, evaluated (FVU, CE loss recovered), its feature database built, and a few features
analysed by direct feature attribution (by head and by source position).

    python experiments/attn_sae.py [--out experiments/results/attn_sae] [--reduced]

For each analysed feature (the most often active non-dense ones), its top example from the database is
re-run on its full context up to the activating token; the feature's pre-activation there splits exactly into
per-head, per-source terms plus a bias (``sum_error`` checks it). Writes results.md, results.json and
attn_sae.html (one heatmap per feature) into --out.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from circuit_saes import main, run_config, train_saes  # noqa: E402
from ioi import table  # noqa: E402

from sae_lab.circuits import Spliced  # noqa: E402
from sae_lab.circuits.dfa import direct_feature_attribution  # noqa: E402
from sae_lab.data.packing import iter_contexts  # noqa: E402
from sae_lab.evaluation import FeatureDB, analyze_run, evaluate_run  # noqa: E402
from sae_lab.models import load_model  # noqa: E402

LAYER = 15
HOOK = f"blocks.{LAYER}.attn.hook_z"


def run(out: Path, reduced: bool = False, model=None, work: Path | None = None) -> dict:
    """The experiment; results into ``out``, caches and run directories into ``work`` (default out/work)."""
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    work = work or out / "work"
    model = model or load_model("embedded", device="cpu")
    tokens = 4096 if reduced else 65536
    ((sae, run_dir),) = train_saes(model, [HOOK], work, tokens=tokens).values()
    cfg = run_config([HOOK], HOOK, work, tokens, 4, 32)
    ev_cfg = cfg.eval.model_copy(update={"n_tokens": 256 if reduced else 4096, "exclude_outliers": "none"})
    an_cfg = cfg.analyze.model_copy(update={"n_tokens": 512 if reduced else 8192})
    metrics = evaluate_run(run_dir, ev_cfg, model)["saes"][sae.cfg.name]
    db_path = analyze_run(run_dir, an_cfg, model)["databases"][sae.cfg.name]
    metrics["ce_sae_spliced"] = spliced_ce(model, sae, ev_cfg)
    feats = analyse_features(model, sae, db_path, an_cfg, n=2 if reduced else 5)
    keys = [
        "fvu",
        "l0_mean",
        "dead_fraction",
        "ce_clean",
        "ce_sae",
        "ce_sae_spliced",
        "loss_recovered_zero",
        "loss_recovered_mean",
    ]
    result = {
        "hook": HOOK,
        "sae": sae.cfg.name,
        "d_sae": sae.cfg.d_sae,
        "k": sae.cfg.k,
        "train_tokens": tokens,
        "eval": {k: metrics[k] for k in keys},
        "features": feats,
        "reduced": reduced,
        "seconds": round(time.time() - t0, 1),
    }
    write(out, result)
    return result


@torch.inference_mode()
def spliced_ce(model, sae, ev_cfg) -> float:
    """CE on eval's own batches with ``Spliced(error_term=False)`` at eval's kept (non-special) positions:
    the same number as eval's ``ce_sae``."""
    from sae_lab.evaluation import inputs as I
    from sae_lab.evaluation.metrics import LossStats, next_token_ce

    acc = LossStats()
    with Spliced(model, [sae], error_term=False) as s:
        for _, tokens in I.iter_batches(ev_cfg, model.tokenizer):
            ids = torch.as_tensor(tokens, dtype=torch.long)
            keep = torch.from_numpy(~I.special_mask(tokens, model.tokenizer, ev_cfg))
            acc.update(next_token_ce(s.run(ids, where=keep).logits, ids))
    return acc.mean_ce


def analyse_features(model, sae, db_path, an_cfg, n: int) -> list[dict]:
    with FeatureDB(db_path) as db:
        rows = db.con.execute(
            "SELECT id, density FROM features WHERE density > 0 AND density < 0.1 ORDER BY density DESC LIMIT ?", (n,)
        ).fetchall()
        tops = {f: db.top_examples(f, 1)[0] for f, _ in rows}
    need = max(t["context"] for t in tops.values()) + 1
    contexts = list(itertools.islice(iter_contexts(an_cfg.data, model.tokenizer), need))
    out = []
    for f, density in rows:
        ex = tops[f]
        ids = contexts[ex["context"]][: ex["position"] + 1].tolist()
        d = direct_feature_attribution(model, sae, ids, f)
        c = d.by_head_source
        share_h = c.sum(1).abs() / c.sum(1).abs().sum()
        h = int(share_h.argmax())
        src = c.sum(0)
        s = int(src.abs().argmax())
        out.append(
            {
                "feature": f,
                "density": density,
                "token": repr(d.tokens[-1]),
                "db_value": ex["value"],
                "activation": d.activation,
                "pre_activation": d.pre_activation,
                "bias": d.bias,
                "top_head": h,
                "top_head_share": float(share_h[h]),
                "top_source": s - d.position,
                "top_source_token": repr(d.tokens[s]),
                "top_source_value": float(src[s]),
                "sum_error": abs(float(c.sum()) + d.bias - d.pre_activation),
                "dfa": {"tokens": d.tokens[-12:], "by_head_source": c[:, -12:].tolist()},
            }
        )
    return out


def write(out: Path, r: dict) -> None:
    cols = [
        "feature",
        "density",
        "token",
        "db_value",
        "activation",
        "pre_activation",
        "bias",
        "top_head",
        "top_head_share",
        "top_source",
        "top_source_token",
        "top_source_value",
        "sum_error",
    ]
    md = [
        f"# Attention-output SAE on {r['hook']}{' (reduced)' if r['reduced'] else ''}",
        "",
        f"TopK SAE {r['sae']} (d_sae {r['d_sae']}, k {r['k']}), trained on {r['train_tokens']} tokens.",
        "",
        "## Evaluation (held-out validation text)",
        "",
        "`ce_sae_spliced`: the CE with `Spliced(model, [sae], error_term=False)` on the same batches and positions "
        "(it equals `sae-lab eval`'s `ce_sae`).",
        "",
        table([r["eval"]], list(r["eval"])),
        "",
        "## Direct feature attribution at each feature's top example",
        "",
        "`top_source` is the source offset from the activating token (0 = itself); shares are of |per-head sums|.",
        "",
        table(r["features"], cols),
        "",
        f"Total time: {r['seconds']} s.",
        "",
    ]
    (out / "results.md").write_text("\n".join(md))
    (out / "results.json").write_text(json.dumps(r, indent=1))
    _figure(r).write_html(out / "attn_sae.html", include_plotlyjs="cdn")


def _figure(r: dict):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    feats = r["features"]
    fig = make_subplots(len(feats), 1, subplot_titles=[f"feature {f['feature']} at {f['token']}" for f in feats])
    for i, f in enumerate(feats, 1):
        fig.add_trace(
            go.Heatmap(
                z=f["dfa"]["by_head_source"],
                x=[f"{j}:{t}" for j, t in enumerate(f["dfa"]["tokens"])],
                y=[f"head {h}" for h in range(len(f["dfa"]["by_head_source"]))],
                colorscale="RdBu",
                zmid=0,
                showscale=i == 1,
            ),
            i,
            1,
        )
    fig.update_layout(
        template="plotly_white",
        height=300 * max(len(feats), 1),
        title=f"direct feature attribution by head and source token ({r['hook']})",
    )
    return fig


if __name__ == "__main__":
    main(run, "attn_sae")
