"""Bad input to the circuit API and the feature database (issue 23): every public argument tried with the wrong
type, out of range, negative, non-finite, empty and batched gets a CircuitError / FeatureQueryError whose message
names the argument, or a documented correct result (never a raw traceback, never a silent wrong number)."""

import numpy as np
import pytest
import torch

from circuit_helpers import HOOK_Z, RESID1, RESID2, dense_sae
from eval_helpers import one_thread  # noqa: F401
from sae_lab.circuits import CircuitError, Intervention, Spliced, compare_interventions, logit_diff, prompt_features
from sae_lab.circuits.attribution import patch_effect, validate
from sae_lab.circuits.dfa import direct_feature_attribution
from sae_lab.evaluation import FeatureDB, FeatureDBError, FeatureQueryError
from sae_lab.evaluation.feature_db import write_feature_db

PROMPT, OTHER = "the value of the function is not a list", "the list of the function is not a value"
METRIC = logit_diff(" value", " list")
RESID3 = "blocks.3.hook_resid_post"


@pytest.fixture(scope="module")
def sae():
    return dense_sae(RESID1)  # 96 features


@pytest.fixture(scope="module")
def zsae():
    return dense_sae(HOOK_Z, seed=1)


@pytest.fixture(scope="module")
def ids(tiny_model):
    return tiny_model.bridge.to_tokens(PROMPT)  # [1, T], as the guide's to_tokens returns


def _raises(call, words: str, error=CircuitError):
    with pytest.raises(error, match=words):
        call()


# ---- feature indices, positions, values (Intervention.*) ------------------------------------------------
@pytest.mark.parametrize(
    "features, words",
    [
        ([3.7], r"features must be a whole number .*3\.7"),
        (3.7, r"features must be a whole number"),
        ([True], r"features must be a whole number"),
        (torch.tensor(3.0), r"features must be a whole number"),
        ([-1], r"features: feature -1 is out of range: the SAE at blocks\.1\.hook_resid_post has 96 features"),
        ([96], r"features: feature 96 is out of range"),
        ([10**6], r"features: feature 1000000 is out of range"),
        ([], r"features is empty"),
        ("3", r"features must be one feature or a flat list"),
        (torch.tensor([[1, 2]]), r"features must be one feature or a flat list"),
        ([3, 3], r"features: feature 3 is given twice"),
    ],
)
def test_bad_feature_indices_are_named(sae, features, words):
    for make in (
        Intervention.zero,
        lambda s, f: Intervention.clamp(s, f, 1.0),
        lambda s, f: Intervention.steer(s, f, 1.0),
        lambda s, f: Intervention.mean(s, f),
    ):
        _raises(lambda: make(sae, features), words)


@pytest.mark.parametrize("features", [3, np.int64(3), torch.tensor(3), np.array(3), torch.tensor(3).argmax() + 3])
def test_integer_scalars_of_any_kind_are_one_feature(sae, features):
    assert Intervention.zero(sae, features).features == [3] and Intervention.steer(sae, features, 2.0).features == [3]


def test_integer_arrays_are_lists_of_features(sae):
    for feats in (torch.tensor([3, 4]), np.array([3, 4]), (3, 4), range(3, 5)):
        assert Intervention.zero(sae, feats).features == [3, 4]


@pytest.mark.parametrize(
    "positions, words",
    [
        ("last", r"positions must be 'all'"),
        ([-1], r"positions: position -1 is negative"),
        ([1.5], r"positions must be a whole number"),
        ([], r"positions is empty"),
        ([True], "positions must be a whole"),
        ([2, 2], r"position 2 is given twice"),
    ],
)
def test_bad_positions_are_named(sae, positions, words):
    _raises(lambda: Intervention.zero(sae, [1], positions=positions), words)


@pytest.mark.parametrize(
    "value, words",
    [
        (float("nan"), r"value must be a finite number, got nan"),
        (float("inf"), r"value must be a finite number"),
        ("1", r"value must be a number"),
        (True, r"value must be a number"),
        (torch.ones(2), r"value must be a number"),
    ],
)
def test_clamp_values_must_be_finite_numbers(sae, value, words):
    _raises(lambda: Intervention.clamp(sae, 3, value), words)
    _raises(lambda: Intervention.steer(sae, 3, value), words.replace("value", "strength"))


def test_clamp_accepts_numbers_of_any_kind(sae):
    for v in (2, 2.0, np.float32(2.0), torch.tensor(2.0)):
        assert Intervention.clamp(sae, 3, v).value == 2.0


def test_bad_means_and_saes_are_named(sae):
    _raises(lambda: Intervention.mean(sae, [1, 2], torch.tensor([0.5, float("nan")])), r"mean holds a non-finite")
    _raises(lambda: Intervention.mean(sae, [1, 2], torch.ones(5)), r"mean has 5 values")
    _raises(lambda: Intervention.mean(sae, [1], "x"), r"mean must be a FeatureDB")
    _raises(lambda: Intervention.zero("sae", 3), r"sae must be an SAE")


# ---- prompts: every function that takes one ---------------------------------------------------------------
def _prompt_takers(model, sae, zsae):
    """Every public function of one prompt, as name -> (call(prompt), the argument's name in messages)."""

    def attribute_clean(p):
        with Spliced(model, [sae]) as s:
            return s.attribute(p, OTHER, METRIC)

    def attribute_corrupt(p):
        with Spliced(model, [sae]) as s:
            return s.attribute(PROMPT, p, METRIC)

    def generate(p):
        with Spliced(model, [sae]) as s:
            return s.generate(p, max_new_tokens=2)

    def run(p):
        with Spliced(model, [sae]) as s:
            return s.run(p)

    def patch(p):
        with Spliced(model, [sae]) as s:
            return patch_effect(s, p, OTHER, METRIC, [{"sae": sae.name, "position": 1, "feature": 3}])

    return {
        "run": (run, "prompt"),
        "generate": (generate, "prompt"),
        "prompt_features": (lambda p: prompt_features(model, sae, p), "prompt"),
        "compare_interventions": (lambda p: compare_interventions(model, sae, p, [], max_new_tokens=0), "prompt"),
        "dfa": (lambda p: direct_feature_attribution(model, zsae, p, 3), "prompt"),
        "attribute clean": (attribute_clean, "clean"),
        "attribute corrupt": (attribute_corrupt, "corrupt"),
        "patch_effect": (patch, "clean"),
    }


BAD_PROMPTS = {
    "empty text": ("", r"{name}: the prompt is empty"),
    "blank text": ("   ", r"{name}: the prompt is empty"),
    "empty list": ([], r"{name}: the prompt is empty"),
    "empty tensor": (torch.zeros(1, 0, dtype=torch.long), r"{name}: the prompt is empty"),
    "id out of range (tensor)": (torch.tensor([[1, 10**7]]), r"{name}: token id 10000000 is out of range"),
    "negative id (1-D tensor)": (torch.tensor([1, -5]), r"{name}: token id -5 is out of range"),
    "id out of range (list)": ([1, 512], r"{name}: token id 512 is out of range: the vocabulary has 512"),
    "float tensor": (torch.tensor([1.0, 2.5]), r"{name}: token ids must be integers"),
    "float in a list": ([1, 2.5], r"{name}\[1\] must be a whole number"),
    "bool in a list": ([1, True], r"{name}\[1\] must be a whole number"),
    "list of strings": (["the", "value"], r"{name}\[0\] must be a whole number"),
    "3-D tensor": (torch.ones(1, 1, 3, dtype=torch.long), r"{name} must be a 1-D or \[1, T\] tensor"),
    "0-d tensor": (torch.tensor(5), r"{name} must be a 1-D or \[1, T\] tensor"),
    "a number": (5, r"{name} must be text, a list of token ids"),
    "ragged rows": ([[1, 2], [3]], r"{name}: its rows have different lengths"),
    "too long": ([5] * 600, r"{name}: the prompt has 600 tokens, longer than the model's context"),
}


@pytest.mark.parametrize("case", list(BAD_PROMPTS))
def test_bad_prompts_are_named_by_every_function(tiny_model, sae, zsae, case):
    prompt, words = BAD_PROMPTS[case]
    for fn, (call, name) in _prompt_takers(tiny_model, sae, zsae).items():
        with pytest.raises(CircuitError, match=words.format(name=name)):
            call(prompt)


def test_a_batch_is_refused_everywhere_but_run(tiny_model, sae, zsae, ids):
    batch = torch.cat([ids, tiny_model.bridge.to_tokens(OTHER)])  # [2, T]: the guide's to_tokens, two rows
    for fn, (call, name) in _prompt_takers(tiny_model, sae, zsae).items():
        if fn != "run":
            with pytest.raises(CircuitError, match=rf"{name} holds 2 sequences \(shape \[2, {ids.shape[1]}\]\)"):
                call(batch)
            with pytest.raises(CircuitError, match=rf"{name} holds 2 sequences"):
                call(batch.tolist())  # a list of lists is a batch too
    with Spliced(tiny_model, [sae]) as s:  # run takes a batch: every row, as if run alone
        both = s.run(batch)
        rows = [s.run(row) for row in batch]
    assert both.logits.shape[0] == 2 and both.features[sae.name].shape[0] == 2
    for i, row in enumerate(rows):
        assert torch.allclose(both.logits[i], row.logits, atol=1e-4)


def test_one_row_tensors_and_lists_give_the_same_results_as_text(tiny_model, sae, zsae, ids):
    text = prompt_features(tiny_model, sae, PROMPT, top_k=3)
    for p in (ids, ids[0], ids[0].tolist(), ids.tolist(), ids.numpy(), ids[0].numpy()):
        assert prompt_features(tiny_model, sae, p, top_k=3).top == text.top
    with Spliced(tiny_model, [sae]) as s:
        g = s.generate(PROMPT, max_new_tokens=3)
        assert s.generate(ids, max_new_tokens=3).token_ids == g.token_ids
        a = s.attribute(PROMPT, OTHER, METRIC)
        b = s.attribute(ids, tiny_model.bridge.to_tokens(OTHER), METRIC)
        assert torch.allclose(a.features[sae.name], b.features[sae.name])
        assert s.run(ids).logits.shape[0] == 1 and s.run(ids[0]).logits.dim() == 2  # 2-D in: the batch kept
    d = direct_feature_attribution(tiny_model, zsae, ids, 3)
    assert d.pre_activation == direct_feature_attribution(tiny_model, zsae, PROMPT, 3).pre_activation


# ---- the other arguments, function by function -----------------------------------------------------------
def test_prompt_features_arguments(tiny_model, sae):
    _raises(lambda: prompt_features(tiny_model, sae, PROMPT, features=3.7), r"features must be a whole number")
    _raises(lambda: prompt_features(tiny_model, sae, PROMPT, features=[500]), r"features: feature 500 is out of")
    _raises(lambda: prompt_features(tiny_model, sae, PROMPT, top_k=-1), r"top_k must be at least 0, got -1")
    _raises(lambda: prompt_features(tiny_model, sae, PROMPT, top_k=2.5), r"top_k must be a whole number")
    _raises(lambda: prompt_features(tiny_model, "sae", PROMPT), r"sae must be an SAE")
    pf = prompt_features(tiny_model, sae, PROMPT, top_k=2, features=np.int64(3))  # one index, any integer kind
    assert set(pf.acts) == {3} and all(len(row) <= 2 for row in pf.top)


def test_spliced_arguments(tiny_model, sae):
    _raises(lambda: Spliced(tiny_model, ["sae"]), r"saes\[0\] must be an SAE")
    _raises(lambda: Spliced(tiny_model, [sae], error_term="yes"), r"error_term must be True or False")
    with Spliced(tiny_model, sae) as s:  # one SAE is a list of one
        assert list(s.nodes) == [sae.name]
        one = s.run(PROMPT, cache=f"{RESID1}.hook_sae_acts")  # one hook name is a list of one
        assert list(one.cache) == [f"{RESID1}.hook_sae_acts"]
        _raises(lambda: s.run(PROMPT, where=torch.ones(1, 9)), r"where must be a bool tensor")
        _raises(lambda: s.run(PROMPT, where=torch.ones(1, 3, dtype=torch.bool)), r"where has shape \(1, 3\)")
        _raises(lambda: s.run(PROMPT, grad="no"), r"grad must be True or False")
        _raises(lambda: s.add_hook(RESID1, 5), r"must be a function")
        _raises(lambda: s.intervene(5), r"intervene\(\) takes Intervention objects")
        _raises(lambda: s.generate(PROMPT, max_new_tokens=-1), r"max_new_tokens must be at least 0, got -1")
        _raises(lambda: s.generate(PROMPT, max_new_tokens=2.5), r"max_new_tokens must be a whole number")
        _raises(lambda: s.generate(PROMPT, temperature=float("nan")), r"temperature must be a finite number")
        _raises(lambda: s.generate(PROMPT, temperature=-1.0), r"temperature must be at least 0")
        _raises(lambda: s.generate(PROMPT, seed=1.5), r"seed must be a whole number")
        _raises(lambda: s.generate(PROMPT, max_new_tokens=600), r"exceeds the model's context")


def test_run_with_sae_checks_its_tokens_like_run(tiny_model, sae, ids):
    from sae_lab.circuits import run_with_sae

    _raises(lambda: run_with_sae(tiny_model, torch.tensor([[1.0, 2.7]]), sae), r"tokens: token ids must be integers")
    _raises(lambda: run_with_sae(tiny_model, [[1, 10**7]], sae), r"tokens: token id 10000000 is out of range")
    _raises(lambda: run_with_sae(tiny_model, ids, sae, mode="half"), r"mode must be 'reconstruct', 'zero' or 'mean'")
    both = run_with_sae(tiny_model, torch.cat([ids, ids]), sae)  # a batch: every row
    assert both.shape[0] == 2 and torch.allclose(both[0], both[1], atol=1e-5)


def test_logit_diff_arguments(tiny_model, sae):
    def attr(metric):
        with Spliced(tiny_model, [sae]) as s:
            return s.attribute(PROMPT, OTHER, metric)

    _raises(
        lambda: attr(logit_diff(" value", " list", position=100)),
        r"position 100 is out of range for a "
        r"sequence of \d+ tokens",
    )
    _raises(lambda: attr(logit_diff(" value", " list", position=-100)), r"position -100 is out of range")
    _raises(lambda: logit_diff(" value", " list", position=1.5), r"position must be a whole number")
    _raises(lambda: logit_diff("", " list"), r"a is the empty string")
    _raises(lambda: logit_diff(" value", 3), r"b must be a single-token string")
    _raises(lambda: logit_diff(" value", " value"), r"same token")
    _raises(lambda: attr(logit_diff(" value value", " list")), r"a: ' value value' is 2 tokens")
    early = attr(logit_diff(" value", " list", position=3))  # a position inside the prompt: a documented value
    with Spliced(tiny_model, [sae]) as s:
        logits = s.run(PROMPT).logits
    ia, ib = (tiny_model.tokenizer.encode(t, add_special_tokens=False)[0] for t in (" value", " list"))
    assert early.metric_clean == pytest.approx(float(logits[3, ia] - logits[3, ib]), abs=1e-5)


@pytest.mark.parametrize(
    "metric, words",
    [
        (lambda logits: torch.tensor(1.0), r"the metric has no gradient path to the logits"),
        (lambda logits: logits[-1, 5].detach(), r"the metric has no gradient path to the logits"),
        (lambda logits: logits[-1, 5] * float("nan"), r"the metric returned nan, not a finite number"),
        (lambda logits: logits[-1], r"the metric must return a scalar tensor"),
        (5, r"metric must be a function of the logits"),
    ],
)
@pytest.mark.parametrize("method", ["atp", "ig"])
def test_metrics_without_a_gradient_or_a_number_are_named(tiny_model, sae, metric, words, method):
    with Spliced(tiny_model, [sae]) as s:
        _raises(lambda: s.attribute(PROMPT, OTHER, metric, method=method, steps=2), words)


@pytest.mark.parametrize("method", ["atp", "ig"])
def test_a_node_no_gradient_reaches_raises_instead_of_a_zero_estimate(tiny_model, sae, method):
    """A hook that detaches the residual stream after layer 2 cuts every path from the layer-1 SAE: its
    attribution is unknown, not zero (the old code returned zeros)."""
    later = dense_sae(RESID3, seed=3)
    with Spliced(tiny_model, [sae, later]) as s:
        s.add_hook(RESID2, lambda act, hook: act.detach())
        _raises(
            lambda: s.attribute(PROMPT, OTHER, METRIC, method=method, steps=2),
            rf"no gradient reaches the code of SAE '{sae.name}'",
        )
    with Spliced(tiny_model, [sae]) as s:  # a hook that detaches the SAE's own error term
        s.add_hook(f"{RESID1}.hook_sae_error", lambda e, hook: e.detach())
        if method == "atp":
            _raises(
                lambda: s.attribute(PROMPT, OTHER, METRIC), rf"no gradient reaches the error term of SAE '{sae.name}'"
            )


def test_attribution_arguments(tiny_model, sae):
    with Spliced(tiny_model, [sae]) as s:
        _raises(lambda: s.attribute(PROMPT, OTHER, METRIC, steps=0), r"steps must be at least 1, got 0")
        _raises(lambda: s.attribute(PROMPT, OTHER, METRIC, method="ig", steps=2.5), r"steps must be a whole number")
        _raises(lambda: s.attribute(PROMPT, OTHER, METRIC, method="exact"), r"method must be 'atp' or 'ig'")
        _raises(lambda: s.attribute(PROMPT, OTHER, METRIC, per_position="no"), r"per_position must be True or False")
        _raises(lambda: s.attribute(PROMPT, "the list", METRIC), r"same number of tokens")
        attr = s.attribute(PROMPT, OTHER, METRIC)
        _raises(lambda: attr.top(-1), r"n must be at least 1, got -1")
        _raises(lambda: attr.top(2.5), r"n must be a whole number")
        _raises(lambda: validate(s, PROMPT, OTHER, METRIC, attr, n=0), r"n must be at least 1, got 0")
        _raises(lambda: validate(s, PROMPT, OTHER, METRIC, "attr"), r"attribution must be what s.attribute")
        node = {"sae": sae.name, "position": 1, "feature": 3}
        for bad, words in [
            ({**node, "sae": "nope"}, r"nodes\[0\]: SAE 'nope' is not spliced"),
            ({**node, "position": 100}, r"nodes\[0\]\['position'\] 100 is out of range"),
            ({**node, "position": 1.5}, r"nodes\[0\]\['position'\] must be a whole number"),
            ({**node, "feature": 10**6}, r"nodes\[0\]\['feature'\]: feature 1000000 is out of range"),
            ({**node, "feature": -1}, r"nodes\[0\]\['feature'\]: feature -1 is out of range"),
            ({"sae": sae.name}, r"nodes\[0\] must be a dict with 'sae', 'position' and 'feature'"),
        ]:
            _raises(lambda: patch_effect(s, PROMPT, OTHER, METRIC, [bad]), words)
        _raises(lambda: patch_effect(s, PROMPT, OTHER, METRIC, node), r"nodes must be a list")


def test_compare_interventions_arguments(tiny_model, sae):
    iv = Intervention.clamp(sae, [0, 1], 5.0)

    def cmp(**kw):
        return compare_interventions(
            tiny_model, sae, PROMPT, [iv], **(dict(tokens=[" value", " list"], top_n=5, max_new_tokens=0) | kw)
        )

    _raises(lambda: cmp(top_n=10**6), r"top_n must be at most 512 \(the vocabulary has 512 tokens\)")
    _raises(lambda: cmp(top_n=0), r"top_n must be at least 1, got 0")
    _raises(lambda: cmp(top_n=-1), r"top_n must be at least 1, got -1")
    _raises(lambda: cmp(max_new_tokens=-1), r"max_new_tokens must be at least 0")
    _raises(lambda: cmp(tokens=[" value", " value"]), r"tokens: ' value' is given twice")
    _raises(lambda: cmp(tokens=[""]), r"tokens\[0\] is the empty string")
    _raises(lambda: cmp(tokens=[" value value"]), r"tokens\[0\]: ' value value' is 2 tokens")
    _raises(lambda: compare_interventions(tiny_model, sae, PROMPT, [5]), r"interventions\[0\] must be an Intervention")
    _raises(lambda: compare_interventions(tiny_model, "sae", PROMPT, [iv]), r"sae_or_saes must be an SAE")
    one = compare_interventions(tiny_model, sae, PROMPT, iv, tokens=" value", top_n=512, max_new_tokens=0)
    assert list(one["after"]["logits"]) == [" value"] and len(one["after"]["top"]) == 512  # one of each: a list


def test_dfa_arguments(tiny_model, zsae):
    base = direct_feature_attribution(tiny_model, zsae, PROMPT, 3)
    for f in (np.int64(3), torch.tensor(3)):
        assert direct_feature_attribution(tiny_model, zsae, PROMPT, f).pre_activation == base.pre_activation
    _raises(lambda: direct_feature_attribution(tiny_model, zsae, PROMPT, 2.5), r"feature must be a whole number")
    _raises(lambda: direct_feature_attribution(tiny_model, zsae, PROMPT, [3]), r"feature must be a whole number")
    _raises(lambda: direct_feature_attribution(tiny_model, zsae, PROMPT, 96), r"feature: feature 96 is out of range")
    _raises(lambda: direct_feature_attribution(tiny_model, zsae, PROMPT, 3, position=100), r"position 100 is out of")
    _raises(lambda: direct_feature_attribution(tiny_model, zsae, PROMPT, 3, position=-100), r"position -100 is out")
    _raises(lambda: direct_feature_attribution(tiny_model, zsae, PROMPT, 3, position=0.5), r"position must be a whole")
    assert direct_feature_attribution(tiny_model, zsae, PROMPT, 3, position=np.int64(-1)).position == base.position


# ---- the feature database ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def db(tmp_path_factory):
    hist = np.arange(4, dtype="<i8")
    ids, acts = np.array([5, 6, 7], dtype="<i4"), np.array([0.0, 2.5, 0.5], dtype="<f4")
    tables = {
        "features": [(0, 3, 0.3, 1.0, 2.5, 4.0, hist.tobytes(), 1.0), (1, 0, 0.0, 0.0, 0.0, 0.0, hist.tobytes(), 1.0)],
        "examples": [(0, "top", -1, r, 2.5 - r, 41, 1, 9, 8, ids.tobytes(), acts.tobytes()) for r in range(2)],
        "intervals": [(0, 1, 2.0, 4.0, 3)],
        "logits": [(0, 1, 0, 6, 0.9), (0, -1, 0, 5, -0.4), (1, 1, 0, 8, 0.3)],
        "neighbours": [(0, 0, 1, 0.25)],
        "cooccurrence": [(0, 0, 1, 2, 2 / 3)],
        "tokens": [(5, " The"), (6, " Paris"), (7, "."), (8, " New"), (9, " York"), (10, " "), (11, "New")],
    }
    path = write_feature_db(
        tmp_path_factory.mktemp("db") / "f.sqlite", {"sae": "s", "d_sae": 2, "hook_name": "h"}, tables
    )
    with FeatureDB(path) as d:
        yield d


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda db: db.top_examples(0, n=-1), r"n must be at least 0, got -1"),
        (lambda db: db.top_examples(0, n=1.5), r"n must be a whole number"),
        (lambda db: db.top_examples(0, n=True), r"n must be a whole number"),
        (lambda db: db.list_features(limit=-1), r"limit must be at least 0, got -1"),
        (lambda db: db.list_features(offset=-1), r"offset must be at least 0, got -1"),
        (lambda db: db.list_features(limit=2.5), r"limit must be a whole number"),
        (lambda db: db.list_features(descending="no"), r"descending must be True or False"),
        (lambda db: db.list_features(alive_only=1), r"alive_only must be True or False"),
        (lambda db: db.list_features(order=3), r"order must be 'density' or 'id'"),
        (lambda db: db.feature(2), r"feature: feature 2 is out of range: this SAE has 2 features \(0..1\)"),
        (lambda db: db.feature(-1), r"feature: feature -1 is out of range"),
        (lambda db: db.logits(1.0), r"feature must be a whole number"),
        (lambda db: db.feature_page("0"), r"feature must be a whole number"),
        (lambda db: db.neighbours(True), r"feature must be a whole number"),
        (lambda db: db.features_with_logit_token(""), r"token is the empty string"),
        (lambda db: db.features_with_logit(""), r"token is the empty string"),
        (lambda db: db.features_with_example_token(""), r"token is the empty string"),
        (
            lambda db: db.features_with_logit(" New York"),
            r"token ' New York' is not a token of the model's vocabulary: "
            r"it is 2 tokens \[' New', ' York'\]",
        ),
        (lambda db: db.features_with_logit_token(" New York"), r"' New York' is not a token.*2 tokens"),
        (lambda db: db.features_with_example_token("New York"), r"'New York' is not a token.*\['New', ' York'\]"),
        (lambda db: db.features_with_logit("London"), r"token 'London' is not a token of the model's vocabulary; "),
        (lambda db: db.features_with_logit(5), r"token must be a token string"),
        (lambda db: db.features_with_logit(" Paris", top="yes"), r"top must be True or False"),
        (lambda db: db.features_with_logit(" Paris", rank_below=-1), r"rank_below must be at least 0"),
        (lambda db: db.features_with_logit_token("Paris", limit=-1), r"limit must be at least 0"),
        (lambda db: db.features_with_example_token("Paris", limit=-1), r"limit must be at least 0"),
        (lambda db: db.random_alive(seed=-1), r"seed must be at least 0"),
        (lambda db: FeatureDB(db.path, verify="fast"), r"verify must be 'quick' or 'full'"),
    ],
)
def test_feature_db_bad_arguments_are_named(db, call, words):
    with pytest.raises(FeatureQueryError, match=words) as e:
        call(db)
    assert isinstance(e.value, FeatureDBError)


def test_feature_db_counts_of_zero_and_integer_kinds_are_documented_results(db):
    assert db.top_examples(0, n=0) == [] and len(db.top_examples(0, n=1)) == 1 and len(db.top_examples(0)) == 2
    assert db.list_features(limit=0) == [] and len(db.list_features(limit=1)) == 1
    assert db.feature(np.int64(1))["id"] == 1 and db.feature(torch.tensor(0))["id"] == 0
    assert [r["feature"] for r in db.features_with_logit(" New")] == [1]  # one token of the two: its hits
    assert db.features_with_logit(" York") == []  # a token no feature promotes: none, not an error
    assert {r["feature"] for r in db.features_with_logit_token("Paris")} == {0}


# ---- load_sae ----------------------------------------------------------------------------------------------
def test_load_sae_says_what_is_wrong_with_the_path(tmp_path):
    from sae_lab import load_sae
    from sae_lab.configbase import ConfigError

    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    (tmp_path / "sae").mkdir()
    (tmp_path / "sae" / "sae_weights.safetensors").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    for path, words in [
        (tmp_path / "missing", r"missing' does not exist"),
        (tmp_path / "loop", r"loop' is a symbolic link loop"),
        (tmp_path / "broken", r"broken' is a broken symbolic link"),
        (
            tmp_path / "sae" / "sae_weights.safetensors",
            rf"is a file, not an SAE directory: give its directory '{tmp_path / 'sae'}'",
        ),
        (tmp_path / "empty", r"empty' holds no sae_weights.safetensors"),
    ]:
        with pytest.raises(ConfigError, match=words):
            load_sae(path)


# ---- the real embedded model ----------------------------------------------------------------------------------
@pytest.mark.embedded
def test_bad_inputs_on_the_embedded_model(embedded_model):
    """The issue's cases on SmolLM2-135M with the guide's own to_tokens tensors."""
    from sae_lab.saes import SAEConfig, build_sae

    torch.manual_seed(0)
    sae = build_sae(
        SAEConfig(architecture="topk", d_in=576, d_sae=2304, k=32, hook_name="blocks.6.hook_resid_post", name="resid6")
    ).eval()
    m = embedded_model
    text = "The capital of France is"
    one = m.bridge.to_tokens(text)
    two = torch.cat([one, one])
    with Spliced(m, [sae]) as s:
        _raises(lambda: s.generate(two, max_new_tokens=2), r"prompt holds 2 sequences")
        _raises(lambda: s.attribute(two, two, logit_diff(" Paris", " London")), r"clean holds 2 sequences")
        _raises(
            lambda: s.run(torch.tensor([[1, 10**7]])),
            r"token id 10000000 is out of range: the vocabulary has "
            r"49152 ids",
        )
        _raises(
            lambda: s.attribute(text, text, logit_diff(" Paris", " London", position=100)),
            r"position 100 is out of range for a sequence of 6 tokens",
        )
        assert s.generate(one, max_new_tokens=3).token_ids == s.generate(text, max_new_tokens=3).token_ids
    pf = prompt_features(m, sae, torch.tensor([[1, 504, 3575]]), top_k=3)
    assert len(pf.top) == 3 and pf.top == prompt_features(m, sae, [1, 504, 3575], top_k=3).top
    _raises(lambda: prompt_features(m, sae, text, features=3.7), r"features must be a whole number")
    _raises(lambda: Intervention.zero(sae, [-1]), r"feature -1 is out of range: the SAE at blocks.6")
    _raises(lambda: Intervention.clamp(sae, 3, float("nan")), r"value must be a finite number")
    _raises(
        lambda: compare_interventions(m, sae, text, [Intervention.zero(sae, torch.tensor(3))], top_n=10**6),
        r"top_n must be at most 49152",
    )
