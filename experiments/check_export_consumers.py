"""Open sae-lab's exports with their consumers' own code (run in a separate environment that has them).

SAEDashboard needs transformer-lens < 3, sae-lab needs 4, so this script does not import sae_lab: it reads the
export directories that ``sae-lab export`` wrote, with SAEDashboard's classes:

1. ``--neuronpedia DIR`` (``sae-lab export ... --to neuronpedia DIR``):
   a. every ``dashboards/batch-*.json`` builds SAEDashboard's ``NeuronpediaDashboardBatch`` (its constructors take
      each feature and activation dict as keyword arguments: an unknown key fails) and ``to_dict()`` gives back
      the file exactly (a missing key would come back as its default and differ);
   b. SAEDashboard's own converter to Neuronpedia's import layout (``export_neuronpedia_dashboards``; from the
      installed package or ``--neuronpedia-export-py``, the file from its repository) runs on our batches, and
      its rows equal the rows sae-lab wrote, field by field (ids and timestamps aside; ``topkCosSim*``, which
      the batch format cannot carry, is compared separately);
   c. every row of the import layout builds neuronpedia-utils' dataclasses (``--neuronpedia-db-models DIR``, the
      ``db_models`` folder of Neuronpedia's repository): Feature, Activation, Explanation, Source, SourceSet,
      SourceRelease, Model.
2. ``--saedashboard DIR`` (``sae-lab export ... --to saedashboard DIR``): ``SaeVisData.load_json`` reads
   ``sae_vis_data.json`` into SAEDashboard's classes, and ``save_feature_centric_vis`` renders the first
   ``--html-features`` features to ``--html`` with the model's tokenizer (``--tokenizer``, a directory or name).
3. ``--parquet DIR`` (``sae-lab export ... --to parquet DIR``): DuckDB queries the tables (a join of features and
   examples, the logits' long form against the features' lists) and pandas reads them.

Exits 1 on the first failed check. Usage (commands in BENCHMARKS.md, "Export"):
    /work/venv-saedash/bin/python experiments/check_export_consumers.py --neuronpedia NP --saedashboard SV ...
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import re
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

IGNORED = {"id", "createdAt", "updatedAt"}


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses with postponed annotations look their module up
    spec.loader.exec_module(module)
    return module


def read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def check(condition: bool, message: str) -> None:
    if not condition:
        print(f"FAIL: {message}")
        sys.exit(1)


def export_dirs(root: Path) -> list[tuple[Path, dict]]:
    """(directory, per-SAE manifest entry) of each SAE in an export."""
    manifest = json.loads((root / "export.json").read_text())
    return [(root / info["directory"], info) for info in manifest["saes"].values()]


# ---- Neuronpedia -------------------------------------------------------------------------------------------


def check_dashboard_batches(directory: Path) -> int:
    from sae_dashboard.neuronpedia.neuronpedia_dashboard import NeuronpediaDashboardBatch

    n = 0
    for path in sorted((directory / "dashboards").glob("batch-*.json")):
        data = json.loads(path.read_text())
        batch = NeuronpediaDashboardBatch(**data)
        back = json.loads(json.dumps(batch.to_dict()))
        check(back == data, f"{path}: NeuronpediaDashboardBatch(**file).to_dict() differs from the file")
        n += len(batch.features)
    print(f"  a. {n} features in SAEDashboard's NeuronpediaDashboardBatch: round trip exact")
    return n


def saedashboard_exporter(path: str | None):
    try:
        from sae_dashboard.neuronpedia import neuronpedia_export  # newer SAEDashboard releases

        return neuronpedia_export
    except ImportError:
        if path is None:
            return None
        return load_module(Path(path), "neuronpedia_export")


def compare_with_saedashboard_converter(directory: Path, info: dict, module) -> None:
    np_ids = info["neuronpedia"]
    ours = directory / info["import_dir"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = module.NeuronpediaExportConfig(
            saedashboard_output_dir=str(directory / "dashboards"),
            exports_dir=tmp,
            creator_name=np_ids["creator_name"],
            creator_id=np_ids["creator_id"],
            release_id=np_ids["release"],
            release_title="",
            url="",
            model_name=np_ids["model_id"],
            neuronpedia_source_set_id=np_ids["source_set"],
            neuronpedia_source_set_description="",
            hf_weights_repo_id="",
            hf_weights_path="",
            hook_point=re.sub(r"^blocks\.\d+\.", "", info["hook_name"]),
            layer_num=np_ids["layer"],
            prompts_huggingface_dataset_path="",
            n_prompts_total=0,
            n_tokens_in_prompt=0,
        )
        theirs = Path(module.export_neuronpedia_dashboards(cfg))
        check(theirs.name == ours.name, f"source id: SAEDashboard {theirs.name}, sae-lab {ours.name}")
        n_rows = 0
        for kind in ("features", "activations"):
            for path in sorted((theirs / kind).glob("*.jsonl.gz")):
                a, b = read_jsonl_gz(path), read_jsonl_gz(ours / kind / path.name)
                check(len(a) == len(b), f"{kind}/{path.name}: {len(a)} rows from SAEDashboard, {len(b)} from sae-lab")
                for x, y in zip(a, b):
                    check(set(x) == set(y), f"{kind}: columns differ: {sorted(set(x) ^ set(y))}")
                    x["index"] = str(x["index"])  # SAEDashboard keeps the int; the Neuron column is text
                    skip = IGNORED | ({"topkCosSimIndices", "topkCosSimValues"} if kind == "features" else set())
                    diff = [k for k in x if k not in skip and x[k] != y[k]]
                    check(
                        not diff,
                        f"{kind}/{path.name} feature {y['index']}: fields differ {diff}: "
                        f"{[(x[k], y[k]) for k in diff][:2]}",
                    )
                    n_rows += 1
            check(
                sorted(p.name for p in (theirs / kind).glob("*")) == sorted(p.name for p in (ours / kind).glob("*")),
                f"{kind}: files differ",
            )
        for meta in ("release", "model", "sourceset", "source"):
            x, y = (json.loads((d / f"{meta}.jsonl").read_text()) for d in (theirs, ours))
            check(set(x) == set(y), f"{meta}.jsonl: columns differ: {sorted(set(x) ^ set(y))}")
    print(
        f"  b. SAEDashboard's converter on our batches: {n_rows} feature/activation rows equal ours "
        f"(ids, timestamps and topkCosSim aside); metadata columns equal"
    )


def check_db_models(directory: Path, info: dict, models_dir: Path) -> None:
    classes = {
        name: getattr(load_module(models_dir / f"{file}.py", f"np_{file}"), name)
        for name, file in (
            ("Feature", "feature"),
            ("Activation", "activation"),
            ("Explanation", "explanation"),
            ("Source", "source"),
            ("SourceSet", "source_set"),
            ("SourceRelease", "source_release"),
            ("Model", "model"),
        )
    }
    ours = directory / info["import_dir"]
    counts = {}
    for kind, name in (("features", "Feature"), ("activations", "Activation"), ("explanations", "Explanation")):
        rows = [r for p in sorted((ours / kind).glob("*.jsonl.gz")) for r in read_jsonl_gz(p)]
        for r in rows:
            classes[name](**r)
        counts[name] = len(rows)
    for file, name in (
        ("source", "Source"),
        ("sourceset", "SourceSet"),
        ("release", "SourceRelease"),
        ("model", "Model"),
    ):
        classes[name](**json.loads((ours / f"{file}.jsonl").read_text()))
    expected = info.get("explanations", 0)
    check(counts["Explanation"] == expected, f"{counts['Explanation']} explanation rows, manifest says {expected}")
    print(f"  c. neuronpedia-utils dataclasses accept every row: {counts} + source, sourceset, release, model")


# ---- SAE-Vis ----------------------------------------------------------------------------------------------


def check_sae_vis(directory: Path, info: dict, tokenizer: str | None, html: Path | None, n_html: int) -> None:
    from sae_dashboard.components import SequenceData
    from sae_dashboard.components_config import (
        ActsHistogramConfig,
        FeatureTablesConfig,
        LogitsHistogramConfig,
        LogitsTableConfig,
        SequencesConfig,
    )
    from sae_dashboard.data_writing_fns import save_feature_centric_vis
    from sae_dashboard.feature_data import FeatureData
    from sae_dashboard.layout import Column, SaeVisLayoutConfig
    from sae_dashboard.sae_vis_data import SaeVisConfig, SaeVisData

    hints = info["render_hints"]
    path = directory / info["file"]
    raw = json.loads(path.read_text())
    layout = SaeVisLayoutConfig(
        columns=[
            Column(FeatureTablesConfig()),
            Column(
                ActsHistogramConfig(), LogitsTableConfig(n_rows=hints["logits_table_rows"]), LogitsHistogramConfig()
            ),
            Column(
                SequencesConfig(
                    stack_mode="stack-none",
                    buffer=tuple(hints["buffer"]),
                    top_acts_group_size=hints["top_acts_group_size"],
                    n_quantiles=hints["n_quantiles"],
                    quantile_group_size=hints["quantile_group_size"],
                )
            ),
        ],
        height=750,
    )
    cfg = SaeVisConfig(
        hook_point=hints["hook_point"],
        features=[int(k) for k in raw["feature_data_dict"]],
        feature_centric_layout=layout,
    )
    model = None
    if tokenizer:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        file = Path(tokenizer) / "tokenizer.json"  # a tokenizer saved by a newer transformers: read the file itself
        tok = (
            PreTrainedTokenizerFast(tokenizer_file=str(file))
            if file.is_file()
            else AutoTokenizer.from_pretrained(tokenizer)
        )
        model = SimpleNamespace(tokenizer=tok)
    data = SaeVisData.load_json(path, cfg=cfg, model=model, encoder=None)
    fd = data.feature_data_dict
    check(len(fd) == info["features"], f"{len(fd)} features loaded, {info['features']} exported")
    first = next(iter(fd))
    check(isinstance(first, int) and isinstance(fd[first], FeatureData), "feature_data_dict is not {int: FeatureData}")
    seqs = fd[first].sequence_data.seq_group_data[0].seq_data
    check(all(isinstance(s, SequenceData) for s in seqs), "sequences are not SequenceData")
    raw_first = raw["feature_data_dict"][str(first)]["sequence_data"]["seq_group_data"][0]["seq_data"]
    check([s.token_ids for s in seqs] == [s["token_ids"] for s in raw_first], "token ids changed on loading")
    print(
        f"  SaeVisData.load_json: {len(fd)} FeatureData, e.g. feature {first}: "
        f"{len(fd[first].sequence_data.seq_group_data)} sequence groups"
    )
    if html is not None and model is not None:
        alive = [
            i
            for i, f in fd.items()
            if f.sequence_data.seq_group_data[0].seq_data
            and len(f.logits_table_data.bottom_logits) >= hints["logits_table_rows"]
        ][:n_html]
        save_feature_centric_vis(data, html, include_only=alive)
        text = html.read_text()
        top = fd[alive[0]].sequence_data.seq_group_data[0].seq_data[0]
        word = model.tokenizer.convert_ids_to_tokens(top.token_ids[top.qualifying_token_index])
        check("DASHBOARD_DATA" in text and all(f'"{i}"' in text for i in alive), f"{html} lacks the features {alive}")
        print(
            f"  save_feature_centric_vis: {html} ({html.stat().st_size / 1e6:.1f} MB, features {alive}; "
            f"feature {alive[0]}'s top example fires on {word!r})"
        )


# ---- Parquet -----------------------------------------------------------------------------------------------


def check_parquet(directory: Path, info: dict) -> None:
    import duckdb
    import pandas as pd

    f, e, lg = (str(directory / f"{k}.parquet") for k in ("features", "examples", "logits"))
    n, alive = duckdb.sql(f"SELECT COUNT(*), COUNT(*) FILTER (WHERE n_active > 0) FROM '{f}'").fetchall()[0]
    check(n == info["rows"]["features"], f"DuckDB counts {n} features, manifest {info['rows']['features']}")
    joined = duckdb.sql(
        f"SELECT f.feature, f.max_act, MAX(e.value) FROM '{f}' f JOIN '{e}' e USING (feature) "
        "WHERE e.kind = 'top' GROUP BY ALL HAVING abs(f.max_act - MAX(e.value)) > 1e-3"
    ).fetchall()
    check(not joined, f"max_act differs from the best top example for features {joined[:3]}")
    lists = duckdb.sql(
        f"SELECT feature, list(token ORDER BY rank) FROM '{lg}' WHERE sign = 1 GROUP BY feature "
        f"EXCEPT SELECT feature, top_logit_tokens FROM '{f}'"
    ).fetchall()
    check(not lists, f"logits.parquet disagrees with features.parquet's top_logit_tokens: {lists[:2]}")
    frames = {k: pd.read_parquet(directory / f"{k}.parquet") for k in ("features", "examples", "logits")}
    check(len(frames["examples"]) == info["rows"]["examples"], "pandas reads another number of examples")
    print(
        f"  DuckDB {duckdb.__version__}: {n} features ({alive} alive), features x examples join and logits long "
        f"form consistent; pandas {pd.__version__} reads {', '.join(f'{k} {len(v)}' for k, v in frames.items())}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--neuronpedia", type=Path, help="an export directory written with --to neuronpedia")
    p.add_argument("--saedashboard", type=Path, help="an export directory written with --to saedashboard")
    p.add_argument("--parquet", type=Path, help="an export directory written with --to parquet")
    p.add_argument(
        "--neuronpedia-export-py",
        help="SAEDashboard's sae_dashboard/neuronpedia/neuronpedia_export.py (when the installed release lacks it)",
    )
    p.add_argument(
        "--neuronpedia-db-models",
        type=Path,
        help="Neuronpedia's utils/neuronpedia-utils/neuronpedia_utils/db_models directory",
    )
    p.add_argument("--tokenizer", help="tokenizer directory or name for rendering the SAE-Vis HTML")
    p.add_argument("--html", type=Path, help="render the SAE-Vis feature-centric HTML here")
    p.add_argument("--html-features", type=int, default=5)
    args = p.parse_args()
    import sae_dashboard

    print(f"SAEDashboard {getattr(sae_dashboard, '__version__', '?')} from {Path(sae_dashboard.__file__).parent}")
    if args.neuronpedia:
        converter = saedashboard_exporter(args.neuronpedia_export_py)
        for directory, info in export_dirs(args.neuronpedia):
            print(f"neuronpedia export {directory}:")
            check_dashboard_batches(directory)
            if converter is not None:
                compare_with_saedashboard_converter(directory, info, converter)
            else:
                print("  b. skipped: no neuronpedia_export module (pass --neuronpedia-export-py)")
            if args.neuronpedia_db_models:
                check_db_models(directory, info, args.neuronpedia_db_models)
            else:
                print("  c. skipped: pass --neuronpedia-db-models")
    if args.saedashboard:
        for directory, info in export_dirs(args.saedashboard):
            print(f"saedashboard export {directory}:")
            check_sae_vis(directory, info, args.tokenizer, args.html, args.html_features)
    if args.parquet:
        for directory, info in export_dirs(args.parquet):
            print(f"parquet export {directory}:")
            check_parquet(directory, info)
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
