"""What sae-lab may delete: only what it can prove it wrote.

Every directory sae-lab creates (run directories, activation caches, SAE directories) gets a marker file,
``.sae-lab-owned`` (JSON: the directory's kind). Deleting or replacing a directory's contents needs that
marker, removes only the entries the directory's kind owns (by name), and refuses while anything else
("foreign" files: a user's notes or config) is present, naming those files. A few paths are never cleared
at all: ``/``, the home directory, the current directory and its parents, and any parent of a given config
file. Ground floor: imports only the standard library and :mod:`sae_lab.fileio`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterable

from sae_lab.fileio import atomic_write_text, remove_temps, temp_target

MARKER = ".sae-lab-owned"


class OwnershipError(RuntimeError):
    """sae-lab refuses to delete something it cannot prove it wrote; the message names what and why."""


def mark(path: str | Path, kind: str) -> None:
    """Create ``path`` if needed and record that sae-lab owns it (as a ``kind`` directory)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    remove_temps(path, MARKER)
    if owner_kind(path) != kind:
        atomic_write_text(path / MARKER, json.dumps({"owner": "sae-lab", "kind": kind}) + "\n")


def owner_kind(path: str | Path) -> str | None:
    """The kind recorded in ``path``'s marker, or None when sae-lab did not mark it."""
    try:
        data = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) and data.get("owner") == "sae-lab" else None


def is_owned_name(name: str, owned: Iterable[str]) -> bool:
    """``name`` is one of ``owned``, the marker, or a temporary sae-lab makes of one (``.x.tmp123``, also the
    marker's own, left by a kill while a directory was being marked)."""
    owned = set(owned) | {MARKER}
    if name in owned or name.startswith(".write-probe"):
        return True
    return temp_target(name) in owned


def foreign_entries(path: str | Path, owned: Iterable[str]) -> list[str]:
    """Entries of ``path`` sae-lab did not write: not an owned name, and not a directory with our marker."""
    path, owned = Path(path), set(owned)
    if not path.is_dir():
        return []
    return sorted(
        p.name
        for p in path.iterdir()
        if not is_owned_name(p.name, owned) and not (p.is_dir() and owner_kind(p) is not None)
    )


def describe_foreign(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def refuse_protected(path: str | Path, config_path: str | Path | None = None) -> None:
    """OwnershipError if ``path`` is ``/``, home, the current directory or a parent of it (or of the config)."""
    target = Path(path).expanduser().resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    why = None
    if target == Path(target.anchor) or target == home:
        why = "it is the filesystem root or your home directory"
    elif cwd == target or target in cwd.parents:
        why = "it is the current directory or one of its parents"
    elif config_path is not None and target in Path(config_path).expanduser().resolve().parents:
        why = f"it holds the config file '{config_path}'"
    if why:
        raise OwnershipError(f"refusing to delete the contents of '{path}': {why}. Choose a dedicated directory.")


def clear_owned(path: str | Path, kind: str, owned: Iterable[str], config_path: str | Path | None = None) -> None:
    """Delete the entries of ``path`` that a ``kind`` directory owns (the marker stays); refuse otherwise.

    Refuses (OwnershipError) for protected paths, directories without a ``kind`` marker, and while foreign
    entries are present (named in the message). Nested directories with their own marker are kept.
    """
    path, owned = Path(path), set(owned)
    refuse_protected(path, config_path)
    if not path.is_dir():
        return
    if owner_kind(path) != kind:
        raise OwnershipError(
            f"refusing to delete the contents of '{path}': it carries no sae-lab {kind} marker "
            f"({MARKER}), so sae-lab cannot prove it wrote it. Delete it yourself if you are sure, "
            "or choose another directory."
        )
    foreign = foreign_entries(path, owned)
    if foreign:
        raise OwnershipError(
            f"refusing to delete the contents of '{path}': it holds files sae-lab did not write: "
            f"{describe_foreign(foreign)}. Move them elsewhere and run the same command again, "
            "or choose another directory."
        )
    for p in path.iterdir():
        if p.name == MARKER or not is_owned_name(p.name, owned):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
