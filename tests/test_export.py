"""`sae-lab export`: Neuronpedia, SAEDashboard/SAE-Vis and Parquet exports of feature databases.

Fast tests use small synthetic databases in the real schema; each format is read back and compared with what
`FeatureDB` returns (a round trip: the consumers themselves, SAEDashboard and Neuronpedia, need transformer-lens < 3
and run in their own environment: experiments/check_export_consumers.py, results in BENCHMARKS.md). The embedded
test exports a run analysed on the real model through the CLI.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sae_lab.cli import build_parser
from sae_lab.cli import main as cli
from sae_lab.evaluation.feature_db import FeatureDB, write_feature_db
from sae_lab.export import FORMATS, ExportError, export
from sae_lab.export.records import iter_records
from sae_lab.fileio import atomic_write_text, sha256_file
from synthetic_db import write_synthetic_db

# SAEDashboard 0.8.0's NeuronpediaDashboardFeature.to_dict / NeuronpediaDashboardActivation.to_dict keys, and
# neuronpedia-utils' dataclass fields (Neuronpedia's importer reads these columns).
DASH_FEATURE_KEYS = {
    "feature_index",
    "neuron_alignment_indices",
    "neuron_alignment_values",
    "neuron_alignment_l1",
    "correlated_neurons_indices",
    "correlated_neurons_l1",
    "correlated_neurons_pearson",
    "correlated_features_indices",
    "correlated_features_l1",
    "correlated_features_pearson",
    "neg_str",
    "neg_values",
    "pos_str",
    "pos_values",
    "frac_nonzero",
    "freq_hist_data_bar_values",
    "freq_hist_data_bar_heights",
    "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values",
    "n_prompts_total",
    "n_tokens_in_prompt",
    "dataset",
    "decoder_weights_dist",
    "activations",
    "vector",
}
DASH_ACTIVATION_KEYS = {"bin_min", "bin_max", "bin_contains", "tokens", "values", "qualifying_token_index"}
NP_FEATURE_FIELDS = {
    "modelId",
    "layer",
    "index",
    "creatorId",
    "createdAt",
    "maxActApprox",
    "hasVector",
    "vector",
    "vectorLabel",
    "vectorDefaultSteerStrength",
    "hookName",
    "topkCosSimIndices",
    "topkCosSimValues",
    "neuron_alignment_indices",
    "neuron_alignment_values",
    "neuron_alignment_l1",
    "correlated_neurons_indices",
    "correlated_neurons_pearson",
    "correlated_neurons_l1",
    "correlated_features_indices",
    "correlated_features_pearson",
    "correlated_features_l1",
    "neg_str",
    "neg_values",
    "pos_str",
    "pos_values",
    "frac_nonzero",
    "freq_hist_data_bar_heights",
    "freq_hist_data_bar_values",
    "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values",
    "decoder_weights_dist",
    "sourceSetName",
}
NP_ACTIVATION_FIELDS = {
    "id",
    "tokens",
    "index",
    "layer",
    "modelId",
    "maxValue",
    "maxValueTokenIndex",
    "minValue",
    "values",
    "creatorId",
    "dataSource",
    "dataIndex",
    "dfaValues",
    "dfaTargetIndex",
    "dfaMaxValue",
    "createdAt",
    "lossValues",
    "logitContributions",
    "binMin",
    "binMax",
    "binContains",
    "qualifyingTokenIndex",
    "zIndices",
    "zValues",
}
NP_EXPLANATION_REQUIRED = {"id", "modelId", "layer", "index", "description", "authorId"}
NP_EXPLANATION_FIELDS = NP_EXPLANATION_REQUIRED | {
    "embedding",
    "triggeredById",
    "typeName",
    "explanationModelName",
    "notes",
    "createdAt",
}


@pytest.fixture
def db_path(tmp_path) -> Path:
    return write_synthetic_db(
        tmp_path / "sae" / "features.sqlite",
        n_features=40,
        vocab=500,
        top_k=5,
        n_intervals=4,
        per_interval=2,
        n_rel=6,
        bins=8,
    )


def _with_dead(path: Path) -> Path:
    """Two features: 0 fires (2 top examples, one interval), 1 never fires (no examples, logits or intervals)."""
    ids, acts = np.arange(5, dtype="<i4"), np.array([0, 0, 3.5, 0, 1], dtype="<f4")
    hist = np.array([0, 1, 0, 1], dtype="<i8")
    tables = {
        "features": [
            (0, 2, 0.25, 2.25, 3.5, 4.0, hist.tobytes(), 1.0),
            (1, 0, 0.0, 0.0, 0.0, 0.0, np.zeros(4, "<i8").tobytes(), 1.0),
        ],
        "examples": [
            (0, "top", -1, 0, 3.5, 2, 0, 2, 0, ids.tobytes(), acts.tobytes()),
            (0, "top", -1, 1, 1.0, 4, 0, 4, 0, ids.tobytes(), acts.tobytes()),
            (0, "interval", 3, 0, 3.5, 2, 0, 2, 0, ids.tobytes(), acts.tobytes()),
        ],
        "intervals": [(0, 3, 3.0, 4.0, 1)],
        "logits": [(0, 1, 0, 3, 0.5), (0, -1, 0, 4, -0.25)],
        "neighbours": [(0, 0, 1, 0.1), (1, 0, 0, 0.1)],
        "tokens": [(i, f"t{i}") for i in range(5)],
    }
    meta = {
        "sae": "dead",
        "hook_name": "blocks.2.hook_resid_post",
        "d_in": 8,
        "d_sae": 2,
        "model": {"name": "org/Some-Model", "d_model": 8, "n_layers": 4},
        "analysis_data": {"n_contexts": 3, "context_length": 5, "data": {"source": "pile"}},
    }
    return write_feature_db(path, meta, tables)


def add_explanations(path: Path, rows: list[tuple]) -> None:
    """An explanations table as `sae-lab explain` writes it (its columns), then the sidecar hash updated."""
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE explanations (id INTEGER PRIMARY KEY, feature INTEGER NOT NULL, explainer TEXT NOT NULL,"
        " explanation TEXT NOT NULL, raw TEXT NOT NULL, prompt TEXT NOT NULL, n_examples INTEGER NOT NULL, "
        "created REAL NOT NULL, scorer TEXT, detection REAL, detection_n INTEGER, fuzzing REAL, fuzzing_n "
        "INTEGER, UNIQUE (feature, explainer))"
    )
    con.executemany(
        "INSERT INTO explanations (feature, explainer, explanation, raw, prompt, n_examples, created, "
        "scorer, detection, detection_n, fuzzing, fuzzing_n) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    con.commit()
    con.close()
    atomic_write_text(path.with_name(path.name + ".sha256"), sha256_file(path) + "\n")


def _jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _import_dir(out: Path) -> Path:
    manifest = json.loads((out / "export.json").read_text())
    (info,) = manifest["saes"].values()
    return out / info["directory"] / info["import_dir"]


# ---- the reader ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_records_equal_feature_pages(db_path, batch):
    with FeatureDB(db_path) as db:
        assert list(iter_records(db, batch=batch)) == [db.feature_page(i) for i in range(db.n_features)]
        assert [r["id"] for r in iter_records(db, [30, 2, 17], batch=batch)] == [30, 2, 17]


def test_records_stream_one_batch_at_a_time(db_path):
    """The first record costs one batch of queries, however many features the database has."""
    with FeatureDB(db_path) as db:
        calls = []
        db.con.set_trace_callback(calls.append)
        first = next(iter_records(db, batch=4))
        assert first["id"] == 0
        reads = [c for c in calls if "feature IN (" in c or "id IN (" in c]
        assert len(reads) == 6 and all(c.count("?") == 0 for c in reads)  # six tables, ids bound
        assert all("0,1,2,3)" in c.replace(" ", "") for c in reads)


# ---- Neuronpedia --------------------------------------------------------------------------------------------


def test_neuronpedia_batches_round_trip(db_path, tmp_path):
    out = tmp_path / "np"
    export(db_path.parent, "neuronpedia", out, per_batch=16)
    batches = sorted((out / "dashboards").glob("batch-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    assert len(batches) == 3
    with FeatureDB(db_path) as db:
        feats = [f for p in batches for f in json.loads(p.read_text())["features"]]
        head = json.loads(batches[0].read_text())
        assert {k: head[k] for k in ("model_id", "layer", "sae_set", "sae_id_suffix")} == {
            "model_id": "model",
            "layer": 0,
            "sae_set": "sae",
            "sae_id_suffix": None,
        }
        assert [f["feature_index"] for f in feats] == list(range(40))
        for f in feats:
            page = db.feature_page(f["feature_index"])
            assert set(f) == DASH_FEATURE_KEYS
            assert f["pos_str"] == [t["token"] for t in page["logits"]["positive"]]
            assert f["neg_values"] == pytest.approx([t["value"] for t in page["logits"]["negative"]], abs=1e-5)
            assert f["frac_nonzero"] == page["density"]
            assert f["freq_hist_data_bar_heights"] == page["hist_counts"]
            examples = page["top_examples"] + [e for iv in page["intervals"] for e in iv["examples"]]
            assert len(f["activations"]) == len(examples)
            for a, e in zip(f["activations"], examples):
                assert set(a) == DASH_ACTIVATION_KEYS
                assert a["tokens"] == e["tokens"] and a["qualifying_token_index"] == e["highlight"]
                assert a["values"] == pytest.approx(e["acts"], abs=1e-5)
            tops = f["activations"][: len(page["top_examples"])]
            assert all(
                a["bin_min"] == -1 and a["bin_contains"] == -1 and a["bin_max"] == pytest.approx(page["max_act"])
                for a in tops
            )
            for a, iv in zip(f["activations"][len(tops) :: 2], page["intervals"]):  # synthetic: 2 samples each
                assert (a["bin_min"], a["bin_max"]) == pytest.approx((iv["lo"], iv["hi"]))
                assert a["bin_contains"] == pytest.approx(iv["count"] / page["n_active"], abs=1e-5)


def test_neuronpedia_import_layout(db_path, tmp_path):
    out = tmp_path / "np"
    result = export(db_path, "neuronpedia", out, model_id="gpt2-small", source_set="My SAE", creator_id="u1")
    src = out / "gpt2-small" / "0-my-sae"
    assert _import_dir(out) == src and result["saes"]["sae"]["neuronpedia"]["source_id"] == "0-my-sae"
    for name in ("release", "model", "sourceset", "source"):
        (row,) = [json.loads(line) for line in (src / f"{name}.jsonl").read_text().splitlines()]
        assert row.get("creatorId") == "u1"
    assert json.loads((src / "source.jsonl").read_text())["id"] == "0-my-sae"
    features = [r for p in sorted((src / "features").glob("*.jsonl.gz")) for r in _jsonl_gz(p)]
    activations = [r for p in sorted((src / "activations").glob("*.jsonl.gz")) for r in _jsonl_gz(p)]
    assert not (src / "explanations").exists()  # no explanations table: no folder
    with FeatureDB(db_path) as db:
        assert len(features) == 40 and all(set(r) == NP_FEATURE_FIELDS for r in features)
        assert all(set(r) == NP_ACTIVATION_FIELDS for r in activations)
        assert len({a["id"] for a in activations}) == len(activations)
        for r in features:
            page = db.feature_page(int(r["index"]))
            assert (r["modelId"], r["layer"]) == ("gpt2-small", "0-my-sae")
            assert r["topkCosSimIndices"] == [n["feature"] for n in page["neighbours"]]
        for a in activations:
            assert a["values"][a["maxValueTokenIndex"]] == a["maxValue"] == max(a["values"])
            assert 0 <= a["qualifyingTokenIndex"] < len(a["tokens"])


def test_neuronpedia_dead_feature_and_ids(tmp_path):
    path = _with_dead(tmp_path / "d" / "features.sqlite")
    out = tmp_path / "np"
    export(path, "neuronpedia", out)
    src = out / "some-model" / "2-d"
    (batch,) = (out / "dashboards").glob("*.json")
    alive, dead = json.loads(batch.read_text())["features"]
    assert dead["activations"] == [] and dead["freq_hist_data_bar_heights"] == [] and dead["pos_str"] == []
    assert alive["freq_hist_data_bar_values"] == [0.5, 1.5, 2.5, 3.5] and alive["freq_hist_data_bar_heights"] == [
        0,
        1,
        0,
        1,
    ]
    assert (alive["n_prompts_total"], alive["n_tokens_in_prompt"], alive["dataset"]) == (3, 5, "pile")
    rows = _jsonl_gz(src / "activations" / "batch-0.jsonl.gz")
    assert [r["index"] for r in rows] == ["0", "0", "0"] and rows[0]["maxValue"] == 3.5


def test_neuronpedia_carries_explanations(db_path, tmp_path):
    add_explanations(
        db_path,
        [
            (3, "local:embedded", "closing brackets", "raw", "v1", 12, 1.0, "local:embedded", 0.75, 40, 0.6, 38),
            (7, "local:embedded", "the word Paris", "raw", "v1", 12, 1.0, None, None, None, None, None),
        ],
    )
    out = tmp_path / "np"
    result = export(db_path, "neuronpedia", out)
    assert result["saes"]["sae"]["explanations"] == 2
    rows = _jsonl_gz(_import_dir(out) / "explanations" / "batch-0.jsonl.gz")
    assert [(r["index"], r["description"]) for r in rows] == [("3", "closing brackets"), ("7", "the word Paris")]
    assert all(NP_EXPLANATION_REQUIRED <= set(r) <= NP_EXPLANATION_FIELDS for r in rows)
    notes = json.loads(rows[0]["notes"])
    assert notes["detection"] == 0.75 and notes["fuzzing_n"] == 38 and notes["explainer"] == "local:embedded"
    assert "detection" not in json.loads(rows[1]["notes"])  # not scored: no score


# ---- SAEDashboard / SAE-Vis ---------------------------------------------------------------------------------


def _parse_group_title(title: str) -> tuple[float, float, float]:
    """The bin SAEDashboard's Neuronpedia converter reads from a SAE-Vis sequence group title."""
    if "TOP ACTIVATIONS" in title:
        return -1, float(title.split(" = ")[-1]), -1
    first, second = title.split("<br>")
    return float(first.split(" ")[1]), float(first.split(" ")[-1]), float(second.split(" ")[-1].rstrip("%")) / 100


def test_saedashboard_round_trip(db_path, tmp_path):
    out = tmp_path / "vis"
    export(db_path.parent, "saedashboard", out, features="0:5,30")
    data = json.loads((out / "sae_vis_data.json").read_text())
    assert set(data) == {"feature_data_dict", "feature_stats"}
    assert list(data["feature_data_dict"]) == ["0", "1", "2", "3", "4", "30"]
    with FeatureDB(db_path) as db:
        for key, fd in data["feature_data_dict"].items():
            page = db.feature_page(int(key))
            assert set(fd) == {
                "feature_tables_data",
                "acts_histogram_data",
                "logits_table_data",
                "logits_histogram_data",
                "sequence_data",
                "prompt_data",
                "dfa_data",
                "decoder_weights_data",
            }
            assert fd["logits_table_data"]["top_token_ids"] == [t["token_id"] for t in page["logits"]["positive"]]
            assert fd["acts_histogram_data"]["bar_heights"] == page["hist_counts"]
            assert float(fd["acts_histogram_data"]["title"].split(" = ")[1].rstrip("%")) == pytest.approx(
                100 * page["density"], abs=1e-3
            )
            top, *intervals = fd["sequence_data"]["seq_group_data"]
            assert _parse_group_title(top["title"]) == pytest.approx((-1, page["max_act"], -1), abs=1e-3)
            assert [s["token_ids"] for s in top["seq_data"]] == [e["token_ids"] for e in page["top_examples"]]
            assert [s["qualifying_token_index"] for s in top["seq_data"]] == [
                e["highlight"] for e in page["top_examples"]
            ]
            for group, iv in zip(intervals, reversed(page["intervals"])):
                lo, hi, share = _parse_group_title(group["title"])
                assert (lo, hi) == pytest.approx((iv["lo"], iv["hi"]), abs=1e-3)
                assert share == pytest.approx(iv["count"] / page["n_active"], abs=1e-5)
                assert [s["feat_acts"] for s in group["seq_data"]] == [
                    pytest.approx(e["acts"], abs=1e-4) for e in iv["examples"]
                ]
        assert data["feature_stats"]["max"] == pytest.approx([db.feature(i)["max_act"] for i in (0, 1, 2, 3, 4, 30)])


# ---- Parquet ------------------------------------------------------------------------------------------------


def test_parquet_tables(db_path, tmp_path):
    out = tmp_path / "pq"
    export(db_path, "parquet", out, batch=16)
    features = pq.read_table(out / "features.parquet").to_pylist()
    examples = pq.read_table(out / "examples.parquet").to_pylist()
    logits = pq.read_table(out / "logits.parquet").to_pylist()
    assert pq.ParquetFile(out / "examples.parquet").metadata.num_row_groups == 3  # 40 features, 16 per group
    meta = json.loads(pq.read_schema(out / "features.parquet").metadata[b"sae_lab"])
    assert meta["hook_name"] == "blocks.0.hook_resid_post"
    with FeatureDB(db_path) as db:
        for row in features:
            page = db.feature_page(row["feature"])
            assert (row["n_active"], row["density"], row["max_act"], row["hist"]) == (
                page["n_active"],
                page["density"],
                page["max_act"],
                page["hist_counts"],
            )
            assert row["bottom_logit_tokens"] == [t["token"] for t in page["logits"]["negative"]]
            assert row["cooccurring"] == [c["feature"] for c in page["cooccurring"]]
            top = page["top_examples"][0]
            assert row["top_token"] == top["tokens"][top["highlight"]]
        count = {t: db.con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("examples", "logits")}
        assert (len(examples), len(logits)) == (count["examples"], count["logits"])
        ex = [e for e in examples if e["feature"] == 9 and e["kind"] == "interval"]
        want = [e for iv in db.interval_examples(9) for e in iv["examples"]]
        assert [e["tokens"] for e in ex] == [e["tokens"] for e in want]
        assert [e["acts"] for e in ex] == [pytest.approx(e["acts"]) for e in want]
    assert "explanation" not in features[0]


def test_parquet_explanations(db_path, tmp_path):
    add_explanations(db_path, [(5, "openai:m", "dates", "raw", "v1", 8, 2.0, "openai:m", 0.9, 10, 0.8, 12)])
    out = tmp_path / "pq"
    export(db_path, "parquet", out)
    features = pq.read_table(out / "features.parquet").to_pylist()
    assert [r["explanation"] for r in features if r["explanation"]] == ["dates"] and features[5]["explanation"]
    (row,) = pq.read_table(out / "explanations.parquet").to_pylist()
    assert (row["feature"], row["explanation"], row["detection"], row["fuzzing_n"]) == (5, "dates", 0.9, 12)


# ---- runs, output directories and bad input -----------------------------------------------------------------


def _fake_run(root: Path, names: list[str], analysed: list[str]) -> Path:
    run = root / "run"
    (run / "saes").mkdir(parents=True)
    (run / "config.yaml").write_text("model: {name: embedded}\n")
    for n in names:
        (run / "saes" / n).mkdir()
        (run / "saes" / n / "cfg.json").write_text("{}")
        if n in analysed:
            write_synthetic_db(
                run / "saes" / n / "features.sqlite",
                n_features=4,
                vocab=50,
                top_k=2,
                n_intervals=2,
                per_interval=1,
                n_rel=2,
                bins=4,
            )
    return run


def test_run_exports_every_sae_into_its_folder(tmp_path):
    run = _fake_run(tmp_path, ["a", "b"], ["a", "b"])
    out = tmp_path / "out"
    out.mkdir()  # an existing empty directory is fine
    assert cli(["export", str(run), str(out), "--to", "parquet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "export.json"]
    assert pq.read_table(out / "b" / "features.parquet").num_rows == 4
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["format"] == "parquet" and set(manifest["saes"]) == {"a", "b"}


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_db", "run `sae-lab analyze"),
        ("run_missing_db", "SAE(s) ['b'] have no feature database"),
        ("not_empty", "exists and is not empty"),
        ("out_is_file", "exists and is a file"),
        ("nothing", "does not exist"),
        ("not_sae", "neither a run directory"),
        ("bad_features", "neither an id"),
        ("out_of_range", "out of range"),
        ("empty_selection", "selects no feature"),
        ("option", "do not apply to format 'saedashboard'"),
    ],
)
def test_bad_input_is_named(tmp_path, capsys, db_path, case, message):
    sae, out, extra = db_path.parent, tmp_path / "out", []
    if case == "missing_db":
        sae = tmp_path / "bare"
        sae.mkdir()
        (sae / "cfg.json").write_text("{}")
    elif case == "run_missing_db":
        sae = _fake_run(tmp_path, ["a", "b"], ["a"])
    elif case == "not_empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "out_is_file":
        out.write_text("x")
    elif case == "nothing":
        sae = tmp_path / "nope"
    elif case == "not_sae":
        sae = tmp_path / "plain"
        sae.mkdir()
    extra = {
        "bad_features": ["--features", "a-b"],
        "out_of_range": ["--features", "0:3,40"],
        "empty_selection": ["--features", "5:5"],
        "option": ["--model-id", "x"],
    }.get(case, [])
    assert cli(["export", str(sae), str(out), "--to", "saedashboard", *extra]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if case == "not_empty":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    elif case != "out_is_file":
        assert not out.exists()


def test_unknown_format(db_path, tmp_path, capsys):
    with pytest.raises(ExportError, match="unknown export format 'csv'; choose one of neuronpedia, saedashboard"):
        export(db_path, "csv", tmp_path / "o")
    with pytest.raises(SystemExit) as e:
        cli(["export", str(db_path), str(tmp_path / "o"), "--to", "csv"])
    assert e.value.code == 2 and "invalid choice: 'csv'" in capsys.readouterr().err
    choices = next(
        a for a in build_parser()._subparsers._group_actions[0].choices["export"]._actions if a.dest == "to"
    ).choices
    assert tuple(choices) == FORMATS


def test_interrupted_export_leaves_nothing(db_path, tmp_path, monkeypatch):
    import sae_lab.export.neuronpedia as N

    calls = []
    real = N._write_batch

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(N, "_write_batch", failing)
    with pytest.raises(KeyboardInterrupt):
        export(db_path, "neuronpedia", tmp_path / "out", per_batch=8)
    assert len(calls) == 2 and not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]  # no temporary directory left either


# ---- the real model -----------------------------------------------------------------------------------------


@pytest.mark.embedded
def test_export_embedded_run(embedded_run, tmp_path):
    """A run trained and analysed on the real embedded model, exported in every format through the CLI: each
    activating token's value is the example's value, and the Neuronpedia rows name the real model and hook."""
    for fmt in FORMATS:
        assert cli(["export", str(embedded_run), str(tmp_path / fmt), "--to", fmt, "--features", "0:64"]) == 0
    manifest = json.loads((tmp_path / "neuronpedia" / "export.json").read_text())
    assert len(manifest["saes"]) == 2
    for name, info in manifest["saes"].items():
        src = tmp_path / "neuronpedia" / name / info["import_dir"]
        assert info["import_dir"] == f"smollm2-135m-instruct/3-{name.replace('_', '-')}"
        db = FeatureDB(embedded_run / "saes" / name / "features.sqlite")
        features = [r for p in (src / "features").glob("*.gz") for r in _jsonl_gz(p)]
        activations = [r for p in (src / "activations").glob("*.gz") for r in _jsonl_gz(p)]
        assert len(features) == 64 and all(r["hookName"] == "blocks.3.hook_resid_post" for r in features)
        alive = [r for r in features if r["frac_nonzero"] > 0]
        assert alive and len(activations) >= len(alive)
        for r in alive[:10]:
            page = db.feature_page(int(r["index"]))
            assert r["pos_str"] == [t["token"] for t in page["logits"]["positive"]] and r["pos_str"]
            rows = [a for a in activations if a["index"] == r["index"]]
            for a, e in zip(rows, page["top_examples"]):
                assert a["tokens"] == e["tokens"] and "".join(a["tokens"]).strip()
                assert a["values"][a["qualifyingTokenIndex"]] == pytest.approx(e["value"], abs=1e-4)
        vis = json.loads((tmp_path / "saedashboard" / name / "sae_vis_data.json").read_text())
        assert len(vis["feature_data_dict"]) == 64
        table = pq.read_table(tmp_path / "parquet" / name / "features.parquet").to_pylist()
        assert [r["max_act"] for r in table] == [db.feature(i)["max_act"] for i in range(64)]
        db.close()
