"""Feature circuits for IOI (Marks et al. 2024): nodes are (SAE, position, feature) over prompts of one template
(positions line up), ranked by an attribution estimate, then kept while every other feature is mean-ablated.

Two rankings: ``counterfactual`` (Marks et al.'s attribution patching with the names swapped, g·(z_cf - z)) and
``mean_ablation`` (the estimate of the effect of mean-ablating the node, g·(mean z - z)), both averaged over the
ranking prompts. Faithfulness of the circuit C_n of the top n nodes on held-out prompts:
(m(C_n) - m(∅)) / (m(M) - m(∅)), m = mean logit(IO) - logit(S), ∅ = every feature and error term mean-ablated,
M = the model; with the error terms kept (as Marks et al.) or mean-ablated too (the features alone). BOS is not
spliced (``where``): the SAEs never saw it in training (it is masked out as a special token)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from ioi_data import Prompt, logit_diff, name_ids, token_ids

from sae_lab.circuits import Spliced

RANKINGS = ("counterfactual", "mean_ablation")


@dataclass
class Batch:
    """Token ids ``[n, T]``, answer ids, and ``where`` (splice every position but BOS)."""

    ids: torch.Tensor
    io: torch.Tensor
    s: torch.Tensor

    @property
    def where(self) -> torch.Tensor:
        w = torch.ones_like(self.ids, dtype=torch.bool)
        w[:, 0] = False
        return w


def make_batch(model, prompts: list[Prompt]) -> Batch:
    return Batch(token_ids(model, prompts), *name_ids(model, prompts))


def _codes_and_grads(sp: Spliced, b: Batch) -> tuple[dict, dict]:
    out = sp.run(b.ids, grad=True, where=b.where)
    keys = list(out.features)
    metric = logit_diff(out.logits, b.io, b.s).mean()
    grads = torch.autograd.grad(metric, [out.features[k] for k in keys])
    return {k: out.features[k].detach() for k in keys}, dict(zip(keys, grads))


def estimates(sp: Spliced, b: Batch, ranking: str, b_cf: Batch | None = None) -> dict[str, torch.Tensor]:
    """Per SAE: the mean over prompts of each node's estimated effect, ``[T, d_sae]``."""
    z, g = _codes_and_grads(sp, b)
    if ranking == "counterfactual":
        target = sp.run(b_cf.ids, where=b_cf.where).features
    elif ranking == "mean_ablation":
        target = {k: v.mean(0, keepdim=True) for k, v in z.items()}
    else:
        raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
    return {k: (g[k] * (target[k] - z[k])).mean(0) for k in z}


def top_nodes(est: dict[str, torch.Tensor], n: int) -> list[tuple[str, int, int]]:
    """The ``n`` nodes (SAE, position, feature) with the largest |estimate|, over all SAEs."""
    keys = list(est)
    flat = torch.cat([est[k].reshape(-1).abs() for k in keys])
    sizes = [est[k].numel() for k in keys]
    out = []
    for i in flat.topk(min(n, flat.numel())).indices.tolist():
        j = 0
        while i >= sizes[j]:
            i, j = i - sizes[j], j + 1
        out.append((keys[j], *divmod(i, est[keys[j]].shape[1])))
    return out


@torch.inference_mode()
def curves(sp: Spliced, b: Batch, ranked: list[tuple[str, int, int]], keep_n: list[int]) -> list[dict]:
    """Faithfulness of the top-n circuits (n = -1: every feature), error terms kept and ablated."""
    base = sp.run(b.ids, where=b.where)
    m_model = float(logit_diff(base.logits, b.io, b.s).mean())
    mean_z = {k: v.mean(0) for k, v in base.features.items()}
    mean_e = {k: v.mean(0) for k, v in base.errors.items()}

    seen: dict[tuple[int, bool], float] = {}

    def metric(n: int, ablate_errors: bool) -> float:
        if (n, ablate_errors) not in seen:
            seen[(n, ablate_errors)] = run_circuit(n, ablate_errors)
        return seen[(n, ablate_errors)]

    def run_circuit(n: int, ablate_errors: bool) -> float:
        keep = {k: torch.full_like(v, n < 0, dtype=torch.bool) for k, v in mean_z.items()}
        for key, pos, feat in ranked[: max(n, 0)]:
            keep[key][pos, feat] = True
        hooks = [(node.hp_acts.name, _keep_or_mean(keep[k], mean_z[k])) for k, node in sp.nodes.items()]
        if ablate_errors:
            hooks += [(node.hp_error.name, _mean(mean_e[k])) for k, node in sp.nodes.items()]
        return float(logit_diff(sp.run(b.ids, fwd_hooks=hooks, where=b.where).logits, b.io, b.s).mean())

    m_empty = metric(0, ablate_errors=True)
    gap = m_model - m_empty
    rows = []
    for ablate in (False, True):
        for n in keep_n:
            m = metric(n, ablate)
            rows.append(
                {
                    "errors": "ablated" if ablate else "kept",
                    "n_kept": n,
                    "metric": m,
                    "faithfulness": (m - m_empty) / gap if abs(gap) > 1e-9 else math.nan,
                    "model": m_model,
                    "empty": m_empty,
                }
            )
    return rows


def _keep_or_mean(keep: torch.Tensor, mean: torch.Tensor):
    return lambda z, hook: torch.where(keep, z, mean)


def _mean(mean: torch.Tensor):
    return lambda e, hook: mean.expand_as(e)


def faithfulness(
    model, saes: list, rank_prompts: list[Prompt], eval_prompts: list[Prompt], keep_n: list[int]
) -> list[dict]:
    """Both rankings' faithfulness curves for the SAEs ``saes`` (one per layer) on one template's prompts."""
    rank_b, eval_b = make_batch(model, rank_prompts), make_batch(model, eval_prompts)
    cf_b = make_batch(model, [p.swapped() for p in rank_prompts])
    rows = []
    with Spliced(model, saes) as sp:
        for ranking in RANKINGS:
            ranked = top_nodes(estimates(sp, rank_b, ranking, cf_b), max(keep_n))
            rows += [{"ranking": ranking, **r} for r in curves(sp, eval_b, ranked, keep_n)]
    return rows
