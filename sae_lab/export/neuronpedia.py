"""Neuronpedia export: the dashboard batches SAEDashboard's ``NeuronpediaRunner`` writes, and the directory that
Neuronpedia's importer reads (its exports layout), from one feature database.

Layout (one SAE; field-by-field mapping in README.md here)::

    dashboards/batch-<n>.json          SAEDashboard's NeuronpediaDashboardBatch: {model_id, layer, sae_set,
                                       sae_id_suffix, features: [{feature_index, pos_str, ..., activations}]}
    <model_id>/<source_id>/            what Neuronpedia's admin import reads (README.md: "Load exports"):
        release.jsonl model.jsonl sourceset.jsonl source.jsonl
        features/batch-<n>.jsonl.gz    one Neuron row per feature (logits, density, histogram, cosine neighbours)
        activations/batch-<n>.jsonl.gz one Activation row per example (tokens, values, bin of the example)
        explanations/batch-<n>.jsonl.gz  one Explanation row per explanation, when the database has an
                                       `explanations` table (`sae-lab explain`); scores go in `notes` as JSON
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable

from sae_lab.evaluation.feature_db import FeatureDB
from sae_lab.export.records import iter_records
from sae_lab.export.source import slug
from sae_lab.hooknames import parse_hook

PER_BATCH = 128  # features per batch file (SAEDashboard's default n_features_per_batch)
# The creator id Neuronpedia's bulk imports fall back to when none is given (SAEDashboard's exporter uses the same);
# pass your own account's id (creator_id=...) for an instance where that user does not exist.
FALLBACK_CREATOR_ID = "clkht01d40000jv08hvalcvly"
DECIMALS = 5  # SAEDashboard rounds values to 5 decimals in these files


@dataclass(frozen=True)
class NeuronpediaIds:
    """The names one SAE gets on Neuronpedia: ``<model_id>/<source_id>``, source_id = ``<layer>-<source_set>``."""

    model_id: str
    layer: int
    source_set: str
    release: str
    creator_id: str
    creator_name: str

    @property
    def source_id(self) -> str:
        return f"{self.layer}-{self.source_set}"


def neuronpedia_ids(
    meta: dict,
    sae_name: str,
    model_id: str | None = None,
    source_set: str | None = None,
    release: str | None = None,
    creator_id: str | None = None,
    creator_name: str = "sae-lab",
) -> NeuronpediaIds:
    """Neuronpedia ids from the database's meta, each overridable: the model's Hugging Face name without its
    organisation (lower case), the hook's block index, and the SAE's name."""
    if model_id is None:
        name = (meta.get("model") or {}).get("name") or "model"
        if name == "embedded":
            from sae_lab.models import EMBEDDED_HF_ID

            name = EMBEDDED_HF_ID
        model_id = slug(str(name).rstrip("/").rsplit("/", 1)[-1])
    hook = parse_hook(str(meta.get("hook_name", "")))
    source_set = slug(source_set or sae_name)
    return NeuronpediaIds(
        model_id=model_id,
        layer=hook.layer if hook.in_block else 0,
        source_set=source_set,
        release=release or source_set,
        creator_id=creator_id or FALLBACK_CREATOR_ID,
        creator_name=creator_name,
    )


def _num(x: float) -> float | None:
    """A float rounded as SAEDashboard rounds; None for a non-finite value (JSON has no NaN)."""
    x = float(x)
    return round(x, DECIMALS) if math.isfinite(x) else None


def _nums(xs: Iterable[float]) -> list[float | None]:
    return [_num(x) for x in xs]


# ---- SAEDashboard's dashboard batch (NeuronpediaDashboardBatch.to_dict) -----------------------------------


def dashboard_feature(rec: dict, prompts: int, prompt_tokens: int, dataset: str) -> dict:
    """One feature as SAEDashboard's NeuronpediaDashboardFeature (its ``to_dict`` keys). Fields sae-lab does not
    compute (neuron alignment, activation correlations, the vocabulary-wide logit histogram, DFA) stay empty."""
    pos, neg = rec["logits"]["positive"], rec["logits"]["negative"]
    alive = rec["n_active"] > 0
    edges = rec["hist_edges"]
    return {
        "feature_index": rec["id"],
        **{
            k: []
            for k in (
                "neuron_alignment_indices",
                "neuron_alignment_values",
                "neuron_alignment_l1",
                "correlated_neurons_indices",
                "correlated_neurons_l1",
                "correlated_neurons_pearson",
                "correlated_features_indices",
                "correlated_features_l1",
                "correlated_features_pearson",
            )
        },
        "neg_str": [t["token"] for t in neg],
        "neg_values": _nums(t["value"] for t in neg),
        "pos_str": [t["token"] for t in pos],
        "pos_values": _nums(t["value"] for t in pos),
        "frac_nonzero": rec["density"],
        "freq_hist_data_bar_values": _nums((a + b) / 2 for a, b in zip(edges, edges[1:])) if alive else [],
        "freq_hist_data_bar_heights": list(rec["hist_counts"]) if alive else [],
        "logits_hist_data_bar_heights": [],
        "logits_hist_data_bar_values": [],
        "n_prompts_total": prompts,
        "n_tokens_in_prompt": prompt_tokens,
        "dataset": dataset,
        "decoder_weights_dist": [],
        "activations": _dashboard_activations(rec),
        "vector": [],
    }


def _dashboard_activations(rec: dict) -> list[dict]:
    """Top examples (bin_min = bin_contains = -1, bin_max = the feature's max, as SAEDashboard marks its top
    group), then each interval's samples (bin = [lo, hi), bin_contains = the interval's share of activations)."""
    out = [_activation(e, -1, rec["max_act"], -1) for e in rec["top_examples"]]
    n = max(rec["n_active"], 1)
    for iv in rec["intervals"]:
        out += [_activation(e, iv["lo"], iv["hi"], iv["count"] / n) for e in iv["examples"]]
    return out


def _activation(e: dict, bin_min: float, bin_max: float, bin_contains: float) -> dict:
    return {
        "bin_min": _num(bin_min),
        "bin_max": _num(bin_max),
        "bin_contains": _num(bin_contains),
        "tokens": e["tokens"],
        "values": _nums(e["acts"]),
        "qualifying_token_index": e["highlight"],
    }


# ---- Neuronpedia's import rows (the same mapping SAEDashboard's neuronpedia_export applies to a batch) ----


def _row_id(*parts) -> str:
    """A stable 25-character id (Neuronpedia's ids are cuids): the same example of the same source gets the same id."""
    return "c" + hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:24]


def feature_row(dash: dict, rec: dict, ids: NeuronpediaIds, hook_name: str, created: str) -> dict:
    """The Neuron row of one feature (columns as neuronpedia-utils' Feature), from its dashboard dict."""
    values = [v for a in dash["activations"] for v in a["values"] if v is not None]
    keep = (
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
    )
    return {
        "modelId": ids.model_id,
        "layer": ids.source_id,
        "index": str(dash["feature_index"]),
        "creatorId": ids.creator_id,
        "createdAt": created,
        "maxActApprox": max(values, default=0.0),
        "hasVector": False,
        "vector": [],
        "vectorLabel": None,
        "vectorDefaultSteerStrength": 10,
        "hookName": hook_name,
        "topkCosSimIndices": [n["feature"] for n in rec["neighbours"]],
        "topkCosSimValues": _nums(n["cosine"] for n in rec["neighbours"]),
        **{k: dash[k] for k in keep},
        "sourceSetName": None,
    }


def activation_rows(dash: dict, ids: NeuronpediaIds, created: str) -> list[dict]:
    """One Activation row per example of the feature (columns as neuronpedia-utils' Activation)."""
    rows = []
    for k, a in enumerate(dash["activations"]):
        vals = [v if v is not None else 0.0 for v in a["values"]]
        top = max(vals)
        rows.append(
            {
                "id": _row_id(ids.model_id, ids.source_id, dash["feature_index"], k),
                "tokens": a["tokens"],
                "index": str(dash["feature_index"]),
                "layer": ids.source_id,
                "modelId": ids.model_id,
                "maxValue": top,
                "maxValueTokenIndex": vals.index(top),
                "minValue": min(vals),
                "values": a["values"],
                "creatorId": ids.creator_id,
                "dataSource": None,
                "dataIndex": None,
                "dfaValues": [],
                "dfaTargetIndex": None,
                "dfaMaxValue": None,
                "createdAt": created,
                "lossValues": [],
                "logitContributions": None,
                "binMin": a["bin_min"],
                "binMax": a["bin_max"],
                "binContains": a["bin_contains"],
                "qualifyingTokenIndex": a["qualifying_token_index"],
                "zIndices": None,
                "zValues": None,
            }
        )
    return rows


def explanation_rows(rec: dict, ids: NeuronpediaIds, created: str) -> list[dict]:
    """One Explanation row per explanation of the feature (columns as neuronpedia-utils' Explanation). The
    explainer and the detection/fuzzing scores go in ``notes`` as JSON: Neuronpedia's ``typeName`` and
    ``explanationModelName`` must name entries of its own tables, so they stay null."""
    rows = []
    for e in rec.get("explanations", ()):
        scores = {k: v for k, v in e.items() if k not in ("explanation", "feature") and v is not None}
        notes = {"source": "sae-lab explain", **scores}
        rows.append(
            {
                "id": _row_id(ids.model_id, ids.source_id, rec["id"], "explanation", e.get("explainer")),
                "modelId": ids.model_id,
                "layer": ids.source_id,
                "index": str(rec["id"]),
                "description": e["explanation"],
                "authorId": ids.creator_id,
                "typeName": None,
                "explanationModelName": None,
                "notes": json.dumps(notes, sort_keys=True),
                "createdAt": created,
            }
        )
    return rows


def metadata_rows(
    meta: dict, ids: NeuronpediaIds, prompts: int, prompt_tokens: int, dataset: str, created: str
) -> dict[str, dict]:
    """release.jsonl, model.jsonl, sourceset.jsonl and source.jsonl (one row each; neuronpedia-utils' columns)."""
    model = meta.get("model") or {}
    desc = f"sae-lab {meta.get('architecture', 'SAE')} SAE '{meta.get('sae')}' on {meta.get('hook_name')}"
    return {
        "release": {
            "name": ids.release,
            "description": desc,
            "creatorName": ids.creator_name,
            "creatorId": ids.creator_id,
            "visibility": "PUBLIC",
            "isNewUi": False,
            "featured": False,
            "descriptionShort": desc,
            "urls": [],
            "creatorEmail": None,
            "creatorNameShort": ids.creator_name,
            "defaultSourceSetName": None,
            "defaultSourceId": None,
            "defaultUmapSourceIds": [],
            "createdAt": created,
        },
        "model": {
            "id": ids.model_id,
            "instruct": "instruct" in ids.model_id or ids.model_id.endswith("-it"),
            "creatorId": ids.creator_id,
            "displayNameShort": ids.model_id,
            "displayName": ids.model_id,
            "tlensId": None,
            "dimension": model.get("d_model"),
            "visibility": "PUBLIC",
            "defaultSourceSetName": None,
            "defaultSourceId": None,
            "inferenceEnabled": False,
            "layers": model.get("n_layers") or 0,
            "neuronsPerLayer": 0,
            "createdAt": created,
            "owner": "",
            "updatedAt": created,
            "website": None,
        },
        "sourceset": {
            "modelId": ids.model_id,
            "name": ids.source_set,
            "creatorId": ids.creator_id,
            "hasDashboards": True,
            "visibility": "PUBLIC",
            "description": desc,
            "type": "",
            "creatorName": ids.creator_name,
            "urls": [],
            "creatorEmail": None,
            "releaseName": ids.release,
            "defaultOfModelId": None,
            "defaultRange": 1,
            "defaultShowBreaks": True,
            "showDfa": False,
            "showCorrelated": False,
            "showHeadAttribution": False,
            "showUmap": False,
            "createdAt": created,
        },
        "source": {
            "id": ids.source_id,
            "modelId": ids.model_id,
            "setName": ids.source_set,
            "creatorId": ids.creator_id,
            "hasDashboards": True,
            "inferenceEnabled": False,
            "inferenceHosts": [],
            "saelensConfig": None,
            "saelensRelease": None,
            "saelensSaeId": None,
            "hfRepoId": None,
            "hfFolderId": None,
            "visibility": "PUBLIC",
            "defaultOfModelId": None,
            "hasUmap": False,
            "hasUmapLogSparsity": False,
            "hasUmapClusters": False,
            "num_prompts": prompts,
            "num_tokens_in_prompt": prompt_tokens,
            "dataset": dataset,
            "notes": desc,
            "createdAt": created,
        },
    }


# ---- the writer ----------------------------------------------------------------------------------------------


def _dumps(row) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    """Rows as gzipped JSON lines; no file for no rows (Neuronpedia's importer cannot read an empty one)."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=5) as f:
        for row in rows:
            f.write(_dumps(row) + "\n")


def write_neuronpedia(
    db: FeatureDB,
    name: str,
    directory: Path,
    features: list[int] | None = None,
    per_batch: int = PER_BATCH,
    **id_options,
) -> dict:
    """Write one SAE's Neuronpedia export into ``directory`` (layout in the module docstring), streaming
    ``per_batch`` features per file. ``id_options``: model_id, source_set, release, creator_id, creator_name."""
    meta = db.meta
    ids = neuronpedia_ids(meta, name, **id_options)
    data = meta.get("analysis_data") or {}
    prompts, prompt_tokens = int(data.get("n_contexts") or 0), int(data.get("context_length") or 0)
    dataset = str((data.get("data") or {}).get("source") or "")
    created = datetime.now().isoformat()
    source_dir = directory / ids.model_id / ids.source_id
    source_dir.mkdir(parents=True)
    for kind, row in metadata_rows(meta, ids, prompts, prompt_tokens, dataset, created).items():
        (source_dir / f"{kind}.jsonl").write_text(_dumps(row) + "\n", encoding="utf-8")
    (directory / "dashboards").mkdir()
    counts = {"features": 0, "activations": 0, "explanations": 0, "batches": 0}
    batch: list[dict] = []
    for rec in iter_records(db, features):
        batch.append(rec)
        if len(batch) == per_batch:
            _write_batch(batch, counts, directory, source_dir, ids, meta, created, (prompts, prompt_tokens, dataset))
            batch = []
    if batch:
        _write_batch(batch, counts, directory, source_dir, ids, meta, created, (prompts, prompt_tokens, dataset))
    return {
        **counts,
        "hook_name": meta.get("hook_name"),
        "neuronpedia": asdict(ids) | {"source_id": ids.source_id},
        "import_dir": str(source_dir.relative_to(directory)),
    }


def _write_batch(
    batch: list[dict],
    counts: dict,
    directory: Path,
    source_dir: Path,
    ids: NeuronpediaIds,
    meta: dict,
    created: str,
    run: tuple[int, int, str],
) -> None:
    n = counts["batches"]
    dash = [dashboard_feature(r, *run) for r in batch]
    payload = {
        "model_id": ids.model_id,
        "layer": ids.layer,
        "sae_set": ids.source_set,
        "sae_id_suffix": None,
        "features": dash,
    }
    (directory / "dashboards" / f"batch-{n}.json").write_text(_dumps(payload), encoding="utf-8")
    hook = str(meta.get("hook_name", ""))
    acts = [row for d in dash for row in activation_rows(d, ids, created)]
    _write_jsonl_gz(
        source_dir / "features" / f"batch-{n}.jsonl.gz",
        [feature_row(d, r, ids, hook, created) for d, r in zip(dash, batch)],
    )
    _write_jsonl_gz(source_dir / "activations" / f"batch-{n}.jsonl.gz", acts)
    notes = [row for r in batch for row in explanation_rows(r, ids, created)]
    if notes:
        _write_jsonl_gz(source_dir / "explanations" / f"batch-{n}.jsonl.gz", notes)
    counts["features"] += len(batch)
    counts["activations"] += len(acts)
    counts["explanations"] += len(notes)
    counts["batches"] += 1
