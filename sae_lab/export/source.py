"""What an export reads (the feature databases of a run or an SAE directory) and where it writes (a new directory)."""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

from sae_lab.fileio import atomic_path
from sae_lab.rundir import RunDir
from sae_lab.saedir import FEATURE_DB, SAEDir
from sae_lab.saeref import not_a_target, target_kind


class ExportError(ValueError):
    """An export that cannot run as asked (missing database, output in the way, unknown format, bad selection);
    the message names the problem and the fix."""


class Source(NamedTuple):
    """One SAE to export: its name, its feature database, and its folder inside the output ('' = the top)."""

    name: str
    db: Path
    subdir: str


def feature_databases(target: str | Path) -> list[Source]:
    """Every SAE of a run directory (each into a folder named after it), one SAE directory or one database file
    (into the top of the output). ExportError when the target or a database is missing (naming the
    ``sae-lab analyze`` command to run)."""
    p = Path(target)
    if not p.exists():
        raise ExportError(f"'{p}' does not exist; pass a run directory, an SAE directory or a features.sqlite file")
    if p.is_file():
        if p.suffix != ".sqlite":
            raise ExportError(
                f"'{p}' is a file but not a feature database (*.sqlite); pass a run directory, an SAE "
                "directory or a features.sqlite file"
            )
        return [Source(p.parent.name, p, "")]
    sae_dir, run = SAEDir(p), RunDir(p)
    if not sae_dir.cfg_path.exists() and target_kind(p) == "run":  # every SAE folder: only its database is read
        names = run.sae_names()
        if not names:
            raise ExportError(
                f"run directory '{p}' holds no trained SAE (nothing under {run.saes_dir}); train it "
                "first (`sae-lab train`)"
            )
        dbs = {n: SAEDir(run.sae_dir(n)).feature_db_path for n in names}
        missing = [n for n, db in dbs.items() if not db.is_file()]
        if missing:
            raise ExportError(
                f"run directory '{p}': SAE(s) {missing} have no feature database ({FEATURE_DB}); run "
                f"`sae-lab analyze {p}` first"
            )
        return [Source(n, db, n) for n, db in dbs.items()]
    if not sae_dir.feature_db_path.is_file() and not sae_dir.cfg_path.exists():
        raise ExportError(
            not_a_target(p) + f", nor a directory with a {FEATURE_DB}; pass one of those, or a {FEATURE_DB} file"
        )
    if not sae_dir.feature_db_path.is_file():
        raise ExportError(
            f"SAE directory '{p}' has no feature database ({FEATURE_DB}); run `sae-lab analyze {p}` first"
        )
    return [Source(p.name, sae_dir.feature_db_path, "")]


def check_output(out: str | Path) -> Path:
    """``out`` as a Path, if it is free to write: absent, or an empty directory; ExportError otherwise."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"output '{out}' exists and is a file; choose a new directory name")
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(
            f"output directory '{out}' exists and is not empty; choose a new directory or empty it "
            "(an export never overwrites files)"
        )
    return out


@contextmanager
def output_dir(out: str | Path) -> Iterator[Path]:
    """A temporary directory beside ``out`` to write the export into; renamed to ``out`` when the block ends without
    error (so an interrupted export leaves no half-written ``out``), removed otherwise."""
    out = check_output(out)
    with atomic_path(out, directory=True) as tmp:
        yield tmp


def select_features(spec: str | Sequence[int] | None, n_features: int) -> list[int] | None:
    """Feature ids from ``spec``: None (all), a sequence of ints, or a string '0:100' (a range), '3,17,42' or both
    ('0:10,99'). ExportError names an id out of range or a malformed spec."""
    if spec is None:
        return None
    if isinstance(spec, str):
        ids: list[int] = []
        for part in filter(None, (s.strip() for s in spec.split(","))):
            m = re.fullmatch(r"(\d*):(\d*)|(\d+)", part)
            if m is None:
                raise ExportError(
                    f"features: {part!r} is neither an id (42) nor a range (0:100); example: --features 0:100,512"
                )
            if m.group(3) is not None:
                ids.append(int(m.group(3)))
            else:
                ids.extend(range(int(m.group(1) or 0), min(int(m.group(2) or n_features), n_features)))
    else:
        ids = [int(i) for i in spec]
    if not ids:
        raise ExportError(f"features {spec!r} selects no feature; this SAE has features 0..{n_features - 1}")
    bad = [i for i in ids if not 0 <= i < n_features]
    if bad:
        raise ExportError(f"features {bad[:5]} are out of range: this SAE has features 0..{n_features - 1}")
    return sorted(set(ids))


def write_manifest(directory: Path, fmt: str, saes: dict[str, dict], options: dict) -> None:
    """``export.json``: what was exported, from which databases, with which options (provenance)."""
    from sae_lab import __version__

    record = {
        "format": fmt,
        "sae_lab_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(),
        "options": options,
        "saes": saes,
    }
    (directory / "export.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")


def slug(text: str) -> str:
    """Lower-case letters, digits and '-' only (Neuronpedia ids)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "sae"
