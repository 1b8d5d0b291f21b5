"""What the dashboard calls in the library: the workspace, FeatureDB lists/searches, dictionary matching, the
launch command. On a real (tiny-model) run directory trained, evaluated and analysed by the pipeline."""

import importlib.util
import json
import shlex
import sqlite3

import numpy as np
import pytest
import torch

from sae_lab import load_sae
from sae_lab.dashboard import dashboard_command, is_local_host
from sae_lab.evaluation import FeatureDB, FeatureQueryError
from sae_lab.evaluation.compare import DictionaryMismatchError, match_dictionaries
from sae_lab.saedir import SAEDir
from sae_lab.saes import SAEConfig, build_sae
from sae_lab.workspace import Workspace, WorkspaceError
from synthetic_db import write_synthetic_db


def test_workspace_lists_sae_and_refuses_outside_paths(tiny_run, tmp_path):
    ws = Workspace([tiny_run])
    assert [e.key for e in ws.entries()] == ["run/feature_choice_k8", "run/topk_k8"]
    rows = {r["sae"]: r for r in ws.table()}
    rec = json.loads((tiny_run / "saes" / "topk_k8" / "eval.json").read_text())
    assert rows["topk_k8"]["fvu"] == rec["metrics"]["fvu"] and rows["topk_k8"]["architecture"] == "topk"
    assert rows["feature_choice_k8"]["feature_db"] is True
    curves = ws.curves()
    logged = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert len(curves) == len(logged) and {c["sae"] for c in curves} == {"topk_k8", "feature_choice_k8"}
    assert ws.entry(str(tiny_run), "topk_k8").sae_dir == tiny_run / "saes" / "topk_k8"  # a path to a given dir
    assert ws.model_name(ws.entry("run", "topk_k8")) == str(tiny_run.parent / "tiny_model")
    for bad, msg in (
        (str(tiny_run / ".." / ".."), "outside"),
        ("/etc", "outside"),
        ("../run", "outside"),
        ("nope", "no run named 'nope'"),
    ):
        with pytest.raises(WorkspaceError, match=msg):
            ws.entry(bad, "topk_k8")
    with pytest.raises(WorkspaceError, match="no SAE named 'x/../topk_k8'"):
        ws.entry("run", "x/../topk_k8")
    with pytest.raises(WorkspaceError, match="does not exist"):
        Workspace([tmp_path / "missing"])
    with pytest.raises(WorkspaceError, match="neither a run directory"):
        Workspace([tmp_path])
    sae_dir = Workspace([tiny_run / "saes" / "topk_k8"]).entries()[0]  # a standalone SAE directory
    assert sae_dir.run_dir is None and sae_dir.eval_record()["metrics"]["fvu"] == rec["metrics"]["fvu"]


def test_feature_lists_and_searches_agree_with_the_pages(tiny_run, tmp_path):
    db = FeatureDB(tiny_run / "saes" / "topk_k8" / "features.sqlite")
    dens = [db.feature(i)["density"] for i in range(db.n_features)]
    listed = db.list_features("density", limit=db.n_features)
    assert [r["density"] for r in listed] == sorted(dens, reverse=True)
    assert db.n_alive() == sum(d > 0 for d in dens) and dens[db.random_alive(seed=3)] > 0
    assert [r["id"] for r in db.list_features("id", descending=False, limit=5, offset=2)] == [2, 3, 4, 5, 6]
    # the search index equals a brute-force scan of every feature's top examples
    ex = {i: db.top_examples(i) for i in range(db.n_features)}
    token = ex[int(np.argmax(dens))][0]["tokens"][ex[int(np.argmax(dens))][0]["highlight"]]
    expect = {i for i, es in ex.items() if any(e["tokens"][e["highlight"]] == token for e in es)}
    hits = db.features_with_example_token(token, limit=10_000)
    assert {h["feature"] for h in hits} == expect and expect
    counts = [h["count"] for h in hits]
    assert counts == sorted(counts, reverse=True)
    # a version-1 database (no top_tokens table) gives the same answer by a scan
    old = tmp_path / "v1.sqlite"
    old.write_bytes(db.path.read_bytes())
    con = sqlite3.connect(old)
    meta = json.loads(con.execute("SELECT value FROM meta WHERE key = 'complete'").fetchone()[0])
    del meta["row_counts"]["top_tokens"]
    con.execute("DROP TABLE top_tokens")
    con.execute("UPDATE meta SET value = ? WHERE key = 'complete'", (json.dumps(meta),))
    con.commit(), con.close()
    assert FeatureDB(old).features_with_example_token(token, limit=10_000) == hits
    with pytest.raises(ValueError, match="order must be"):
        db.list_features("max")


def test_logit_search_with_and_without_leading_space(tmp_path):
    db = FeatureDB(write_synthetic_db(tmp_path / "s.sqlite", n_features=64, vocab=2000))
    exact = db.features_with_logit(" Paris")
    assert exact and {r["feature"] for r in db.features_with_logit_token("Paris")} == {r["feature"] for r in exact}
    with pytest.raises(FeatureQueryError, match="'no-such-token' is not a token of the model's vocabulary"):
        db.features_with_example_token("no-such-token")  # said, not an empty list that reads as "no feature"


def _sae(d_in, d_sae, seed):
    torch.manual_seed(seed)
    return build_sae(
        SAEConfig(
            architecture="topk", d_in=d_in, d_sae=d_sae, k=4, hook_name="blocks.0.hook_resid_post", name=f"s{seed}"
        )
    )


def test_matching_recovers_a_permuted_dictionary():
    a, b = _sae(16, 40, 0), _sae(16, 40, 1)
    perm = torch.randperm(40)
    with torch.no_grad():
        b.W_dec.copy_(a.W_dec[perm] * 3.0)  # same directions, permuted and rescaled
        b.W_dec[:5] = torch.randn(5, 16)  # five features with no partner
    m = match_dictionaries(a, b)
    inv = {int(p): j for j, p in enumerate(perm)}
    exact = [(i, j) for i, j, c in zip(m.a, m.b, m.cosine) if c > 0.999]
    assert len(exact) == 35 and all(inv[i] == j for i, j in exact)
    assert m.fraction_above(0.999) == pytest.approx(35 / 40) and list(m.cosine) == sorted(m.cosine, reverse=True)
    assert len(set(m.a)) == len(set(m.b)) == 40
    small = match_dictionaries(_sae(16, 10, 2), a)  # the smaller dictionary is matched completely
    assert len(small.a) == 10 and len(set(small.b)) == 10
    with pytest.raises(DictionaryMismatchError, match="d_in=16.*d_in=8"):
        match_dictionaries(a, _sae(8, 40, 3))


def test_match_real_saes(tiny_run):
    a, b = (load_sae(tiny_run / "saes" / n) for n in ("topk_k8", "feature_choice_k8"))
    m = match_dictionaries(a, b)
    Wa, Wb = a.W_dec / a.W_dec.norm(dim=1, keepdim=True), b.W_dec / b.W_dec.norm(dim=1, keepdim=True)
    cos = (Wa @ Wb.T).detach().numpy()
    assert np.allclose(m.cosine, cos[m.a, m.b], atol=1e-5)
    greedy = cos.max(axis=1).sum()  # an upper bound the one-to-one matching cannot beat
    assert m.cosine.sum() <= greedy + 1e-3 and m.cosine.sum() >= np.trace(cos) - 1e-3


def test_dashboard_command_binds_locally_and_checks_targets(tiny_run, tmp_path):
    cmd, url, warning = dashboard_command([str(tiny_run)], port=8599)
    assert url == "http://127.0.0.1:8599/" and warning is None
    assert "--server.address=127.0.0.1" in cmd and cmd[cmd.index("--") + 1] == str(tiny_run.resolve())
    cmd, url, warning = dashboard_command([str(tiny_run)], host="0.0.0.0", model="embedded")
    assert "0.0.0.0" in warning and "--server.address=0.0.0.0" in cmd and cmd[-2:] == ["--model", "embedded"]
    assert is_local_host("localhost") and is_local_host("127.0.0.2") and is_local_host("::1")
    assert not is_local_host("192.168.1.4")
    with pytest.raises(WorkspaceError, match="does not exist"):
        dashboard_command([str(tmp_path / "nope")])
    with pytest.raises(ValueError, match="not a TCP port"):
        dashboard_command([str(tiny_run)], port=70000)


def test_dashboard_command_names_what_an_install_lacks(monkeypatch, tmp_path):
    """Without the `app` extra, or with the app's files gone, a message that says what to install."""
    sae_dir = str(SAEDir(tmp_path / "s0").save(_sae(8, 16, 0)))
    assert dashboard_command([sae_dir])[0][4].endswith("main.py")  # the installed app is found
    with pytest.raises(ValueError, match=r"dashboard app is missing .*nowhere\.py.*sae-lab\[app\]"):
        dashboard_command([sae_dir], app=tmp_path / "nowhere.py")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "streamlit" else find_spec(n, *a))
    with pytest.raises(ValueError, match=r"needs streamlit, .*`pip install 'sae-lab\[app\]'`"):
        dashboard_command([sae_dir])


def test_main_job_ends_with_the_dashboard_command(tiny_run):
    last = (tiny_run.parent / "report.txt").read_text().splitlines()[-1].strip()
    assert last == f"sae-lab dashboard {tiny_run}"
    cmd, url, _ = dashboard_command(shlex.split(last)[2:])
    assert url == "http://127.0.0.1:8501/" and cmd[-3] == str(tiny_run.resolve())
