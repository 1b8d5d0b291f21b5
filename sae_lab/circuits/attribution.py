"""Attribution patching with error nodes (Marks et al. 2024), integrated gradients, and exact validation.

For every spliced SAE, every feature and every error node: ``estimate = grad(metric) . (corrupt - clean)``,
where the gradient is the total derivative at the clean run (downstream splices recompute from their input,
so indirect paths count) and (corrupt - clean) is the node's change when the corrupt prompt runs. Error nodes
are the whole error vector of a hook at one position. ``per_position=False`` sums estimates over positions.

Integrated gradients (``method="ig"``): for one spliced hook at a time, its code and error term are set to
``clean + a (corrupt - clean)`` for ``a = (i + 0.5) / steps``, the gradient is averaged over the steps
(one batched forward + backward per hook), and multiplied by (corrupt - clean).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sae_lab.circuits import checks
from sae_lab.circuits.errors import CircuitError
from sae_lab.circuits.metrics import bind_metric, differentiable, scalar


@dataclass
class Attribution:
    """Per SAE (key = ``sae.name``): ``features`` [T, d_sae] (or [d_sae] summed) and ``errors`` [T] (or [])."""

    tokens: list[str]
    features: dict[str, torch.Tensor]
    errors: dict[str, torch.Tensor]
    metric_clean: float
    metric_corrupt: float
    method: str

    def top(self, n: int = 20, include_errors: bool = True) -> list[dict]:
        """The ``n`` nodes with the largest |estimate|: ``{"sae", "position", "feature", "estimate"}``;
        ``feature`` is "error" for error nodes, ``position`` None when summed over positions."""
        n, include_errors = checks.count(n, "n"), checks.flag(include_errors, "include_errors")
        rows = []
        for key, eff in self.features.items():
            flat = eff.reshape(-1)
            vals, idx = flat.abs().topk(min(n, flat.numel()))
            for i in idx.tolist():
                pos, f = divmod(i, eff.shape[-1]) if eff.dim() == 2 else (None, i)
                rows.append({"sae": key, "position": pos, "feature": f, "estimate": float(flat[i])})
            if include_errors:
                err = self.errors[key].reshape(-1)
                for p, v in enumerate(err.tolist()):
                    rows.append(
                        {
                            "sae": key,
                            "position": p if self.errors[key].dim() else None,
                            "feature": "error",
                            "estimate": v,
                        }
                    )
        return sorted(rows, key=lambda r: -abs(r["estimate"]))[:n]


def _pair(s, clean, corrupt) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The two prompts as ``[1, T]`` ids of equal length (one prompt each; a batch is refused)."""
    ids_c, _ = s.ids(clean, name="clean")
    ids_x, _ = s.ids(corrupt, name="corrupt")
    if ids_c.shape != ids_x.shape:
        raise CircuitError(
            f"clean and corrupt prompts must have the same number of tokens, got {ids_c.shape[1]} "
            f"and {ids_x.shape[1]}; pick counterfactuals that tokenise to equal lengths"
        )
    if not s.nodes:
        raise CircuitError("no SAE is spliced; attribution needs Spliced(model, [sae, ...])")
    from sae_lab.circuits.prompts import token_strings

    return ids_c, ids_x, token_strings(s.model, ids_c[0])


def _node_values(s, ids: torch.Tensor, metric) -> tuple[float, dict, dict]:
    with torch.no_grad():
        out = s.run(ids)
        value = float(scalar(metric(out.logits[0])))
    return value, {k: n.z.clone() for k, n in s.nodes.items()}, {k: n.err.clone() for k, n in s.nodes.items()}


def attribute(
    s, clean, corrupt, metric, method: str = "atp", steps: int = 10, per_position: bool = True
) -> Attribution:
    """Estimated effect on ``metric`` of patching each feature / error node from clean to corrupt. ``clean`` and
    ``corrupt``: one prompt each (text, token ids, or a ``[1, T]`` tensor; a batch is refused). A node that no
    gradient reaches raises CircuitError (it is never read as a zero effect)."""
    if not s.error_term:
        raise CircuitError("attribution needs the error term: use Spliced(model, saes, error_term=True)")
    if method not in ("atp", "ig"):
        raise CircuitError(f"method must be 'atp' or 'ig', got {method!r}")
    steps, per_position = checks.count(steps, "steps"), checks.flag(per_position, "per_position")
    metric = bind_metric(metric, s.model)
    ids_c, ids_x, tokens = _pair(s, clean, corrupt)
    m_x, zx, ex = _node_values(s, ids_x, metric)
    if method == "atp":
        out = s.run(ids_c, grad=True)
        value = differentiable(scalar(metric(out.logits[0])))
        nodes = list(s.nodes.items())
        grads = _grads(value, [(k, what, t) for k, n in nodes for what, t in (("code", n.z), ("error term", n.err))])
        zc = {k: n.z.detach() for k, n in nodes}
        ec = {k: n.err.detach() for k, n in nodes}
        gz = {k: grads[2 * i] for i, (k, _) in enumerate(nodes)}
        ge = {k: grads[2 * i + 1] for i, (k, _) in enumerate(nodes)}
        m_c = float(value.detach())
    else:
        m_c, zc, ec = _node_values(s, ids_c, metric)
        gz, ge = {}, {}
        for key in s.nodes:
            gz[key], ge[key] = _ig_grads(s, key, ids_c, zc[key], zx[key], ec[key], ex[key], metric, steps)
    feats = {k: (gz[k] * (zx[k] - zc[k]))[0] for k in s.nodes}
    errs = {k: (ge[k] * (ex[k] - ec[k]))[0].sum(-1) for k in s.nodes}
    if not per_position:
        feats, errs = {k: v.sum(0) for k, v in feats.items()}, {k: v.sum() for k, v in errs.items()}
    return Attribution(tokens, feats, errs, m_c, m_x, method)


def _grads(value: torch.Tensor, nodes: list[tuple[str, str, torch.Tensor]]) -> list[torch.Tensor]:
    """d value / d t for each (SAE key, "code" | "error term", t); CircuitError naming a node that no gradient
    reaches (never a silent zero)."""
    for key, what, t in nodes:
        if not t.requires_grad:
            raise _no_path(key, what)
    grads = torch.autograd.grad(value, [t for *_, t in nodes], allow_unused=True)
    for (key, what, _), g in zip(nodes, grads):
        if g is None:
            raise _no_path(key, what)
    return [g.detach() for g in grads]


def _no_path(key: str, what: str) -> CircuitError:
    return CircuitError(
        f"no gradient reaches the {what} of SAE '{key}' from the metric, so its effect cannot be "
        f"estimated (a hook that replaces or detaches an activation on the way, or an SAE whose "
        f"encoding is not differentiable, cuts the path); remove that hook or that SAE"
    )


def _ig_grads(s, key, ids, zc, zx, ec, ex, metric, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean gradients at ``key``'s code and error term along the straight path clean -> corrupt."""
    alpha = ((torch.arange(steps, dtype=zc.dtype, device=zc.device) + 0.5) / steps)[:, None, None]
    z_path = (zc + alpha * (zx - zc)).requires_grad_(True)
    e_path = (ec + alpha * (ex - ec)).requires_grad_(True)
    node = s.nodes[key]
    hooks = [(node.hp_acts.name, lambda z, hook: z_path), (node.hp_error.name, lambda e, hook: e_path)]
    out = s.run(ids.expand(steps, -1), fwd_hooks=hooks, grad=True)
    total = differentiable(sum(scalar(metric(out.logits[i])) for i in range(steps)))
    gz, ge = _grads(total, [(key, "code", z_path), (key, "error term", e_path)])
    return gz.mean(0, keepdim=True), ge.mean(0, keepdim=True)


def patch_effect(s, clean, corrupt, metric, nodes: list[dict]) -> list[float]:
    """Exact effect of each node (from ``Attribution.top``, per position): the metric with that single node
    set to its corrupt value, minus the clean metric."""
    metric = bind_metric(metric, s.model)
    ids_c, ids_x, _ = _pair(s, clean, corrupt)
    if not isinstance(nodes, (list, tuple)):
        raise CircuitError(f"nodes must be a list of node dicts (Attribution.top(n)), got {type(nodes).__name__}")
    nodes = [_check_node(s, nd, i, ids_c.shape[1]) for i, nd in enumerate(nodes)]
    m_c, _, _ = _node_values(s, ids_c, metric)
    _, zx, ex = _node_values(s, ids_x, metric)
    out = []
    for key, p, f in nodes:
        node = s.nodes[key]
        if f == "error":
            name, fn = node.hp_error.name, _setter(p, slice(None), ex[key][0, p])
        else:
            name, fn = node.hp_acts.name, _setter(p, f, zx[key][0, p, f])
        with torch.no_grad():
            out.append(float(scalar(metric(s.run(ids_c, fwd_hooks=[(name, fn)]).logits[0]))) - m_c)
    return out


def _check_node(s, nd, i: int, T: int) -> tuple[str, int, int | str]:
    """``nodes[i]`` as (sae key, position, feature or "error"), checked against the splice and the prompt."""
    name = f"nodes[{i}]"
    if not isinstance(nd, dict) or not {"sae", "position", "feature"} <= set(nd):
        raise CircuitError(
            f"{name} must be a dict with 'sae', 'position' and 'feature' (as Attribution.top returns), got {nd!r}"
        )
    if nd["sae"] not in s.nodes:
        raise CircuitError(f"{name}: SAE {nd['sae']!r} is not spliced; spliced: {list(s.nodes)}")
    if nd["position"] is None:
        raise CircuitError("patch_effect needs per-position nodes (attribute(..., per_position=True))")
    p = checks.position(nd["position"], T, f"{name}['position']")
    f = (
        nd["feature"]
        if nd["feature"] == "error"
        else checks.feature(s.nodes[nd["sae"]].sae, nd["feature"], f"{name}['feature']")
    )
    return nd["sae"], p, f


def _setter(p: int, f, value: torch.Tensor):
    def fn(t, hook):
        t = t.clone()
        t[:, p, f] = value
        return t

    return fn


def validate(s, clean, corrupt, metric, attribution: Attribution, n: int = 20) -> dict:
    """Top-``n`` estimates against exact single-node patching: their values and the Pearson correlation."""
    if not isinstance(attribution, Attribution):
        raise CircuitError(f"attribution must be what s.attribute(...) returns, got {type(attribution).__name__}")
    nodes = attribution.top(n)
    exact = patch_effect(s, clean, corrupt, metric, nodes)
    est = torch.tensor([nd["estimate"] for nd in nodes], dtype=torch.float64)
    ex = torch.tensor(exact, dtype=torch.float64)
    corr = float(torch.corrcoef(torch.stack([est, ex]))[0, 1]) if len(nodes) > 1 else float("nan")
    return {"nodes": nodes, "estimate": est.tolist(), "exact": exact, "pearson": corr}
