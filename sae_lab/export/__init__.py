"""Export feature databases to the viewers and tools researchers share features with (README.md here).

``export(target, to, out)``: ``target`` is a run directory (every SAE, each into ``out/<name>/``), an SAE directory
or a ``features.sqlite`` file (into ``out``); ``to`` is one of FORMATS; ``out`` must be absent or empty. The export
is written into a temporary directory beside ``out`` and renamed when complete. ``out/export.json`` records what
was exported from which database, with which options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from sae_lab.evaluation.feature_db import FeatureDB
from sae_lab.export.neuronpedia import write_neuronpedia
from sae_lab.export.parquet import write_parquet
from sae_lab.export.saedashboard import write_saedashboard
from sae_lab.export.source import (
    ExportError,
    check_output,
    feature_databases,
    output_dir,
    select_features,
    write_manifest,
)

WRITERS: dict[str, Callable[..., dict]] = {
    "neuronpedia": write_neuronpedia,
    "saedashboard": write_saedashboard,
    "parquet": write_parquet,
}
FORMATS = tuple(WRITERS)
__all__ = ["export", "export_neuronpedia", "export_saedashboard", "export_parquet", "ExportError", "FORMATS"]


def export(
    target: str | Path, to: str, out: str | Path, features: str | Sequence[int] | None = None, **options
) -> dict:
    """Export the feature database(s) of ``target`` as format ``to`` into the new directory ``out``; returns the
    manifest (also written to ``out/export.json``). ``features``: all (None), ids, or a spec such as '0:100,512'.
    ``options`` go to the format's writer (Neuronpedia: model_id, source_set, release, creator_id, creator_name)."""
    if to not in WRITERS:
        raise ExportError(f"unknown export format {to!r}; choose one of {', '.join(FORMATS)}")
    _check_options(to, options)
    sources = feature_databases(target)
    check_output(out)  # before any work: a taken output fails fast
    saes = {}
    with output_dir(out) as tmp:
        for src in sources:
            with FeatureDB(src.db) as db:
                chosen = select_features(features, db.n_features)
                directory = tmp / src.subdir
                directory.mkdir(parents=True, exist_ok=True)
                info = WRITERS[to](db, src.name, directory, chosen, **options)
            saes[src.name] = {"database": str(Path(src.db).resolve()), "directory": src.subdir or ".", **info}
        write_manifest(tmp, to, saes, {"features": features, **options})
    return {"format": to, "out": str(out), "saes": saes}


NEURONPEDIA_OPTIONS = ("model_id", "source_set", "release", "creator_id", "creator_name", "per_batch")
OPTIONS = {"neuronpedia": NEURONPEDIA_OPTIONS, "saedashboard": (), "parquet": ("batch",)}


def _check_options(to: str, options: dict) -> None:
    unknown = sorted(set(options) - set(OPTIONS[to]))
    if unknown:
        allowed = ", ".join(OPTIONS[to]) or "none"
        raise ExportError(f"option(s) {unknown} do not apply to format {to!r} (its options: {allowed})")


def export_neuronpedia(target: str | Path, out: str | Path, **options) -> dict:
    """``export(target, 'neuronpedia', out, ...)``: SAEDashboard's dashboard batches + Neuronpedia's import layout."""
    return export(target, "neuronpedia", out, **options)


def export_saedashboard(target: str | Path, out: str | Path, **options) -> dict:
    """``export(target, 'saedashboard', out, ...)``: ``sae_vis_data.json`` for SAEDashboard / SAE-Vis."""
    return export(target, "saedashboard", out, **options)


def export_parquet(target: str | Path, out: str | Path, **options) -> dict:
    """``export(target, 'parquet', out, ...)``: features / examples / logits (/ explanations) tables."""
    return export(target, "parquet", out, **options)
