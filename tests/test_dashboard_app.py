"""The dashboard's pages under Streamlit's AppTest: widgets, values shown, and a message (never a traceback) for
each kind of bad input. On a real run directory (tiny random model) trained by the pipeline."""

import shutil
import sys
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from sae_lab import load_sae
from sae_lab.dashboard import APP_MAIN
from sae_lab.evaluation import FeatureDB
from sae_lab.evaluation.compare import match_dictionaries
from sae_lab.saedir import SAEDir
from sae_lab.saes import SAEConfig, build_sae

MAIN = str(APP_MAIN)  # the entry file `sae-lab dashboard` runs


def app(monkeypatch, *targets, page: str | None = None, model: Path | None = None, **query) -> AppTest:
    """Run the app as `sae-lab dashboard TARGETS [--model M]` would, on ``page`` with URL query ``query``."""
    extra = ["--model", str(model)] if model else []
    monkeypatch.setattr(sys, "argv", ["main.py", *map(str, targets), "--device", "cpu", *extra])
    at = AppTest.from_file(MAIN, default_timeout=120)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    return at


def messages(at) -> tuple[list[str], list[str]]:
    assert not at.exception, [e.value for e in at.exception]  # a traceback is a failure
    return [e.value for e in at.error], [w.value for w in at.warning]


def qp(at, key: str) -> str:
    v = at.query_params[key]
    return v[-1] if isinstance(v, list) else v


def frame(at, column: str):
    """The first table shown that has ``column``."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_runs_page_lists_every_sae(monkeypatch, tiny_run):
    at = app(monkeypatch, tiny_run)
    errors, _ = messages(at)
    assert not errors and at.title[0].value == "Runs"
    table = at.dataframe[0].value
    assert sorted(table["sae"]) == ["feature_choice_k8", "topk_k8"] and table["feature_db"].all()
    assert set(table["architecture"]) == {"topk", "feature_choice"} and table["fvu"].between(0, 2).all()
    assert all(u.startswith("./features?run=run&sae=") for u in table["open"])
    at.selectbox(key="runs_open").select("run/topk_k8")
    at.button(key="runs_open_button").click().run()
    assert at.title[0].value == "Feature browser" and qp(at, "sae") == "topk_k8" and not at.exception


def test_feature_page_by_url_shows_the_database(monkeypatch, tiny_run):
    db = FeatureDB(tiny_run / "saes" / "topk_k8" / "features.sqlite")
    i = db.list_features("density", limit=1)[0]["id"]
    at = app(monkeypatch, tiny_run, page="features", run="run", sae="topk_k8", feature=str(i))
    assert messages(at) == ([], [])
    f = db.feature(i)
    assert metrics(at)["density"] == f"{f['density']:.3%}" and metrics(at)["times active"] == f"{f['n_active']:,}"
    assert any(f"Feature {i}" in m.value for m in at.markdown)
    html = "".join(h.proto.body for h in at.get("html"))
    top = db.top_examples(i)[0]
    assert f"{top['value']:.3f}" in html and f"{top['acts'][top['highlight']]:.4g}" in html  # value on hover
    assert at.number_input(key="feature_index").value == i
    at.button(key="next").click().run()  # next / previous move through the features
    assert qp(at, "feature") == str(i + 1) and metrics(at)["density"] == f"{db.feature(i + 1)['density']:.3%}"
    at.button(key="prev").click().run()
    assert qp(at, "feature") == str(i)
    at.number_input(key="feature_index").set_value(5).run()  # by index
    assert qp(at, "feature") == "5" and metrics(at)["times active"] == f"{db.feature(5)['n_active']:,}"
    at.button(key="random_feature").click().run()  # at random among the alive ones
    assert db.feature(int(qp(at, "feature")))["n_active"] > 0
    assert not at.exception


def test_feature_search_opens_a_hit(monkeypatch, tiny_run):
    db = FeatureDB(tiny_run / "saes" / "topk_k8" / "features.sqlite")
    top = db.top_examples(7)[0]
    token = top["tokens"][top["highlight"]]
    at = app(monkeypatch, tiny_run, page="features", run="run", sae="topk_k8", feature="0")
    at.text_input(key="search_token").input(token).run()
    hits = frame(at, "search hit")
    assert 7 in set(hits["feature"]) and set(hits["feature"]) == {
        h["feature"] for h in db.features_with_example_token(token)
    }
    at.selectbox(key="search_pick").select("#7").run()
    at.button(key="search_open").click().run()
    assert qp(at, "feature") == "7" and not at.exception
    at.radio(key="search_where").set_value("top positive logits").run()
    logit_token = db.logits(3)["positive"][0]["token"]
    at.text_input(key="search_token").input(logit_token).run()
    assert 3 in set(frame(at, "search hit")["feature"])
    at.text_input(key="search_token").input("zzqx no such words").run()  # not a token: said, the page stays
    assert any("is not a token of the model's vocabulary" in w for w in messages(at)[1])
    assert metrics(at)["density"] and not at.exception


@pytest.mark.parametrize(
    "query, message",
    [
        ({"feature": "9999"}, "out of range: SAE 'run/topk_k8' has features 0 to 127"),
        ({"feature": "abc"}, "'abc' is not a feature index"),
        ({"run": "../../etc", "sae": "passwd"}, "outside the directories"),
        ({"run": "/etc"}, "outside the directories"),
        ({"sae": "nope"}, "has no SAE named 'nope'"),
    ],
)
def test_feature_page_bad_urls(monkeypatch, tiny_run, query, message):
    at = app(monkeypatch, tiny_run, page="features", **{"run": "run", "sae": "topk_k8", **query})
    errors, _ = messages(at)
    assert any(message in e for e in errors), errors


def test_missing_and_corrupt_databases_and_runs(monkeypatch, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "saes" / "topk_k8" / "features.sqlite").unlink()
    db = run / "saes" / "feature_choice_k8" / "features.sqlite"
    db.write_bytes(db.read_bytes()[:-4096])
    at = app(monkeypatch, run, page="features", run="run", sae="topk_k8")
    assert any("no feature database yet" in e and "sae-lab analyze" in e for e in messages(at)[0])
    at = app(monkeypatch, run, page="features", run="run", sae="feature_choice_k8")
    assert any("truncated or damaged" in e for e in messages(at)[0])
    at = app(monkeypatch, tmp_path / "missing")
    assert any("does not exist" in e for e in messages(at)[0])
    (run / "config.yaml").write_text("model: [unclosed")
    at = app(monkeypatch, run)
    assert messages(at)[0] == []  # the table needs no config; the model is read only when a page needs it
    at = app(monkeypatch)
    assert any("No directories given" in e for e in messages(at)[0])


def test_compare_page(monkeypatch, tiny_run, tmp_path):
    at = app(monkeypatch, tiny_run, page="compare")
    assert messages(at)[0] == []
    a, b = (load_sae(tiny_run / "saes" / n) for n in ("feature_choice_k8", "topk_k8"))
    m = match_dictionaries(a, b)
    assert metrics(at)["matched above 0.70"] == f"{m.fraction_above(0.7):.1%}"
    pairs = frame(at, "open B")
    assert len(pairs) == 128 and list(pairs["feature_a"][:5]) == list(m.a[:5])
    assert pairs["open B"][0] == f"./features?run=run&sae=topk_k8&feature={m.b[0]}"
    at.slider(key="cmp_threshold").set_value(0.95).run()
    assert metrics(at)["matched above 0.95"] == f"{m.fraction_above(0.95):.1%}"
    # an SAE of another width cannot be compared: a message names both
    torch.manual_seed(0)
    other = build_sae(
        SAEConfig(architecture="topk", d_in=32, d_sae=64, k=4, hook_name="blocks.0.hook_resid_post", name="narrow")
    )
    SAEDir(tmp_path / "narrow").save(other)
    at = app(monkeypatch, tiny_run, tmp_path / "narrow", page="compare")
    at.selectbox(key="cmp_b").select("narrow/narrow").run()
    errors, _ = messages(at)
    assert any("d_in=64" in e and "d_in=32" in e for e in errors), errors


def _circuit_inputs(tiny_run, name="topk_k8"):
    from sae_lab.models import load_model

    return load_model(str(tiny_run.parent / "tiny_model"), "cpu"), load_sae(tiny_run / "saes" / name)


def test_prompt_explorer(monkeypatch, tiny_run):
    from sae_lab.circuits import prompt_features

    at = app(monkeypatch, tiny_run, page="prompt", run="run", sae="topk_k8")
    prompt = "The value of the object is returned by the function"
    at.text_area(key="prompt_text").input(prompt)
    at.button[0].click().run()  # the form's Run button
    assert messages(at)[0] == []
    pf = prompt_features(*_circuit_inputs(tiny_run), prompt, top_k=5)
    table = frame(at, "rank")
    assert len(table) == sum(len(t[:5]) for t in pf.top) and list(table["token"].unique()) == list(
        dict.fromkeys(pf.tokens)
    )
    first = table[table["position"] == 1].iloc[0]
    assert (first["feature"], round(first["activation"], 5)) == (pf.top[1][0][0], round(pf.top[1][0][1], 5))
    assert first["open"] == f"./features?run=run&sae=topk_k8&feature={first['feature']}"
    best = max(pf.acts, key=lambda f: max(pf.acts[f]))
    assert any(f"**Feature {best}**" in m.value for m in at.markdown)
    for bad, message in (("   ", "the prompt is empty"), ("word " * 600, "longer than the model's context")):
        at.text_area(key="prompt_text").input(bad)
        at.button[0].click().run()
        assert any(message in e for e in messages(at)[0]), messages(at)


def test_ablate_and_steer(monkeypatch, tiny_run):
    from sae_lab.circuits import Intervention, compare_interventions

    at = app(monkeypatch, tiny_run, page="intervene", run="run", sae="topk_k8", feature="3")
    assert at.text_input(key="iv_features").value == "3"
    at.text_input(key="iv_tok_a").input("value")
    at.text_input(key="iv_tok_b").input("object")
    at.selectbox(key="iv_action").select("steer with a strength")
    at.number_input(key="iv_value").set_value(40.0)
    at.button[0].click().run()
    assert messages(at)[0] == []
    model, sae = _circuit_inputs(tiny_run)
    ref = compare_interventions(
        model,
        sae,
        "The capital of France is",
        [Intervention.steer(sae, [3], 40.0)],
        tokens=["value", "object"],
        max_new_tokens=12,
    )
    codes = [c.value for c in at.code]
    assert codes == [ref["before"]["generation"], ref["after"]["generation"]]
    diff = metrics(at)["logit diff 'value' − 'object'"]
    assert diff == f"{ref['after']['logit_diff']:.3f}"
    for features, action, message in (
        ("3, x", "zero-ablate", "whole numbers"),
        ("999", "zero-ablate", "out of range"),
        ("3", "mean-ablate", None),
    ):
        at.text_input(key="iv_features").input(features)
        at.selectbox(key="iv_action").select(action)
        at.button[0].click().run()
        errors, _ = messages(at)
        assert any(message in e for e in errors) if message else errors == [], errors
    at.text_input(key="iv_tok_a").input("value object")  # not a single token
    at.button[0].click().run()
    assert any("not one" in e for e in messages(at)[0])


def test_sae_whose_hook_the_model_lacks(monkeypatch, tiny_run, tmp_path):
    torch.manual_seed(0)
    deep = build_sae(
        SAEConfig(architecture="topk", d_in=64, d_sae=32, k=4, hook_name="blocks.9.hook_resid_post", name="deep")
    )
    SAEDir(tmp_path / "deep").save(deep)
    for page in ("prompt", "intervene"):
        at = app(monkeypatch, tmp_path / "deep", page=page, model=tiny_run.parent / "tiny_model")
        if page == "intervene":
            at.button[0].click().run()
        errors, _ = messages(at)
        assert any("reads hook 'blocks.9.hook_resid_post'" in e for e in errors), errors


def test_direct_feature_attribution_for_a_hook_z_sae(monkeypatch, tiny_run, hook_z_sae):
    from sae_lab.circuits.dfa import direct_feature_attribution
    from sae_lab.models import load_model

    db = FeatureDB(hook_z_sae / "features.sqlite")
    i = db.list_features("density", limit=1)[0]["id"]
    at = app(
        monkeypatch,
        hook_z_sae,
        page="features",
        model=tiny_run.parent / "tiny_model",
        run="attn_z",
        sae="attn_z",
        feature=str(i),
    )
    assert messages(at)[0] == []
    e = db.top_examples(i, 1)[0]
    d = direct_feature_attribution(
        load_model(str(tiny_run.parent / "tiny_model"), "cpu"),
        load_sae(hook_z_sae),
        e["token_ids"],
        i,
        position=e["highlight"],
    )
    m = metrics(at)
    assert m["pre-activation"] == f"{d.pre_activation:.4f}" == m["heads × sources + bias"]
    assert m["activation"] == f"{d.activation:.4f}" and abs(d.activation - e["value"]) < 1e-3


def test_saelens_format_sae_directory_with_model(monkeypatch, tiny_run, tmp_path):
    sae_dir = tmp_path / "saelens_topk"
    shutil.copytree(tiny_run / "saes" / "topk_k8", sae_dir)
    for ours in ("sae_lab.json", "sae_lab_state.safetensors"):  # leaves SAELens's cfg.json + sae_weights only
        (sae_dir / ours).unlink()
    model = tiny_run.parent / "tiny_model"
    at = app(monkeypatch, sae_dir, page="prompt", model=model)
    assert messages(at)[0] == [] and len(frame(at, "rank")) > 0
    at = app(monkeypatch, sae_dir, page="features", model=model, run="saelens_topk", sae="saelens_topk", feature="4")
    n_active = FeatureDB(sae_dir / "features.sqlite").feature(4)["n_active"]
    assert messages(at)[0] == [] and metrics(at)["times active"] == f"{n_active:,}"
