"""Document sources: the embedded corpus, local files, Hub datasets, pre-tokenised data.

Each source yields documents in a deterministic order, either as text (``str``) or as token ids
(``list[int]``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Union

from sae_lab.data.config import DataConfig
from sae_lab.fileio import sha256_file

Document = Union[str, list[int]]
SUFFIXES = (".txt", ".jsonl", ".parquet")
VALIDATION_BUCKETS = 10  # 1 in 10 embedded topics goes to validation


class DataSourceError(ValueError):
    """A data source that cannot be read; the message says which and how to fix it."""


def iter_documents(cfg: DataConfig) -> Iterator[Document]:
    """Yield the documents of ``cfg.source`` in a deterministic order."""
    if cfg.source == "embedded":
        return iter_embedded(cfg.split)
    if cfg.source.startswith("hf:"):
        return iter_hub(cfg)
    return iter_local(cfg)


def describe_source(cfg: DataConfig, hashes: bool = False) -> dict:
    """A JSON-able spec of the data, for manifests and eval records (``hashes``: with each local file's SHA-256,
    so that edited data under the same name is a different source)."""
    spec = cfg.model_dump(mode="json")
    if not (cfg.source == "embedded" or cfg.source.startswith("hf:")):
        files = resolve_local_files(cfg.source)
        spec["files"] = [str(p) for p in files]
        if hashes:
            spec["files_sha256"] = [sha256_file(p) for p in files]
    return spec


# --- embedded ---------------------------------------------------------------------------------


def embedded_split_of(topic: str) -> str:
    """Deterministic train/validation split of a pydoc topic, by a hash of its name."""
    bucket = int(hashlib.sha256(topic.encode()).hexdigest(), 16) % VALIDATION_BUCKETS
    return "validation" if bucket == 0 else "train"


def iter_embedded(split: str) -> Iterator[str]:
    """Python's bundled English documentation topics, split deterministically."""
    if split not in ("train", "validation"):
        raise DataSourceError(f"the embedded corpus has splits 'train' and 'validation', not '{split}'")
    from pydoc_data.topics import topics

    for name in sorted(topics):
        if embedded_split_of(name) == split:
            yield topics[name]


# --- local files ------------------------------------------------------------------------------


def resolve_local_files(source: str) -> list[Path]:
    """Expand a file, directory or glob into a sorted list of readable data files."""
    if any(ch in source for ch in "*?["):
        paths = [Path(p) for p in sorted(glob.glob(source, recursive=True))]
        if not paths:
            raise DataSourceError(f"the glob '{source}' matches no files")
    else:
        root = Path(source).expanduser()
        if not root.exists():
            raise DataSourceError(
                f"data source '{source}' does not exist. Use 'embedded', 'hf:<dataset>', or an existing "
                f"file/directory/glob of {', '.join(SUFFIXES)} files"
            )
        paths = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    files = [p for p in paths if p.suffix in SUFFIXES]
    if not files:
        raise DataSourceError(f"no {'/'.join(SUFFIXES)} files found in '{source}'")
    return files


def iter_local(cfg: DataConfig) -> Iterator[Document]:
    for path in resolve_local_files(cfg.source):
        if path.suffix == ".txt":
            yield _read_text(path, cfg.encoding)
        elif path.suffix == ".jsonl":
            yield from _iter_jsonl(path, cfg)
        else:
            yield from _iter_parquet(path, cfg)


def _pick_field(available: list[str], cfg: DataConfig, where: str) -> tuple[str, bool]:
    """Which column to read, and whether it holds token ids."""
    if cfg.kind in ("pretokenized", "auto") and cfg.tokens_field in available:
        return cfg.tokens_field, True
    if cfg.kind in ("text", "auto") and cfg.text_field in available:
        return cfg.text_field, False
    wanted = cfg.tokens_field if cfg.kind == "pretokenized" else cfg.text_field
    raise DataSourceError(
        f"{where} has no field '{wanted}'; available fields: {sorted(available)}. "
        f"Set data.text_field (or data.tokens_field for pre-tokenised data)."
    )


def _read_text(path: Path, encoding: str) -> str:
    """A text file decoded strictly (binary or wrongly-encoded files are refused, naming the file)."""
    data = path.read_bytes()
    if b"\x00" in data[:8192] and not encoding.lower().startswith("utf-16"):
        raise DataSourceError(
            f"{path} looks like a binary file (it holds NUL bytes), not text; remove it from data.source"
        )
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise DataSourceError(
            f"{path} is not valid {encoding} text (byte {e.start}: {e.reason}); set "
            "data.encoding to the file's encoding (e.g. latin-1) or convert it"
        ) from None
    except LookupError:
        raise DataSourceError(f"data.encoding '{encoding}' is not a known text encoding") from None


def _iter_jsonl(path: Path, cfg: DataConfig) -> Iterator[Document]:
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        try:
            line = raw.decode(cfg.encoding)
        except UnicodeDecodeError as e:
            raise DataSourceError(
                f"{path}:{lineno} is not valid {cfg.encoding} text ({e.reason}); set data.encoding or fix the line"
            ) from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataSourceError(f"{path}:{lineno} is not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataSourceError(
                f"{path}:{lineno} is a JSON {type(row).__name__}, not an object with a '{cfg.text_field}' field"
            )
        field, tokens = _pick_field(list(row), cfg, f"{path}:{lineno}")
        yield _checked(row[field], tokens, f"{path}:{lineno}", field)


def _checked(value, tokens: bool, where: str, field: str) -> Document:
    """A document value of the right type: text, or a list of non-negative token ids."""
    if tokens:
        if not isinstance(value, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value
        ):
            raise DataSourceError(f"{where}: field '{field}' must be a list of non-negative token ids")
        return value
    if not isinstance(value, str):
        raise DataSourceError(f"{where}: field '{field}' must be text, got {type(value).__name__} ({value!r:.40})")
    return value


def _iter_parquet(path: Path, cfg: DataConfig) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise DataSourceError(f"{path} is not a readable parquet file: {e}") from None
    field, tokens = _pick_field(pf.schema_arrow.names, cfg, str(path))
    row = 0
    for batch in pf.iter_batches(columns=[field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            row += 1
            yield _checked(value, tokens, f"{path} row {row}", field)


# --- Hugging Face Hub ---------------------------------------------------------------------------


def iter_hub(cfg: DataConfig) -> Iterator[Document]:
    """Stream a Hub dataset; fails with a clear message when offline or the name is wrong."""
    name = cfg.source[3:]
    from sae_lab.models import hub_unreachable

    why = hub_unreachable()
    if why is not None and os.environ.get("HF_DATASETS_OFFLINE") != "1" and os.environ.get("HF_HUB_OFFLINE") != "1":
        raise DataSourceError(
            f"could not stream Hub dataset '{name}': the Hub is unreachable ({why}). Use a local "
            "copy (data.source=/path/to/files) or the offline corpus (data.source=embedded)."
        )
    try:
        import datasets

        ds = datasets.load_dataset(name, cfg.hub_config, split=cfg.split, streaming=True)
        first = next(iter(ds))
    except Exception as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        raise DataSourceError(
            f"could not stream Hub dataset '{name}' (split '{cfg.split}'"
            f"{', config ' + cfg.hub_config if cfg.hub_config else ''}){' while offline' if offline else ''}: "
            f"{type(e).__name__}: {str(e)[:300]}\nCheck the name and your network, or use a local copy "
            f"(data.source=/path/to/files) or the offline corpus (data.source=embedded)."
        ) from None
    field, tokens = _pick_field(list(first), cfg, f"Hub dataset '{name}'")
    for i, row in enumerate(ds, 1):
        yield _checked(row[field], tokens, f"Hub dataset '{name}' row {i}", field)
