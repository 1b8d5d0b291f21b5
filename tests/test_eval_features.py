"""Feature statistics and the database against brute force on the tiny model; resume; pretrained SAEs."""

import json
import sqlite3

import pytest
import torch
from safetensors.torch import save_file

from eval_helpers import HOOK_Z, RESID, T, analyze_cfg, brute_acts, contexts, make_run, one_thread, sae  # noqa: F401
from sae_lab.evaluation import FeatureDB, analyze_run, analyze_sae_dir
from sae_lab.rundir import RunDir


@pytest.fixture(scope="module")
def analysed(tiny_model, tmp_path_factory):
    saes = [sae("topk", RESID, name="resid", k=8), sae("topk", HOOK_Z, name="z", k=8, seed=2)]
    run = make_run(tmp_path_factory.mktemp("an") / "run", saes)
    out = analyze_run(run, analyze_cfg(), model=tiny_model)
    return run, out, {s.cfg.name: s for s in saes}


def _brute(model, cfg, s):
    tokens = contexts(model, cfg)
    _, acts, keep = brute_acts(model, tokens, s.cfg.hook_name)
    with torch.no_grad():
        z = s.encode(acts).clamp_min(0) * keep[..., None]
    return tokens, z.reshape(-1, z.shape[-1])


@pytest.mark.parametrize("name", ["resid", "z"])
def test_statistics_match_a_brute_force_pass(tiny_model, analysed, name):
    run, out, saes = analysed
    cfg = analyze_cfg()
    tokens, z = _brute(tiny_model, cfg, saes[name])
    assert out["status"] == "done" and out["tokens"] == tokens.size
    flat_tokens = tokens.reshape(-1)
    with FeatureDB(run / "saes" / name / "features.sqlite") as db:
        active = (z > 0).sum(0)
        assert db.summary()["n_dead"] == int((active == 0).sum())
        checked = 0
        for f in torch.argsort(active, descending=True)[:12].tolist():
            page = db.feature_page(f)
            col = z[:, f]
            assert page["n_active"] == int(active[f]) and page["max_act"] == pytest.approx(float(col.max()))
            # top examples are the true maxima, with the right windows
            want = col.topk(cfg.top_k).values
            got = [e["value"] for e in page["top_examples"]]
            assert got == pytest.approx(want[want > 0].tolist())
            for e in page["top_examples"]:
                g = e["token_index"]
                assert col[g] == pytest.approx(e["value"]) and e["position"] == g % T and e["context"] == g // T
                lo = g - (g % T) + e["start"]
                assert e["token_ids"] == flat_tokens[lo : lo + len(e["token_ids"])].tolist()
                assert e["acts"] == pytest.approx(col[lo : lo + len(e["acts"])].tolist())
                assert e["tokens"][e["highlight"]] == tiny_model.tokenizer.decode([int(flat_tokens[g])])
            # histogram: exact counts on [0, hist_max) with hist_bins bins
            edges = torch.tensor(page["hist_edges"], dtype=torch.float64)
            v = col[col > 0].double()
            assert edges[-1] > v.max() and edges[-1] / 2 <= v.max()
            want_hist = torch.histc(v, bins=len(edges) - 1, min=0, max=float(edges[-1]))
            assert page["hist_counts"] == want_hist.long().tolist()
            # interval samples lie in their interval; interval counts are exact
            for iv in page["intervals"]:
                inside = (col >= iv["lo"]) & (col < iv["hi"]) & (col > 0)
                assert iv["count"] == int(inside.sum())
                assert len(iv["examples"]) == min(cfg.samples_per_interval, iv["count"])
                assert all(
                    iv["lo"] <= e["value"] < iv["hi"] and col[e["token_index"]] == pytest.approx(e["value"])
                    for e in iv["examples"]
                )
            # co-occurrence counts
            A = (z > 0).float()
            counts = (A[:, f : f + 1] * A).sum(0)
            counts[f] = 0
            for c in page["cooccurring"]:
                assert c["count"] == int(counts[c["feature"]]) and c["fraction"] == pytest.approx(
                    c["count"] / int(active[f])
                )
            assert page["cooccurring"][0]["count"] == int(counts.max())
            checked += 1
        assert checked == 12


def test_logit_effects_and_neighbours_match_the_weights(tiny_model, analysed):
    run, _, saes = analysed
    bridge = tiny_model.bridge
    gamma = bridge.original_model.model.norm.weight.detach()
    W_U = bridge.original_model.lm_head.weight.detach().t()
    for name, s in saes.items():
        d = s.W_dec.detach()
        if name == "z":  # through W_O: o_proj maps the flattened heads to the residual stream
            d = d @ bridge.original_model.model.layers[2].self_attn.o_proj.weight.detach().t()
        effects = (d * gamma) @ W_U
        W = s.W_dec.detach() / s.W_dec.detach().norm(dim=1, keepdim=True)
        cos = W @ W.t()
        cos.fill_diagonal_(-2)
        with FeatureDB(run / "saes" / name / "features.sqlite") as db:
            for f in (0, 7, 100):
                lg = db.logits(f)
                assert [x["token_id"] for x in lg["positive"]] == effects[f].topk(5).indices.tolist()
                assert [x["value"] for x in lg["negative"]] == pytest.approx(
                    effects[f].topk(5, largest=False).values.tolist(), rel=1e-4
                )
                assert [x["feature"] for x in db.neighbours(f)] == cos[f].topk(4).indices.tolist()
            best = lg["positive"][0]
            assert {"feature": 100, "rank": 0} in [
                {"feature": h["feature"], "rank": h["rank"]} for h in db.features_with_logit(best["token"])
            ]


def _dump(path):
    con = sqlite3.connect(path)
    out = {
        t: sorted(con.execute(f"SELECT * FROM {t}").fetchall())
        for t in ("features", "examples", "intervals", "logits", "neighbours", "cooccurrence", "tokens", "meta")
    }
    con.close()
    return out


def test_top_tokens_written_from_the_state_equal_the_sql_derivation(analysed):
    """analyze writes top_tokens from its top-example arrays; it must equal the SQL derivation over `examples`
    that other writers (and version-1 readers) use."""
    from sae_lab.evaluation.feature_db import TOP_TOKENS_SELECT, _register_functions

    run, _, saes = analysed
    for name in saes:
        con = sqlite3.connect(run / "saes" / name / "features.sqlite")
        _register_functions(con)
        derived = sorted(con.execute(TOP_TOKENS_SELECT).fetchall())
        assert sorted(con.execute("SELECT * FROM top_tokens").fetchall()) == derived and len(derived) > 50
        con.close()


def test_an_interrupted_analysis_resumes_to_the_same_database(tiny_model, analysed, tmp_path):
    run, _, saes = analysed
    again = make_run(tmp_path / "again", list(saes.values()))
    stopped = analyze_run(again, analyze_cfg(), model=tiny_model, stop_after_tokens=200)
    assert stopped["status"] == "stopped" and RunDir(again).analyze_checkpoint_path.is_file()
    assert not (again / "saes" / "resid" / "features.sqlite").exists()
    done = analyze_run(again, analyze_cfg(), model=tiny_model)
    assert done["status"] == "done" and not RunDir(again).analyze_checkpoint_path.exists()
    assert done["resumed_from_contexts"] == stopped["contexts"] > 0
    for name in saes:
        a, b = _dump(run / "saes" / name / "features.sqlite"), _dump(again / "saes" / name / "features.sqlite")
        assert a == b


def test_a_checkpoint_of_other_settings_is_not_resumed(tiny_model, analysed, tmp_path):
    run, _, saes = analysed
    again = make_run(tmp_path / "again", [saes["resid"]])
    analyze_run(again, analyze_cfg(), model=tiny_model, stop_after_tokens=200)
    done = analyze_run(again, analyze_cfg(top_k=4), model=tiny_model)  # a different statistic: start over
    with FeatureDB(again / "saes" / "resid" / "features.sqlite") as db:
        assert db.meta["analyze_config"]["top_k"] == 4 and done["resumed_from_contexts"] == 0
        assert (
            len(db.top_examples(int(torch.tensor([f["n_active"] for f in map(db.feature, range(128))]).argmax()))) == 4
        )


def test_a_saelens_directory_is_analysed(tiny_model, tmp_path):
    ref = sae("topk", RESID, seed=5, k=8)
    d = tmp_path / "pretrained"
    d.mkdir()
    save_file(
        {k: getattr(ref, k).detach().contiguous() for k in ("W_enc", "b_enc", "W_dec", "b_dec")},
        str(d / "sae_weights.safetensors"),
    )
    (d / "cfg.json").write_text(
        json.dumps({"architecture": "topk", "d_in": 64, "d_sae": 128, "k": 8, "hook_name": RESID})
    )
    out = analyze_sae_dir(d, tiny_model, analyze_cfg(n_tokens=192))
    _, z = _brute(tiny_model, analyze_cfg(n_tokens=192), ref)
    with FeatureDB(out["databases"]["pretrained"]) as db:
        assert db.summary()["hook_name"] == RESID
        f = int((z > 0).sum(0).argmax())
        assert db.top_examples(f, 1)[0]["value"] == pytest.approx(float(z[:, f].max()))


@pytest.mark.parametrize("cooc_max_active", [64, 3])
def test_cooccurrence_and_top_examples_match_brute_force_on_a_ragged_code(cooc_max_active):
    """Tokens with different numbers of active latents: all pairs when L0 <= cooc_max_active, else the pairs
    among each token's cooc_max_active largest; per-feature top examples equal a dense topk."""
    from sae_lab.evaluation.feature_stats import FeatureStats, top_per_column

    g = torch.Generator().manual_seed(0)
    n, F = 96, 40
    z = torch.rand(n, F, generator=g) * (torch.rand(n, F, generator=g) < torch.rand(n, 1, generator=g) * 0.3)
    stats = FeatureStats(F, analyze_cfg(cooc_max_active=cooc_max_active))
    stats.update(z, torch.ones(n, dtype=torch.bool), torch.zeros(n // 8, 8, dtype=torch.long), 0)
    vals, idx = z.topk(min(cooc_max_active, F), dim=1)
    used = torch.zeros_like(z).scatter(1, idx, (vals > 0).float())  # each token's counted latents
    expect = used.t() @ used
    expect.fill_diagonal_(0)
    assert torch.equal(stats.cooccurrence().double(), expect.double())
    assert (z > 0).sum(1).max() > 3  # the ragged case really exceeds the small cap

    rows, cols = z.nonzero(as_tuple=True)
    top_val, top_row = top_per_column(rows, cols, z[rows, cols], F, 5)
    dense_val, dense_row = z.topk(5, dim=0)
    live = dense_val.t() > 0
    assert torch.equal(top_val[live], dense_val.t()[live]) and (top_val[~live] == -1).all()
    assert torch.equal(z[top_row[live], live.nonzero()[:, 0]], top_val[live])


@pytest.mark.parametrize("width", [49152, 1000, 512])
def test_blocked_topk_equals_topk(width):
    from sae_lab.evaluation.directions import blocked_topk

    x = torch.randn(7, width, generator=torch.Generator().manual_seed(width))
    x[0, 5] = x[0, width - 3] = 50.0  # equal maxima in different blocks: both are in the top k
    for largest in (True, False):
        want_v, want_i = x.topk(10, dim=1, largest=largest)
        got_v, got_i = blocked_topk(x, 10, largest=largest)
        assert torch.equal(got_v, want_v) and torch.equal(x.gather(1, got_i), want_v)


def _reference_tables(s, stats, W_dec, cfg, effects, neighbours, vocab):
    """The tables as the writer built them before the sparse co-occurrence table and the faster writer: the full
    symmetric matrix ranked by one topk, one row per example with masked window blobs, top_tokens left to SQL."""
    import numpy as np

    from sae_lab.evaluation import feature_rows as R

    dense = stats.cooccurrence()
    counts, other = dense.topk(min(cfg.n_cooccurring, dense.shape[1]), dim=1)
    fraction = counts.double() / s["fired"].clamp_min(1).double().unsqueeze(1)
    f, r = np.nonzero((counts > 0).numpy())
    cooc = [(int(a), int(b), int(other[a, b]), int(counts[a, b]), float(fraction[a, b])) for a, b in zip(f, r)]

    def examples(kind, val, idx, ids, acts, feature, interval, rank, T=32):
        for e in range(len(val)):
            ok = ids[e] >= 0
            pos = int(idx[e]) % T
            yield (
                int(feature[e]),
                kind,
                int(interval[e]),
                int(rank[e]),
                float(val[e]),
                int(idx[e]),
                int(idx[e]) // T,
                pos,
                max(pos - cfg.context_left, 0),
                ids[e][ok].astype("<i4").tobytes(),
                acts[e][ok].astype("<f4").tobytes(),
            )

    tf, tr = np.nonzero((s["top_val"] > 0).numpy())
    top = examples(
        "top",
        s["top_val"].numpy()[tf, tr],
        s["top_idx"].numpy()[tf, tr],
        s["top_ids"].numpy()[tf, tr],
        s["top_acts"].numpy()[tf, tr],
        tf,
        np.full(len(tf), -1),
        tr,
    )
    val, order = torch.where(torch.isfinite(s["s_key"]), s["s_val"].double(), -1.0).sort(dim=1, descending=True)
    g, rank = np.nonzero((val >= 0).numpy())
    slot = order.numpy()[g, rank]
    sampled = examples(
        "interval",
        *(s[k].numpy()[g, slot] for k in ("s_val", "s_idx", "s_ids", "s_acts")),
        g // cfg.n_intervals,
        g % cfg.n_intervals,
        rank,
    )
    return {
        "features": R.feature_rows(s, W_dec),
        "examples": [*top, *sampled],
        "intervals": R.interval_rows(s, cfg),
        "logits": R.logit_rows(effects),
        "neighbours": R.neighbour_rows(*neighbours),
        "cooccurrence": cooc,
        "tokens": enumerate(vocab),
    }


def test_the_database_equals_the_reference_writer(tiny_model, tmp_path):
    """write_db (sparse co-occurrence, chunked rows, multi-row inserts, top_tokens from the state, directions on a
    thread) writes the same rows in every table as the straightforward writer, on a code with many tied counts."""
    from sae_lab.evaluation import feature_rows as R
    from sae_lab.evaluation.analyze import write_db
    from sae_lab.evaluation.directions import decoder_neighbours, logit_effects, residual_directions
    from sae_lab.evaluation.feature_db import write_feature_db
    from sae_lab.evaluation.feature_stats import FeatureStats
    from sae_lab.saeref import SAERef

    cfg = analyze_cfg(n_cooccurring=6)
    s_ = sae("topk", RESID, name="ref", d_sae=256, k=8)
    g = torch.Generator().manual_seed(1)
    stats = FeatureStats(256, cfg)
    for b in range(6):  # ragged codes: ties among small co-occurrence counts are frequent
        z = torch.rand(96, 256, generator=g) * (torch.rand(96, 256, generator=g) < torch.rand(96, 1, generator=g) * 0.1)
        stats.update(z, torch.rand(96, generator=g) > 0.1, torch.randint(0, 512, (3, 32), generator=g), b * 96)
    vocab = R.vocabulary(tiny_model.tokenizer, int(tiny_model.bridge.W_U.shape[1]))
    new = write_db(SAERef("new", s_, tmp_path / "new"), stats, tiny_model, cfg, {"n": 1}, vocab)
    s = stats.state()
    effects = logit_effects(residual_directions(s_, tiny_model), tiny_model, cfg.n_logits)
    tables = _reference_tables(s, stats, s_.W_dec, cfg, effects, decoder_neighbours(s_.W_dec, cfg.n_neighbours), vocab)
    with sqlite3.connect(new) as con:
        meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
    (tmp_path / "ref").mkdir()
    ref = write_feature_db(
        tmp_path / "ref" / "features.sqlite",
        {k: v for k, v in meta.items() if k not in ("complete", "schema_version")},
        tables,
    )
    a, b = _dump(new), _dump(ref)
    assert a == b and len(a["cooccurrence"]) > 200 and len(a["examples"]) > 500
    with sqlite3.connect(new) as con:
        assert sorted(con.execute("SELECT * FROM top_tokens")) == sorted(
            sqlite3.connect(ref).execute("SELECT * FROM top_tokens")
        )
