"""SAEDashboard / SAE-Vis export: ``sae_vis_data.json``, the file ``SaeVisData.save_json`` writes and
``SaeVisData.load_json`` reads, from one feature database (written as a stream, one feature at a time).

Each feature becomes a ``FeatureData``: the activation histogram (title ``ACTIVATIONS<br>DENSITY = x%``, as
SAE-Vis titles it), the logit table, and the sequences: a ``TOP ACTIVATIONS<br>MAX = m`` group of the top examples
and one ``INTERVAL lo - hi<br>CONTAINS p%`` group per activation interval (SAE-Vis's own group titles, which
SAEDashboard's Neuronpedia converter parses). Fields sae-lab does not compute stay empty: the feature tables
(neuron alignment, activation correlations), the vocabulary-wide logit histogram, per-token loss effects; per-token
logit effects are 0.
``render_hints`` gives the SAE-Vis layout that shows these groups (window, group sizes, logit rows); README.md
here shows how to open the file in SAEDashboard and render its HTML.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from sae_lab.evaluation.feature_db import FeatureDB
from sae_lab.export.records import iter_records

FILE = "sae_vis_data.json"
DECIMALS = 4  # SAE-Vis keeps 4 decimals of sequence activations


def _num(x: float, d: int = 5) -> float:
    x = float(x)
    return round(x, d) if math.isfinite(x) else 0.0


def feature_data(rec: dict) -> dict:
    """One feature as SAE-Vis's ``FeatureData`` (``dataclasses_json`` field names)."""
    edges = rec["hist_edges"]
    alive = rec["n_active"] > 0
    top = edges[-1]
    pos, neg = rec["logits"]["positive"], rec["logits"]["negative"]
    return {
        "feature_tables_data": {},
        "acts_histogram_data": {
            "bar_heights": list(rec["hist_counts"]) if alive else [],
            "bar_values": [_num((a + b) / 2) for a, b in zip(edges, edges[1:])] if alive else [],
            "tick_vals": [_num(top * i / 4, 3) for i in range(5)] if alive else [],
            "title": f"ACTIVATIONS<br>DENSITY = {rec['density']:.3%}",
        },
        "logits_table_data": {
            "bottom_token_ids": [t["token_id"] for t in neg],
            "bottom_logits": [_num(t["value"]) for t in neg],
            "top_token_ids": [t["token_id"] for t in pos],
            "top_logits": [_num(t["value"]) for t in pos],
        },
        "logits_histogram_data": {"bar_heights": [], "bar_values": [], "tick_vals": [], "title": None},
        "sequence_data": {"seq_group_data": _groups(rec)},
        "prompt_data": {},
        "dfa_data": None,
        "decoder_weights_data": None,
    }


def _groups(rec: dict) -> list[dict]:
    groups = [
        {
            "title": f"TOP ACTIVATIONS<br>MAX = {rec['max_act']:.3f}",
            "seq_data": [_sequence(e) for e in rec["top_examples"]],
        }
    ]
    n = max(rec["n_active"], 1)
    for iv in reversed(rec["intervals"]):  # highest interval first, as SAE-Vis orders its quantile groups
        groups.append(
            {
                "title": f"INTERVAL {iv['lo']:.3f} - {iv['hi']:.3f}<br>CONTAINS {iv['count'] / n:.3%}",
                "seq_data": [_sequence(e) for e in iv["examples"]],
            }
        )
    return groups


def _sequence(e: dict) -> dict:
    """One example as SAE-Vis's ``SequenceData``: the window's token ids and this feature's activation on each;
    ``qualifying_token_index`` is the activating token's position in the window. ``token_logits`` (each token's
    logit effect, the marker on SAE-Vis's logit histogram) is 0: sae-lab keeps only the top +/- logit effects."""
    return {
        "original_index": e["token_index"],
        "qualifying_token_index": e["highlight"],
        "token_ids": e["token_ids"],
        "feat_acts": [_num(a, DECIMALS) for a in e["acts"]],
        "token_logits": [0.0] * len(e["token_ids"]),
    }


def render_hints(meta: dict) -> dict:
    """The SAE-Vis settings that match the exported data (used in README.md's rendering snippet)."""
    cfg = meta.get("analyze_config") or {}
    return {
        "hook_point": meta.get("hook_name"),
        "buffer": [cfg.get("context_left", 12), cfg.get("context_right", 4)],
        "top_acts_group_size": cfg.get("top_k", 20),
        "n_quantiles": cfg.get("n_intervals", 8),
        "quantile_group_size": cfg.get("samples_per_interval", 4),
        "logits_table_rows": cfg.get("n_logits", 10),
        "model": (meta.get("model") or {}).get("name"),
    }


def write_saedashboard(db: FeatureDB, name: str, directory: Path, features: list[int] | None = None) -> dict:
    """Write ``directory/sae_vis_data.json`` for one SAE (see the module docstring); returns counts and hints."""
    stats: dict[str, list[float]] = {"max": [], "frac_nonzero": []}
    n = 0
    with open(directory / FILE, "w", encoding="utf-8") as f:
        f.write('{"feature_data_dict": {')
        for rec in iter_records(db, features):
            f.write(("," if n else "") + json.dumps(str(rec["id"])) + ":" + _dumps(feature_data(rec)))
            stats["max"].append(_num(rec["max_act"]))
            stats["frac_nonzero"].append(_num(rec["density"], 8))
            n += 1
        feature_stats = {**stats, "skew": [], "kurtosis": [], "quantile_data": [], "quantiles": []}
        f.write('}, "feature_stats": ' + _dumps(feature_stats) + "}")
    return {"features": n, "file": FILE, "render_hints": render_hints(db.meta)}


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
