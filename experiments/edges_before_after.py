"""Edges before and after issue 18 on the IOI pairs: the old weight (activation x gradient of the downstream
feature's total activation, no metric, no corrupt run) and Marks et al.'s edge (``circuits.edges``), each
against exact patching of the same edge (``validate_edges``). Feature -> feature edges only (the old edges had
no error nodes). Needs the SAEs of ``experiments/ioi.py`` (its --work directory).

    python experiments/edges_before_after.py --work runs/experiments/ioi [--pairs 6]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from circuit_saes import sae_name  # noqa: E402
from ioi import HOPS, LAYERS, TEMPLATES, pairs, pearson  # noqa: E402

from sae_lab import load_sae  # noqa: E402
from sae_lab.activations.hooks import hook_slug  # noqa: E402
from sae_lab.circuits import Spliced, edges, logit_diff, validate_edges  # noqa: E402
from sae_lab.models import load_model  # noqa: E402
from sae_lab.rundir import RunDir  # noqa: E402


def old_weight(s: Spliced, prompt: str, up: str, down: str, u: int, d: int) -> float:
    """The pre-issue-18 edge: sum_s sum_t z_up[s, u] * d z_down[t, d] / d z_up[s, u] (clean run only)."""
    s.run(prompt, grad=True)
    z_up, z_down = s.nodes[up].z, s.nodes[down].z
    (g,) = torch.autograd.grad(z_down[..., d].sum(), [z_up])
    return float((g * z_up.detach())[0, :, u].sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("runs/experiments/ioi"))
    ap.add_argument("--templates", type=int, nargs="+", default=[0, 4], help="the IOI run's chosen templates")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("experiments/results/ioi/edges_before_after.json"))
    a = ap.parse_args()
    model = load_model("embedded", device="cpu")
    hooks = [f"blocks.{L}.hook_resid_post" for L in LAYERS]
    saes = {
        L: load_sae(RunDir(a.work / "runs" / hook_slug(h)).sae_dir(sae_name(h))).eval() for L, h in zip(LAYERS, hooks)
    }
    rows = []
    with Spliced(model, list(saes.values())) as s:
        for ti in a.templates:
            for r in pairs(TEMPLATES[ti], a.pairs, seed=100 + ti)[: a.pairs]:
                metric = logit_diff(r["io"], r["s"])
                for lu, ld in HOPS:
                    up, down = saes[lu], saes[ld]
                    g = edges(s, r["clean"], r["corrupt"], metric, up, down, n_down=5, n_up=5)
                    g.edges = [e for e in g.edges if "/error" not in e["source"] + e["target"]]
                    v = validate_edges(s, r["clean"], r["corrupt"], metric, g, n=10)
                    for e, est, ex in zip(v["edges"], v["estimate"], v["exact"]):
                        u, d = g.node(e["source"])["feature"], g.node(e["target"])["feature"]
                        rows.append(
                            {
                                "template": ti,
                                "hop": f"L{lu}->L{ld}",
                                "new": est,
                                "exact": ex,
                                "old": old_weight(s, r["clean"], up.name, down.name, u, d),
                            }
                        )
    res = {
        "edges": len(rows),
        "pearson_old": pearson([r["old"] for r in rows], [r["exact"] for r in rows]),
        "pearson_new": pearson([r["new"] for r in rows], [r["exact"] for r in rows]),
        "sign_agreement_old": sum((r["old"] > 0) == (r["exact"] > 0) for r in rows) / len(rows),
        "sign_agreement_new": sum((r["new"] > 0) == (r["exact"] > 0) for r in rows) / len(rows),
        "rows": rows,
    }
    a.out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
