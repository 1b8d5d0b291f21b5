"""Feature explanations (sae_lab/explain): the prompts' parsers and scores, the explanations table (migration,
search, kill -9), the OpenAI-compatible client against a local server, bad input, and the real embedded model."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sae_lab.configbase import ConfigError, load_config
from sae_lab.evaluation.feature_db import (
    FeatureDB,
    FeatureDBError,
    FeatureQueryError,
    end_modification,
    write_feature_db,
)
from sae_lab.explain import ExplainConfig, ExplainError, explain_run
from sae_lab.explain.prompts import highlight, parse_explanation, parse_predictions
from sae_lab.explain.scoring import Sample, balanced_accuracy, score_answers
from sae_lab.explain.store import ExplanationStore
from synthetic_db import write_synthetic_db

ROOT = Path(__file__).resolve().parents[1]


# ---- prompts and scores -------------------------------------------------------------------------------


def test_highlight_marks_runs_of_tokens():
    toks = ["a", " b", " c", "\n", " d"]
    assert highlight(toks, lambda i: i in (1, 2)) == "a<< b c>>\\n d"
    assert highlight(toks, lambda i: i in (0, 4)) == "<<a>> b c\\n<< d>>"


def test_parsers():
    assert parse_explanation("thinking...\n[EXPLANATION]: Closing <<brackets>>.") == "Closing brackets."
    assert parse_explanation('"The word of."') == "The word of."  # surrounding quotes dropped
    assert parse_explanation("   \n ") is None and parse_explanation("") is None
    assert parse_explanation("[EXPLANATION]: Dots. Dots. Dots.") == "Dots."
    assert parse_predictions("Sure: [1, 0,1]", 3) == [1, 0, 1]
    assert parse_predictions("[1,0]", 3) is None and parse_predictions("[1,2,0]", 3) is None
    assert parse_predictions("no list", 1) is None


def test_balanced_accuracy_and_unparsed_answers():
    assert balanced_accuracy([True, True, False, False], [1, 0, 0, 0]) == 0.75
    assert balanced_accuracy([True, True], [1, 1]) is None  # one class only: undefined, not 1.0
    samples = [Sample("x", a) for a in (True, False, True, False, True, False)]
    s = score_answers(samples, ["[1,0,1,0]", "garbled"], per_prompt=4)
    assert (s.balanced_accuracy, s.n_contexts, s.n_unparsed) == (1.0, 4, 2)


# ---- the explanations table --------------------------------------------------------------------------


@pytest.fixture
def small_db(tmp_path) -> Path:
    return write_synthetic_db(tmp_path / "features.sqlite", n_features=40, vocab=500)


def _put(path: Path, rows: dict[int, str], explainer: str = "test:x") -> None:
    with ExplanationStore(path) as store:
        for f, text in rows.items():
            store.put(f, explainer, text, text, "v", 3)


def test_search_finds_features_by_the_words_of_their_explanations(small_db):
    with FeatureDB(small_db) as db:  # a database written before explanations existed: readable, none
        assert not db.has_explanations and db.explanations(3) == [] and db.feature_page(3)["explanations"] == []
        with pytest.raises(FeatureDBError, match="sae-lab explain"):
            db.search("bracket")
    _put(small_db, {3: "Closing brackets in code", 7: "Opening brackets", 9: "Names of cities", 12: "closing time"})
    with FeatureDB(small_db, verify="full") as db:  # the sidecar holds the new file's hash
        hits = db.search("closing bracket")
        assert [h["feature"] for h in hits][:1] == [3]  # both words first
        assert {h["feature"] for h in hits} == {3, 7, 12}
        assert [h["feature"] for h in db.search("CITY")] == [9]  # case and stem ('cities')
        assert db.search("zebra") == [] and db.explanations(3)[0]["explanation"] == "Closing brackets in code"
        with pytest.raises(FeatureQueryError, match="no words"):
            db.search("  ?! ")
        assert db.summary()["n_features"] == 40  # the analysis tables are untouched


def test_kill_9_keeps_every_committed_explanation(small_db):
    _put(small_db, {1: "first", 2: "second"})
    code = (
        f"import os, sys; sys.path[:0] = [{str(ROOT)!r}]\n"
        "from sae_lab.explain.store import ExplanationStore\n"
        f"s = ExplanationStore({str(small_db)!r})\n"
        "s.put(3, 'test:x', 'third', 'third', 'v', 3)\n"
        "s.con.execute('PRAGMA cache_size=1'); s.con.execute('BEGIN')\n"
        "s.con.execute(\"UPDATE explanations SET explanation = 'half-written' || hex(randomblob(4000))\")\n"
        's.con.execute("INSERT INTO explanations (feature, explainer, explanation, raw, prompt, n_examples, "\n'
        "              \"created) SELECT id + 100, 'test:y', hex(randomblob(5000)), '', '', 0, 0 FROM features\")\n"
        "os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert small_db.with_name(small_db.name + "-journal").exists()  # the unfinished transaction's journal
    with pytest.raises(FeatureDBError, match="being changed by `sae-lab explain`"):
        FeatureDB(small_db, verify="full")
    with FeatureDB(small_db) as db:  # rolled back: the three committed ones, nothing half-written
        assert {e["feature"]: e["explanation"] for e in db.explanations()} == {1: "first", 2: "second", 3: "third"}
    ExplanationStore(small_db).close()  # a rerun ends by recording the hash again
    FeatureDB(small_db, verify="full").close()


def test_a_newer_explanations_format_is_refused(small_db):
    _put(small_db, {1: "x"})
    import sqlite3

    con = sqlite3.connect(small_db)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'explanations_version'")
    con.commit()
    con.close()
    end_modification(small_db)  # as a newer sae-lab would leave it
    with pytest.raises(FeatureDBError, match="newer format"):
        ExplanationStore(small_db)


# ---- an OpenAI-compatible endpoint, served here -------------------------------------------------------


class FakeEndpoint:
    """A local HTTP server speaking OpenAI chat completions: explanations name the feature's first example
    word; scorers answer all ones; ``mode`` 'empty' answers empty text, 'error' HTTP 500."""

    def __init__(self):
        self.requests: list[dict] = []
        self.mode = "ok"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                if outer.mode == "error":
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"overloaded")
                    return
                last = body["messages"][-1]["content"]
                if outer.mode == "empty":
                    text = ""
                elif last.startswith("Latent explanation"):
                    text = "[" + ",".join("1" for _ in re.findall(r"^Example \d+:", last, re.M)) + "]"
                else:
                    text = f"Looking at it.\n[EXPLANATION]: zebra feature {len(outer.requests)}"
                reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def endpoint():
    e = FakeEndpoint()
    yield e
    e.server.shutdown()


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run (explanations are written into its feature databases)."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def _cfg(*overrides: str) -> ExplainConfig:
    return load_config(
        ExplainConfig, None, ["saes=[topk_k8]", "n_tokens=1024", "n_score=3", "examples_per_prompt=3", *overrides]
    )


def test_endpoint_explains_and_scores(run_copy, endpoint, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sekrit")
    cfg = _cfg(
        "explainer.kind=openai",
        f"explainer.base_url={endpoint.url}",
        "explainer.model=fake-1",
        "explainer.api_key_env=FAKE_KEY",
        "limit=3",
    )
    out = explain_run(run_copy, cfg)["saes"]["topk_k8"]
    assert out["explained"] == out["explained_now"] == out["scored"] == 3
    first = endpoint.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["model"] == "fake-1" and first["auth"] == "Bearer sekrit"
    assert "<<" in first["messages"][-1]["content"]  # the activating tokens are marked
    with FeatureDB(run_copy / "saes" / "topk_k8" / "features.sqlite", verify="full") as db:
        rows = db.explanations()
        assert [r["explainer"] for r in rows] == ["openai:fake-1"] * 3
        for r in rows:  # a scorer that says 'yes' to everything is exactly at chance, on every parsed context
            assert r["detection_n"] == r["fuzzing_n"] == r["detection_random_n"] > 0 and r["n_unparsed"] == 0
            assert r["detection"] in (0.5, None) and r["fuzzing"] == r["detection"] == r["detection_random"]
        assert any(r["detection"] == 0.5 for r in rows)
        assert db.search("zebra")[0]["feature"] in {r["feature"] for r in rows}
    n = len(endpoint.requests)
    again = explain_run(run_copy, cfg)["saes"]["topk_k8"]  # resumed: nothing left to do
    assert again["explained_now"] == again["scored_now"] == 0 and len(endpoint.requests) == n


@pytest.mark.parametrize(
    "mode, message",
    [
        ("unreachable", "cannot reach the endpoint"),
        ("missing_key", "NO_SUCH_KEY_VAR"),
        ("empty", "returned empty text"),
        ("error", "HTTP 500"),
    ],
)
def test_bad_endpoints_say_so_and_keep_what_was_written(run_copy, endpoint, monkeypatch, mode, message):
    ok = ["explainer.kind=openai", f"explainer.base_url={endpoint.url}", "score=false"]
    explain_run(run_copy, _cfg(*ok, "limit=2"))
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    endpoint.mode = mode
    bad = {
        "unreachable": ["explainer.base_url=http://127.0.0.1:9/v1"],
        "missing_key": ["explainer.api_key_env=NO_SUCH_KEY_VAR"],
    }.get(mode, [])
    with pytest.raises(ExplainError, match=message):
        explain_run(run_copy, _cfg(*ok, *bad, "limit=4", "overwrite=true"))
    with FeatureDB(run_copy / "saes" / "topk_k8" / "features.sqlite", verify="full") as db:
        assert len(db.explanations()) == 2  # the earlier ones are intact; the database checks out


def test_cli_bad_input(run_copy, capsys):
    from sae_lab.cli import main

    assert main(["explain", str(run_copy), "explainer.kind=openai"]) == 2
    assert "needs base_url" in capsys.readouterr().err
    assert main(["explain", str(run_copy), "features=[0,100000]", "score=false"]) == 2
    assert "out of range" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="not SAEs of run"):
        explain_run(run_copy, _cfg("saes=[nope]"))


# ---- the real embedded model ------------------------------------------------------------------------


@pytest.mark.embedded
def test_embedded_model_explains_scores_and_search_finds(embedded_run, tmp_path):
    """SmolLM2-135M-Instruct explains and scores two features of a small SAE on its own layer-3 residuals."""
    run = Path(shutil.copytree(embedded_run, tmp_path / "run"))
    cfg = _cfg("limit=2", "n_score=2", "examples_per_prompt=4", "explainer.max_new_tokens=40")
    out = explain_run(run, cfg)["saes"]["topk_k8"]
    assert out["explained"] == out["scored"] == 2 and out["explainer"] == "local:embedded"
    with FeatureDB(run / "saes" / "topk_k8" / "features.sqlite", verify="full") as db:
        rows = [r for r in db.explanations() if r["explainer"] == "local:embedded"]  # the browser test adds its own
        assert len(rows) == 2 and all(r["explanation"].strip() for r in rows)
        for r in rows:
            for m in ("detection", "fuzzing"):  # every context is either scored or counted as unparsed
                assert r[m] is None or 0 <= r[m] <= 1
            judged = sum(r[f"{m}{k}_n"] or 0 for m in ("detection", "fuzzing") for k in ("", "_random"))
            # the same contexts for 2 methods x (own, random explanation): each judged or counted as unparsed
            assert judged + r["n_unparsed"] >= 4 and (judged + r["n_unparsed"]) % 4 == 0
            assert r["scorer"] == "local:embedded" and r["scored"] is not None
        word = max(re.findall(r"[A-Za-z]{4,}", rows[0]["explanation"]), key=len)
        assert rows[0]["feature"] in [h["feature"] for h in db.search(word)]


def test_cli_help_lists_the_explain_keys():
    out = subprocess.run(
        [sys.executable, "-m", "sae_lab", "explain", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0 and "explainer.base_url" in out.stdout and "examples_per_prompt" in out.stdout


def test_write_feature_db_is_unchanged_by_explanations(tmp_path):
    path = write_feature_db(tmp_path / "f.sqlite", {"d_sae": 1}, {"features": [(0, 0, 0.0, 0.0, 0.0, 0.0, b"", 1.0)]})
    with FeatureDB(path) as db:
        assert not db.has_explanations
