"""Edges (Marks et al. 2024) on a tiny random model, against a brute-force computation of the same definition:

    e(u -> d) = d/de m(clean run with d set to d(u_clean + e (u_corrupt - u_clean), SAEs in between frozen)) at 0

taken by central finite differences with plain hooks (no autograd), and its exact counterpart at e = 1."""

import json
import re
import sys

import numpy as np
import pytest
import torch

from circuit_helpers import HOOK_Z, RESID1, RESID2, dense_sae
from eval_helpers import one_thread  # noqa: F401
from eval_helpers import sae as make_sae
from sae_lab.circuits import CircuitError, Spliced, logit_diff
from sae_lab.circuits.edges import edges, validate_edges

CLEAN, CORRUPT = "the value of the function is not a list", "the list of the function is not a value"
METRIC = logit_diff(" value", " list")
RESID0 = "blocks.0.hook_resid_post"


@pytest.fixture()
def three(tiny_model):
    return dense_sae(RESID1, name="up"), dense_sae(HOOK_Z, seed=1, name="mid"), dense_sae(RESID2, seed=2, name="down")


def _values(s, prompt):
    out = s.run(prompt)
    return {k: v.clone() for k, v in out.features.items()}, {k: v.clone() for k, v in out.errors.items()}


def _put(at, col, value):
    def fn(t, hook):
        t = t.clone()
        t[0, at, col] = value
        return t

    return fn


def _hook(s, node: dict) -> tuple[str, slice, object]:
    sp = s.nodes[node["sae"]]
    at = slice(None) if node["position"] is None else slice(node["position"], node["position"] + 1)
    if node["feature"] == "error":
        return sp.hp_error.name, at, slice(None)
    return sp.hp_acts.name, at, node["feature"]


def through(s, u: dict, d: dict, eps: float, frozen: list[str], alpha: float | None = None) -> float:
    """The metric with node d set to the value it takes when u = u_c + eps (u_x - u_c) and the SAEs ``frozen``
    are held at their clean code and error. ``alpha``: d's whole hook first moved to clean + alpha (corrupt -
    clean) (the integrated-gradients path), d's change added on top."""
    (zc, ec), (zx, ex) = _values(s, CLEAN), _values(s, CORRUPT)
    name, at, col = _hook(s, u)
    src_c, src_x = (ec, ex) if u["feature"] == "error" else (zc, zx)
    hooks = [
        (name, _put(at, col, src_c[u["sae"]][at, col] + eps * (src_x[u["sae"]][at, col] - src_c[u["sae"]][at, col])))
    ]
    for k in frozen:
        hooks += [
            (s.nodes[k].hp_acts.name, lambda t, hook, v=zc[k]: v[None].clone()),
            (s.nodes[k].hp_error.name, lambda t, hook, v=ec[k]: v[None].clone()),
        ]
    out = s.run(CLEAN, fwd_hooks=hooks)
    dk = d["sae"]
    dname, dat, dcol = _hook(s, d)
    vals_c, vals_x, vals_new = (ec, ex, out.errors) if d["feature"] == "error" else (zc, zx, out.features)
    change = vals_new[dk][dat, dcol] - vals_c[dk][dat, dcol]
    if alpha is None:
        hooks = [(dname, _put(dat, dcol, vals_c[dk][dat, dcol] + change))]
    else:
        node = s.nodes[dk]
        z_path, e_path = zc[dk] + alpha * (zx[dk] - zc[dk]), ec[dk] + alpha * (ex[dk] - ec[dk])
        path = {node.hp_acts.name: z_path, node.hp_error.name: e_path}
        path[dname] = path[dname].clone()
        path[dname][dat, dcol] += change
        hooks = [(h, lambda t, hook, v=v: v[None].clone()) for h, v in path.items()]
    return float(METRIC.bind(s.model)(s.run(CLEAN, fwd_hooks=hooks).logits))


def brute(s, g, edge: dict, frozen: list[str], eps: float = 1e-2, alphas=(None,)) -> float:
    u, d = g.node(edge["source"]), g.node(edge["target"])
    return float(
        np.mean([(through(s, u, d, eps, frozen, a) - through(s, u, d, -eps, frozen, a)) / (2 * eps) for a in alphas])
    )


def test_edges_equal_the_definition_computed_by_brute_force(tiny_model, three, tmp_path):
    up, _, down = three
    with Spliced(tiny_model, [up, down]) as s:
        g = edges(s, CLEAN, CORRUPT, METRIC, up, down, n_down=3, n_up=3)
        assert len(g.edges) == 9 and g.info["held_fixed"] == []
        for e in sorted(g.edges, key=lambda e: -abs(e["weight"]))[:4]:
            assert e["weight"] == pytest.approx(brute(s, g, e, []), rel=2e-2, abs=1e-5)
        ig = edges(
            s, CLEAN, CORRUPT, METRIC, up, down, down_features=[g.nodes[-1]["feature"]], n_up=2, method="ig", steps=2
        )
        for e in ig.edges:
            assert e["weight"] == pytest.approx(brute(s, ig, e, [], alphas=(0.25, 0.75)), rel=2e-2, abs=1e-5)
    assert {n["feature"] for n in ig.nodes} != set() and ig.info["method"] == "ig"
    assert json.loads(g.to_json(tmp_path / "g.json"))["edges"] == g.edges


def test_an_intermediate_sae_is_held_fixed_so_indirect_paths_count_once(tiny_model, three):
    up, mid, down = three
    with Spliced(tiny_model, [up, mid, down]) as s:
        g = edges(s, CLEAN, CORRUPT, METRIC, up, down, n_down=3, n_up=3)
        assert g.info["held_fixed"] == ["mid"]
        gaps = []
        for e in sorted(g.edges, key=lambda e: -abs(e["weight"]))[:4]:
            direct, total = brute(s, g, e, ["mid"]), brute(s, g, e, [])
            assert e["weight"] == pytest.approx(direct, rel=2e-2, abs=1e-5)
            gaps.append(abs(total - direct) / abs(direct))
        # the path through the attention SAE is real, and left to the edges up -> mid and mid -> down
        assert max(gaps) > 0.1
        via = edges(s, CLEAN, CORRUPT, METRIC, "mid", "down", n_down=2, n_up=2)
        assert via.info["held_fixed"] == [] and via.edges


def test_no_direct_edge_through_a_residual_sae_in_between(tiny_model):
    saes = [dense_sae(RESID0, name="r0"), dense_sae(RESID1, seed=1, name="r1"), dense_sae(RESID2, seed=2, name="r2")]
    with Spliced(tiny_model, saes) as s:
        with pytest.raises(CircuitError, match="every path passes through the SAEs in between"):
            edges(s, CLEAN, CORRUPT, METRIC, "r0", "r2")
        assert edges(s, CLEAN, CORRUPT, METRIC, "r0", "r1", n_down=1, n_up=1).edges


def test_error_nodes_are_nodes_upstream_and_downstream(tiny_model, three):
    up, _, down = three
    with Spliced(tiny_model, [up, down]) as s:
        g = edges(s, CLEAN, CORRUPT, METRIC, up, down, down_features=["error", 5], up_features=[np.int64(3), "error"])
        ids = {(e["source"], e["target"]) for e in g.edges}
        assert ids == {(f"up/{u}", f"down/{d}") for u in (3, "error") for d in ("error", 5)}
        assert g.node("down/error")["feature"] == "error" and g.node("up/error")["activation"] > 0
        for e in g.edges:
            assert e["weight"] == pytest.approx(brute(s, g, e, []), rel=2e-2, abs=1e-5)
        assert abs(g.node("down/error")["effect"]) > 0


def test_per_position_edges_and_validation_against_exact_patching(tiny_model, three):
    up, mid, down = three
    with Spliced(tiny_model, [up, mid, down]) as s:
        g = edges(s, CLEAN, CORRUPT, METRIC, up, down, n_down=2, n_up=3, per_position=True)
        assert all(n["position"] is not None for n in g.nodes) and "@" in g.edges[0]["source"]
        e = max(g.edges, key=lambda e: abs(e["weight"]))
        assert e["weight"] == pytest.approx(brute(s, g, e, ["mid"]), rel=2e-2, abs=1e-5)
        v = validate_edges(s, CLEAN, CORRUPT, METRIC, g, n=6)
        u, d = g.node(v["edges"][0]["source"]), g.node(v["edges"][0]["target"])
        assert v["exact"][0] == pytest.approx(through(s, u, d, 1.0, ["mid"]) - through(s, u, d, 0.0, ["mid"]), abs=1e-6)
    assert len(v["exact"]) == 6 and v["pearson"] > 0.9


def test_bad_arguments_raise_circuit_errors(tiny_model, three):
    up, mid, down = three
    with Spliced(tiny_model, [up, down]) as s:
        call = lambda **kw: edges(s, CLEAN, CORRUPT, METRIC, kw.pop("u", up), kw.pop("d", down), **kw)  # noqa: E731
        for kw, msg in [
            (dict(down_features=[1.5]), "down_features.*1.5"),
            (dict(up_features=[-1]), "out of range"),
            (dict(down_features=[96]), "out of range"),
            (dict(up_features=["bias"]), "not a feature"),
            (dict(down_features=[]), "empty"),
            (dict(n_up=0), "n_up must be"),
            (dict(n_down=2.0), "n_down must be"),
            (dict(method="exact"), "method must be"),
            (dict(steps=0), "steps"),
            (dict(u=down, d=up), "runs after"),
            (dict(u=mid), "not spliced"),
            (dict(d=up), "same SAE"),
            (dict(up_features=[True]), "up_features must be a whole number"),
        ]:
            with pytest.raises(CircuitError, match=msg):
                call(**kw)
        assert call(down_features=torch.tensor([4, 4]), up_features=np.array([2]), n_up=1).edges  # integer arrays
    with Spliced(tiny_model, [up, down], error_term=False) as s:
        with pytest.raises(CircuitError, match="error term"):
            edges(s, CLEAN, CORRUPT, METRIC, up, down)


def test_a_downstream_sae_without_gradient_raises_instead_of_zeros(tiny_model, three):
    up, _, down = three
    encode = down.encode
    down.encode = lambda x: encode(x).detach()  # a code with no gradient with respect to the input
    with Spliced(tiny_model, [up, down]) as s:
        with pytest.raises(CircuitError, match="no gradient"):
            edges(s, CLEAN, CORRUPT, METRIC, up, down)
    mp = make_sae("matching_pursuit", RESID2, 64, 96, seed=4, name="mp", k=8)
    with Spliced(tiny_model, [up, mp]) as s:  # MP's code has a gradient (selection fixed): the definition, not zeros
        g = edges(s, CLEAN, CORRUPT, METRIC, up, mp, n_down=2, n_up=2)
        for e in sorted(g.edges, key=lambda e: -abs(e["weight"]))[:3]:  # small steps: a pursuit's selection jumps
            assert e["weight"] != 0 and e["weight"] == pytest.approx(brute(s, g, e, [], eps=1e-3), rel=5e-2, abs=1e-5)


def test_the_html_export_works_offline(tiny_model, three, tmp_path):
    up, _, down = three
    with Spliced(tiny_model, [up, down]) as s:
        g = edges(s, CLEAN, CORRUPT, METRIC, up, down, n_down=2, n_up=2)
    html = g.to_html(tmp_path / "g.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", html)  # no script loaded from anywhere (a CDN included)
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js itself is in the file


def test_drawing_without_plotly_names_the_extra(monkeypatch, tmp_path):
    """Plotly is the `app` extra's, not the core's: without it, drawing says what to install; JSON still works."""
    from sae_lab.circuits.graph import FeatureGraph

    g = FeatureGraph(
        ["a", "b"],
        nodes=[{"id": "up:1", "sae": "up", "feature": 1, "position": None, "activation": 1.0, "effect": 0.5}],
    )
    monkeypatch.setitem(sys.modules, "plotly", None)  # as if Plotly were not installed
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    for draw in (g.figure, lambda: g.to_html(tmp_path / "g.html")):
        with pytest.raises(ImportError, match=r"sae-lab\[app\]"):
            draw()
    assert json.loads(g.to_json())["nodes"][0]["id"] == "up:1"
