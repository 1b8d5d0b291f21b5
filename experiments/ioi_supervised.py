"""Makelov et al. (2024), "Towards principled evaluations of sparse autoencoders for interpretability and control":
supervised feature dictionaries built from attribute means, and the paper's three counts for them and for SAEs.

The node is the residual stream after one block at every position after BOS of one template's prompts
(``[T-1, d]`` per prompt; positions line up). The supervised dictionary of attributes IO, S and order is
``â(p) = ā + Σ_attr u[attr][value(p)]`` with ``u[attr][v] = E[a | attr = v] - ā`` (means over fitting prompts).
An SAE's reconstruction is ``decode(encode(a))`` position by position.

- Approximation: FVU of â on held-out prompts; sufficiency (the node set to â) and necessity (the node set to
  a - â + ā, what â explains removed), both as a share of the logit difference between the clean run and the node
  mean-ablated.
- Control: edit IO (or S) from v to v'. The supervised edit is a - u[v] + u[v']; the SAE edit sets the budget of
  the n features that change most between p and its counterfactual p' to their values on p' (all: every
  feature) and keeps p's error term. Success = mean(LD'(edit) - LD'(p)) / mean(LD'(p') - LD'(p)) with LD' the
  logit difference for p''s answers (1: the edit moves the answer as far as rewriting the prompt does).
- Interpretability: at the last position (where the answer is read out), each attribute value (one-vs-rest) against
  the best single SAE feature's firing (z > 0), F1; the supervised dictionary decodes the value by its nearest
  attribute mean (macro F1). Values with fewer than 4 held-out prompts are skipped."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from ioi_data import ATTRIBUTES, Prompt, logit_diff, name_ids, other_value, token_ids

CONTROL_ATTRIBUTES = ("io", "s")  # an order edit does not change the answer (IO either way): no control target
MIN_POSITIVES = 4


@dataclass
class AttributeDictionary:
    """Mean ``[T-1, d]`` and per attribute and value the centred conditional mean."""

    mean: torch.Tensor
    parts: dict[str, dict[str, torch.Tensor]]

    @classmethod
    def fit(cls, acts: torch.Tensor, prompts: list[Prompt]) -> "AttributeDictionary":
        mean = acts.mean(0)
        parts = {}
        for attr in ATTRIBUTES:
            values = [getattr(p, attr) for p in prompts]
            parts[attr] = {v: acts[torch.tensor([x == v for x in values])].mean(0) - mean for v in sorted(set(values))}
        return cls(mean, parts)

    def part(self, attr: str, prompts: list[Prompt]) -> torch.Tensor:
        """``u[attr][value(p)]`` per prompt, ``[n, T-1, d]`` (zero for a value no fitting prompt had)."""
        zero = torch.zeros_like(self.mean)
        return torch.stack([self.parts[attr].get(getattr(p, attr), zero) for p in prompts])

    def reconstruct(self, prompts: list[Prompt]) -> torch.Tensor:
        return self.mean + sum(self.part(attr, prompts) for attr in self.parts)


class Node:
    """The residual stream after block ``layer`` at positions 1.. of one template's prompts."""

    def __init__(self, model, layer: int):
        self.model, self.hook = model, f"blocks.{layer}.hook_resid_post"
        self.stop = layer + 1

    @torch.inference_mode()
    def acts(self, ids: torch.Tensor) -> torch.Tensor:
        _, cache = self.model.bridge.run_with_cache(ids, names_filter=[self.hook], stop_at_layer=self.stop)
        return cache[self.hook][:, 1:].float()

    @torch.inference_mode()
    def logit_diff_with(self, ids, io, s, new: torch.Tensor | None) -> torch.Tensor:
        """Per-prompt logit difference with the node set to ``new`` (``None``: the clean run)."""
        if new is None:
            return logit_diff(self.model.bridge(ids), io, s)

        def patch(act, hook):
            act = act.clone()
            act[:, 1:] = new.to(act)
            return act

        return logit_diff(self.model.bridge.run_with_hooks(ids, fwd_hooks=[(self.hook, patch)]), io, s)


def sae_reconstruct(sae, a: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return sae.decode(sae.encode(a.to(sae.W_dec.dtype))).float()


def baselines(node: Node, ids, io, s, a, mean) -> tuple[float, float]:
    """Mean logit difference of the clean run and with the node mean-ablated."""
    clean = float(node.logit_diff_with(ids, io, s, None).mean())
    return clean, float(node.logit_diff_with(ids, io, s, mean.expand_as(a)).mean())


def approximation(node: Node, ids, io, s, a, mean, recon: torch.Tensor, base: tuple[float, float]) -> dict:
    """FVU, sufficiency and necessity of ``recon`` (``base``: ``baselines``' clean and mean-ablated values)."""
    clean, ablated = base
    suff = float(node.logit_diff_with(ids, io, s, recon).mean())
    nec = float(node.logit_diff_with(ids, io, s, a - recon + mean).mean())
    gap = clean - ablated
    return {
        "fvu": float(((a - recon) ** 2).sum() / ((a - mean) ** 2).sum()),
        "sufficiency": (suff - ablated) / gap,
        "necessity": (clean - nec) / gap,
        "ld_clean": clean,
        "ld_mean_ablated": ablated,
    }


def edited_code(z: torch.Tensor, z_cf: torch.Tensor, budget: int | None) -> torch.Tensor:
    """``z`` with its ``budget`` most-changed features (per prompt, over the whole node) set to ``z_cf``'s values
    (``None``: all of them, i.e. ``z_cf``)."""
    if budget is None:
        return z_cf
    change = (z_cf - z).abs().flatten(1)
    idx = change.topk(min(budget, change.shape[1]), dim=1).indices
    edited = z.flatten(1).clone()
    edited.scatter_(1, idx, z_cf.flatten(1).gather(1, idx))
    return edited.view_as(z)


def sae_edit(sae, a: torch.Tensor, a_cf: torch.Tensor, budget: int | None) -> torch.Tensor:
    """p's activation with its code edited towards p''s (``edited_code``), keeping p's error term."""
    with torch.inference_mode():
        z, z_cf = sae.encode(a.to(sae.W_dec.dtype)), sae.encode(a_cf.to(sae.W_dec.dtype))
        err = a - sae.decode(z).float()
        return sae.decode(edited_code(z, z_cf, budget)).float() + err


def control(node: Node, model, prompts, a, dictionary, saes: dict, budgets: list[int], seed: int) -> list[dict]:
    """Edit success of the supervised dictionary and of each SAE at each feature budget, per attribute."""
    rows = []
    for attr in CONTROL_ATTRIBUTES:
        rng = random.Random(f"control:{attr}:{seed}")
        cf = [p.with_(**{attr: other_value(attr, p, rng)}) for p in prompts]
        ids, ids_cf = token_ids(model, prompts), token_ids(model, cf)
        io, s = name_ids(model, cf)  # the counterfactual's answers
        before = node.logit_diff_with(ids, io, s, None)
        target = node.logit_diff_with(ids_cf, io, s, None)
        gap = float((target - before).mean())

        def success(new: torch.Tensor) -> dict:
            ld = node.logit_diff_with(ids, io, s, new)
            return {"success": float((ld - before).mean()) / gap, "accuracy": float((ld > 0).float().mean())}

        sup = a - dictionary.part(attr, prompts) + dictionary.part(attr, cf)
        head = {"attribute": attr, "cf_accuracy": float((target > 0).float().mean()), "gap": gap}
        rows.append({**head, "method": "supervised", "budget": "—", **success(sup)})
        a_cf = node.acts(ids_cf)
        for name, sae in saes.items():
            for budget in [*budgets, None]:
                new = sae_edit(sae, a, a_cf, budget)
                rows.append({**head, "method": name, "budget": "all" if budget is None else budget, **success(new)})
    return rows


def _f1(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """F1 of each column of bool ``pred [n, m]`` against bool ``truth [n]``."""
    tp = (pred & truth[:, None]).sum(0).float()
    return 2 * tp / (pred.sum(0) + truth.sum()).clamp(min=1)


def interpretability(prompts, a: torch.Tensor, dictionary, saes: dict) -> list[dict]:
    """Mean over attribute values of the best feature's F1 (SAEs) and the nearest-mean decoder's F1 (supervised)."""
    end = a[:, -1]
    codes = {}
    with torch.inference_mode():
        for name, sae in saes.items():
            codes[name] = sae.encode(end.to(sae.W_dec.dtype)) > 0
    rows = []
    for attr in ATTRIBUTES:
        truth_vals = [getattr(p, attr) for p in prompts]
        values = [v for v in sorted(set(truth_vals)) if truth_vals.count(v) >= MIN_POSITIVES]
        if not values:
            continue
        parts = dictionary.parts[attr]
        centres = torch.stack([dictionary.mean[-1] + parts[v][-1] for v in parts])
        decoded = [list(parts)[i] for i in torch.cdist(end, centres).argmin(1).tolist()]
        f1 = {"supervised": [], **{name: [] for name in saes}}
        for v in values:
            truth = torch.tensor([x == v for x in truth_vals])
            f1["supervised"].append(float(_f1(torch.tensor([d == v for d in decoded])[:, None], truth)[0]))
            for name, fired in codes.items():
                f1[name].append(float(_f1(fired, truth).max()))
        for method, scores in f1.items():
            rows.append({"attribute": attr, "method": method, "values": len(values), "f1": sum(scores) / len(scores)})
    return rows


def evaluate_layer(
    model, layer: int, fit_prompts, eval_prompts, saes: dict, budgets: list[int], seed: int
) -> dict[str, list[dict]]:
    """The three counts at one layer for the supervised dictionary and ``saes`` ({name: SAE at this layer})."""
    node = Node(model, layer)
    dictionary = AttributeDictionary.fit(node.acts(token_ids(model, fit_prompts)), fit_prompts)
    ids = token_ids(model, eval_prompts)
    io, s = name_ids(model, eval_prompts)
    a = node.acts(ids)
    recons = {"supervised": dictionary.reconstruct(eval_prompts)} | {n: sae_reconstruct(x, a) for n, x in saes.items()}
    base = baselines(node, ids, io, s, a, dictionary.mean)
    approx = [{"method": n, **approximation(node, ids, io, s, a, dictionary.mean, r, base)} for n, r in recons.items()]
    return {
        "approximation": approx,
        "control": control(node, model, eval_prompts, a, dictionary, saes, budgets, seed),
        "interpretability": interpretability(eval_prompts, a, dictionary, saes),
    }
