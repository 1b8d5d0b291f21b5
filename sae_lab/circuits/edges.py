"""Edges between the nodes of two spliced SAEs, as Marks et al. (2024, "Sparse Feature Circuits") define them.

Nodes are an SAE's features and its error term (the error vector at its hook), summed over positions
(``per_position=False``, the default) or one per position. For a clean/corrupt pair and a metric m, the edge
from upstream node u to downstream node d is the effect on m of patching u from clean to corrupt, through d
alone, in attribution-patching form:

    e(u -> d) = (∇_d m) · (∂d/∂u) · (u_corrupt - u_clean)

- ∇_d m: the total gradient of m at d in the clean run (``method="atp"``), or (``method="ig"``) its mean along
  the straight path of d's hook (code and error term together) from clean to corrupt, the gradient of
  ``attribute(method="ig")``. The reference implementation (saprmarks/feature-circuits, ``get_circuit``) does
  the same: the integrated-gradient gradient of its node attribution weights its edges.
- ∂d/∂u: in the clean run, with every SAE spliced between u and d held fixed. The gradient passes neither
  through their features nor through their errors (the reference's ``intermediate_stopgrads``), so a path
  u -> v -> d is counted once, in the edges u -> v and v -> d; when every path passes through such an SAE
  (a residual-stream SAE in between) there is no direct edge and ``edges`` says so.
- An upstream feature reaches the model through the decoder only; the upstream error term is a node of its
  own (the reference zeroes the gradient that would flow from the error back into the code). A downstream
  error node is ``x - decode(encode(x))`` at its hook, a function of x like a feature, so the downstream SAE's
  code must be differentiable with respect to its input.

One backward pass per downstream node, of ``sum(∇_d m ⊙ d)`` over its positions, gives ∂d/∂u · Δu for every
upstream node at once (the reference's ``jvp``).

Exact counterpart (``validate_edges``): run the clean prompt with u at its corrupt value and the SAEs in
between frozen at their clean values (code and error term), and read d's new value d'; then run the clean
prompt with only d set to d' (everything after d live). The change of m is the edge's exact effect; to first
order in (u_corrupt - u_clean) it is e(u -> d).
"""

from __future__ import annotations

from typing import Sequence

import torch

from sae_lab import argcheck as A
from sae_lab.circuits import checks
from sae_lab.circuits.attribution import _ig_grads, _node_values, _pair, _setter
from sae_lab.circuits.errors import CircuitError
from sae_lab.circuits.graph import FeatureGraph
from sae_lab.circuits.metrics import bind_metric, scalar
from sae_lab.circuits.prompts import Prompt
from sae_lab.circuits.spliced import sae_key

__all__ = ["FeatureGraph", "edges", "validate_edges"]

Node = tuple[int | None, int]  # (position, or None = summed over positions; a feature index, or d_sae = the error)


def edges(
    s,
    clean: Prompt,
    corrupt: Prompt,
    metric,
    upstream,
    downstream,
    down_features: Sequence | None = None,
    n_down: int = 5,
    up_features: Sequence | None = None,
    n_up: int = 5,
    method: str = "atp",
    steps: int = 10,
    per_position: bool = False,
) -> FeatureGraph:
    """Edges from ``upstream``'s nodes to ``downstream``'s (two SAEs spliced in ``s``, upstream earlier; the SAEs
    or their names) for the pair ``clean``/``corrupt`` and ``metric`` (``logits -> scalar``, e.g. ``logit_diff``).

    Downstream nodes: the given ``down_features`` (ints, or "error"), else the ``n_down`` nodes with the largest
    |attribution| (error node included); upstream nodes, per downstream node: the given ``up_features``, else
    the ``n_up`` largest |edge| (non-zero only). With ``per_position=True`` a node is a (position, feature) and
    given features restrict the candidates of the top-n."""
    ku, kd = _endpoints(s, upstream, downstream)
    dfeat = _indices(down_features, s.nodes[kd].sae.cfg.d_sae, "down_features")
    ufeat = _indices(up_features, s.nodes[ku].sae.cfg.d_sae, "up_features")
    n_down, n_up, steps = checks.count(n_down, "n_down"), checks.count(n_up, "n_up"), checks.count(steps, "steps")
    if method not in ("atp", "ig"):
        raise CircuitError(f"method must be 'atp' or 'ig', got {method!r}")
    metric = bind_metric(metric, s.model)
    ids_c, ids_x, tokens = _pair(s, clean, corrupt)
    between = _between(s, ids_c, ku, kd)
    m_c, zc, ec = _node_values(s, ids_c, metric)
    m_x, zx, ex = _node_values(s, ids_x, metric)
    _check_differentiable(s.nodes[kd].sae, zc[kd], ec[kd])
    grads = _metric_grads(s, ids_c, (ku, kd), metric, method, steps, zc, zx, ec, ex)
    effect = {k: _stack(grads[k][0] * (zx[k] - zc[k]), grads[k][1] * (ex[k] - ec[k])) for k in (ku, kd)}
    down_nodes = _pick(effect[kd], dfeat, n_down, per_position)
    rows = _vjps(s, ids_c, ku, kd, between, grads[kd], down_nodes, zx[ku] - zc[ku], ex[ku] - ec[ku])
    act = {k: _stack(zc[k], ec[k].norm(dim=-1, keepdim=True)) for k in (ku, kd)}
    graph = FeatureGraph(
        tokens,
        info={
            "method": method,
            "steps": steps if method == "ig" else None,
            "metric_clean": m_c,
            "metric_corrupt": m_x,
            "upstream": ku,
            "downstream": kd,
            "held_fixed": between,
            "per_position": per_position,
        },
    )
    ups: list[Node] = []
    for d, row in zip(down_nodes, rows):
        chosen = _pick(row, ufeat, n_up, per_position)
        ups += [u for u in chosen if u not in ups]
        graph.edges += [{"source": _id(s, ku, u), "target": _id(s, kd, d), "weight": _at(row, u)} for u in chosen]
    graph.nodes = [_node_dict(s, ku, u, act[ku], effect[ku]) for u in ups] + [
        _node_dict(s, kd, d, act[kd], effect[kd]) for d in down_nodes
    ]
    return graph


def validate_edges(s, clean: Prompt, corrupt: Prompt, metric, graph: FeatureGraph, n: int = 20) -> dict:
    """The ``n`` edges of ``graph`` with the largest |weight| against their exact effect (the module docstring):
    ``{"edges", "estimate", "exact", "pearson"}``. ``s`` must splice the graph's SAEs, as when it was built."""
    n = checks.count(n, "n")
    metric = bind_metric(metric, s.model)
    ids_c, ids_x, _ = _pair(s, clean, corrupt)
    m_c, zc, ec = _node_values(s, ids_c, metric)
    _, zx, ex = _node_values(s, ids_x, metric)
    top = sorted(graph.edges, key=lambda e: -abs(e["weight"]))[:n]
    between: dict[tuple[str, str], list[str]] = {}
    exact = []
    for e in top:
        u, d = graph.node(e["source"]), graph.node(e["target"])
        for nd in (u, d):
            if nd["sae"] not in s.nodes:
                raise CircuitError(
                    f"the graph's SAE '{nd['sae']}' is not spliced in; validate with the splice that built the graph"
                )
        pair = (u["sae"], d["sae"])
        if pair not in between:
            between[pair] = _between(s, ids_c, *pair)
        exact.append(_exact(s, ids_c, metric, m_c, u, d, between[pair], (zc, ec), (zx, ex)))
    est = [e["weight"] for e in top]
    return {"edges": top, "estimate": est, "exact": exact, "pearson": _pearson(est, exact)}


# ---- the computation ---------------------------------------------------------------------------------------
def _between(s, ids: torch.Tensor, ku: str, kd: str) -> list[str]:
    """The spliced SAEs whose hooks run after ``ku``'s and before ``kd``'s (from the order the hooks fire)."""
    order: list[str] = []
    hooks = [(n.hp_acts.name, lambda t, hook, k=k: order.append(k)) for k, n in s.nodes.items()]
    s.run(ids, fwd_hooks=hooks)
    iu, idn = order.index(ku), order.index(kd)
    if iu > idn:
        raise CircuitError(
            f"the upstream SAE '{ku}' ({s.nodes[ku].hook}) runs after the downstream one '{kd}' "
            f"({s.nodes[kd].hook}); swap them"
        )
    return order[iu + 1 : idn]


def _metric_grads(s, ids, keys, metric, method: str, steps: int, zc, zx, ec, ex) -> dict:
    """{key: (∇_z m, ∇_err m)} at the clean run (atp) or averaged along the clean -> corrupt path (ig)."""
    if method == "ig":
        return {k: _ig_grads(s, k, ids, zc[k], zx[k], ec[k], ex[k], metric, steps) for k in keys}
    out = s.run(ids, grad=True)
    value = scalar(metric(out.logits[0]))
    grads = torch.autograd.grad(value, [t for k in keys for t in (s.nodes[k].z, s.nodes[k].err)], allow_unused=True)
    if any(g is None for g in grads):
        raise CircuitError(f"the metric has no gradient at the SAEs {list(keys)}; it must depend on the logits")
    return {k: (grads[2 * i].detach(), grads[2 * i + 1].detach()) for i, k in enumerate(keys)}


def _vjps(s, ids, ku: str, kd: str, between: list[str], left, down_nodes: list[Node], dz, de) -> list[torch.Tensor]:
    """Per downstream node d, ``∇_d m · ∂d/∂u · Δu`` for every upstream node u, ``[T, d_sae_up + 1]``; the SAEs
    ``between`` are cut from the graph (neither features nor errors pass a gradient)."""
    cut = [
        (name, lambda t, hook: t.detach())
        for k in between
        for name in (s.nodes[k].hp_acts.name, s.nodes[k].hp_error.name)
    ]
    s.run(ids, fwd_hooks=cut, grad=True)
    up, down = s.nodes[ku], s.nodes[kd]
    (lz, le), width = left, down.z.shape[-1]
    rows = []
    for pos, i in down_nodes:
        at = slice(None) if pos is None else slice(pos, pos + 1)
        target = (lz[0, at, i] * down.z[0, at, i]).sum() if i < width else (le[0, at] * down.err[0, at]).sum()
        gz, ge = torch.autograd.grad(target, [up.z, up.err], retain_graph=True, allow_unused=True)
        if gz is None or ge is None:
            why = (
                f"every path passes through the SAEs in between ({between}), which are held fixed: compute "
                f"the edges through them instead ('{ku}' -> '{between[0]}', ..., '{between[-1]}' -> '{kd}')"
                if between
                else "the downstream node does not depend on the upstream SAE"
            )
            raise CircuitError(f"no direct edge from '{ku}' to '{kd}': {why}")
        rows.append(_stack(gz * dz, ge * de))
    return rows


def _exact(s, ids, metric, m_c: float, u: dict, d: dict, between: list[str], clean_vals, corrupt_vals) -> float:
    """The metric's change when d takes the value it has with u patched to corrupt and ``between`` frozen."""
    (zc, ec), (zx, ex) = clean_vals, corrupt_vals
    name, at, col = _place(s, u)
    src = (ex if u["feature"] == "error" else zx)[u["sae"]][:, at, col]
    hooks = [(name, _setter(at, col, src))]
    for k in between:
        hooks += [
            (s.nodes[k].hp_acts.name, lambda t, hook, v=zc[k]: v.clone()),
            (s.nodes[k].hp_error.name, lambda t, hook, v=ec[k]: v.clone()),
        ]
    with torch.no_grad():
        s.run(ids, fwd_hooks=hooks)
        node = s.nodes[d["sae"]]
        dname, dat, dcol = _place(s, d)
        new = (node.err if d["feature"] == "error" else node.z)[:, dat, dcol].clone()
        out = s.run(ids, fwd_hooks=[(dname, _setter(dat, dcol, new))])
        return float(scalar(metric(out.logits[0]))) - m_c


def _check_differentiable(sae, z: torch.Tensor, err: torch.Tensor) -> None:
    """CircuitError unless the SAE's code has a gradient with respect to its input (probed on one token)."""
    with torch.enable_grad():
        x = (sae.decode(z[:, -1:]) + err[:, -1:]).detach().requires_grad_(True)
        code = sae.encode(x)
        grad = torch.autograd.grad(code.sum(), x, allow_unused=True)[0] if code.requires_grad else None
    if grad is None:
        raise CircuitError(
            f"the downstream SAE '{sae_key(sae)}' ({sae.cfg.architecture}) gives its code no gradient "
            f"with respect to its input, so its nodes' dependence on upstream nodes is unknown; use "
            f"a downstream SAE whose encode is differentiable"
        )


# ---- nodes ---------------------------------------------------------------------------------------------
def _stack(feats: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
    """``[1, T, d_sae]`` feature values and ``[1, T, d_in]`` (or ``[1, T, 1]``) error values -> ``[T, d_sae + 1]``
    (the error column summed over d_in)."""
    return torch.cat([feats[0], err[0].sum(-1, keepdim=True)], -1).detach()


def _pick(values: torch.Tensor, given: list[int] | None, n: int, per_position: bool) -> list[Node]:
    """Nodes from ``values`` [T, d_sae + 1]: the given ones, or the ``n`` with the largest non-zero |value|."""
    if not per_position:
        if given is not None:
            return [(None, i) for i in given]
        tot = values.sum(0)
        top = tot.abs().topk(min(n, tot.numel()))
        return [(None, i) for v, i in zip(top.values.tolist(), top.indices.tolist()) if v > 0]
    cols = list(range(values.shape[1])) if given is None else given
    flat = values[:, cols].reshape(-1)
    top = flat.abs().topk(min(n, flat.numel()))
    return [
        (p, cols[c])
        for v, (p, c) in zip(top.values.tolist(), (divmod(i, len(cols)) for i in top.indices.tolist()))
        if v > 0
    ]


def _at(values: torch.Tensor, node: Node) -> float:
    pos, i = node
    return float(values[:, i].sum() if pos is None else values[pos, i])


def _label(s, key: str, node: Node) -> tuple[int | str, int | None]:
    pos, i = node
    return ("error" if i == s.nodes[key].sae.cfg.d_sae else i), pos


def _id(s, key: str, node: Node) -> str:
    feature, pos = _label(s, key, node)
    return f"{key}/{feature}" + ("" if pos is None else f"@{pos}")


def _node_dict(s, key: str, node: Node, act: torch.Tensor, effect: torch.Tensor) -> dict:
    feature, pos = _label(s, key, node)
    return {
        "id": _id(s, key, node),
        "sae": key,
        "feature": feature,
        "position": pos,
        "activation": _at(act, node),
        "effect": _at(effect, node),
    }


def _place(s, nd: dict) -> tuple[str, slice, int | slice]:
    """A graph node's hook point, positions and column."""
    node = s.nodes[nd["sae"]]
    at = slice(None) if nd["position"] is None else slice(nd["position"], nd["position"] + 1)
    if nd["feature"] == "error":
        return node.hp_error.name, at, slice(None)
    return node.hp_acts.name, at, int(nd["feature"])


# ---- arguments -----------------------------------------------------------------------------------------
def _endpoints(s, upstream, downstream) -> tuple[str, str]:
    if not s.error_term:
        raise CircuitError("edges need the error term: use Spliced(model, saes, error_term=True)")
    keys = []
    for sae, what in ((upstream, "upstream"), (downstream, "downstream")):
        node = s.node(sae) if isinstance(sae, str) or hasattr(sae, "cfg") else None
        if node is None:
            label = sae if isinstance(sae, str) else getattr(sae, "name", type(sae).__name__)
            raise CircuitError(
                f"the {what} SAE {label!r} is not spliced in; splice both: "
                f"Spliced(model, [upstream, downstream, ...]) (spliced: {list(s.nodes)})"
            )
        keys.append(sae_key(node.sae))
    if keys[0] == keys[1]:
        raise CircuitError(f"upstream and downstream are the same SAE '{keys[0]}'; edges join two different SAEs")
    return keys[0], keys[1]


def _indices(features, d_sae: int, what: str) -> list[int] | None:
    """Feature indices (the circuit API's index rule: integers of any kind, in range) or "error" (-> d_sae);
    None stays None."""
    if features is None:
        return None
    scalar = isinstance(features, str) or getattr(features, "ndim", None) == 0 or not hasattr(features, "__iter__")
    out = []
    items = [features] if scalar else features
    for f in items:
        if isinstance(f, str) and f != "error":
            raise CircuitError(f"{what}: {f!r} is not a feature; give integer indices, or 'error' for the error node")
        out.append(d_sae if isinstance(f, str) else A.as_index(f, what, d_sae, CircuitError, "feature"))
    if not out:
        raise CircuitError(f"{what} is empty; give feature indices (or 'error'), or None for the top-n nodes")
    return list(dict.fromkeys(out))


def _pearson(a: list[float], b: list[float]) -> float:
    if len(a) < 2:
        return float("nan")
    return float(torch.corrcoef(torch.tensor([a, b], dtype=torch.float64))[0, 1])
