"""Read what wandb wrote offline: the history rows in a run directory's ``wandb/*/run-<id>.wandb`` files.

The file is wandb's transaction log: a 7-byte header (``:W&B``, magic, version), then LevelDB-log records
(32 KiB blocks; each record a 7-byte header: CRC32, length, type FULL/FIRST/MIDDLE/LAST) whose payloads are
``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

BLOCK = 32768


def records(path: Path) -> Iterator:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb transaction log")
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # the rest of a block too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        buf, pos = buf + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def history(run_dir: Path) -> dict[str, list[dict]]:
    """run id -> the history rows of every offline session of that id, in file order."""
    out: dict[str, list[dict]] = {}
    for f in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        rows = out.setdefault(f.stem.removeprefix("run-"), [])
        for r in records(f):
            if r.WhichOneof("record_type") == "history":
                rows.append({(i.key or ".".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    return out
