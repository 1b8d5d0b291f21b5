"""Durable files, the one place that knows how: atomic writes of text, files and directories; temporary names;
SHA-256 of a file, of a JSON value, and the ``<file>.sha256`` checksum file beside a file.

Every atomic write goes the same way: write under a temporary name beside the target, fsync it (every file
of a directory), rename it over the target, fsync the parent directory. A crash at any point leaves either
the old target or the new one, never a torn one (replacing a directory takes two renames: a crash between
them leaves the old one as ``.<name>.old<pid>``); an exception removes the temporary and leaves the target.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

CHECKSUM_SUFFIX = ".sha256"
_TEMP = re.compile(r"^\.?(?P<target>.+?)(\.tmp\d*|\.tmp-.*)$")  # .<name>.tmp<pid>; older forms: <name>.tmp*, .tmp-*


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def canonical_json(value: Any, compact: bool = False) -> bytes:
    """``value`` as JSON with sorted keys (UTF-8), the form sae-lab hashes; ``compact`` drops the spaces after
    separators and writes non-JSON values as ``str()`` (the form run config hashes have always used)."""
    if compact:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    return json.dumps(value, sort_keys=True).encode()


def json_sha256(value: Any, compact: bool = False) -> str:
    """Hex SHA-256 of :func:`canonical_json` of ``value``: equal for equal values, whatever their key order."""
    return hashlib.sha256(canonical_json(value, compact)).hexdigest()


def checksum_path(path: str | Path) -> Path:
    """The checksum file beside ``path`` (``<name>.sha256``): its first line is the hex SHA-256 of ``path``."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def write_checksum(path: str | Path, digest: str | None = None, extra: str | None = None) -> None:
    """Record ``path``'s SHA-256 (``digest``, else hashed now) in its checksum file, atomically; ``extra`` becomes
    a second line (e.g. a stat record that lets later checks skip re-hashing)."""
    digest = digest if digest is not None else sha256_file(path)
    atomic_write_text(checksum_path(path), f"{digest}\n" + (f"{extra}\n" if extra is not None else ""))


def read_checksum(path: str | Path) -> tuple[str, str | None] | None:
    """(recorded SHA-256, second line or None) from ``path``'s checksum file; None when it has none."""
    file = checksum_path(path)
    if not file.is_file():
        return None
    lines = file.read_text().splitlines() or [""]
    return lines[0].strip(), (lines[1] if len(lines) > 1 else None)


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry (after a rename) to disk (a no-op where directories cannot be opened: Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_tree(path: Path) -> None:
    """fsync a file, or every file and directory below a directory (children before their parent)."""
    if not path.is_dir():
        _fsync_file(path)
        return
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            _fsync_file(Path(root) / name)
        fsync_dir(root)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def temp_name(path: Path) -> Path:
    """The hidden temporary name an atomic write of ``path`` uses (``.<name>.tmp<pid>``, same directory)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def temp_target(name: str) -> str | None:
    """The name whose atomic write made the temporary ``name`` (:func:`temp_name`), or None when ``name`` is no
    temporary."""
    m = _TEMP.match(name)
    return m.group("target") if m else None


def is_temp_name(name: str) -> bool:
    """True for names made by :func:`temp_name` (leftovers of an interrupted write)."""
    return temp_target(name) is not None


def remove_temps(directory: str | Path, target: str | None = None) -> None:
    """Delete what interrupted atomic writes left in ``directory`` (temporaries of any process), only those of
    the file named ``target`` when given."""
    d = Path(directory)
    if d.is_dir():
        for p in d.iterdir():
            t = temp_target(p.name)
            if t is not None and (target is None or t == target):
                _remove(p)


@contextmanager
def atomic_path(path: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write a file (or, with ``directory=True``, a directory
    that already exists) into; on a clean exit it is fsynced, renamed over ``path`` (an existing directory
    there is replaced) and the parent is fsynced. On an exception the temporary is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    _remove(tmp)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        _replace(tmp, path)
    except BaseException as e:
        full = isinstance(e, Exception) and (is_space_error(e) or _out_of_room(tmp))
        _remove(tmp)
        if full:
            raise WriteError(
                f"could not write '{path}': {e}. The disk is full or a file-size limit (ulimit -f) "
                "was reached: free space (or lift the limit) and run the same command again; it "
                "resumes where it stopped."
            ) from e
        raise
    fsync_dir(path.parent)


def _out_of_room(tmp: Path) -> bool:
    """A failed write whose temporary reached the file-size limit (ulimit -f), or whose disk is full: libraries
    that report a short write without an errno (torch.save) are recognised by their effect."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    try:
        files = [tmp] if tmp.is_file() else [p for p in tmp.rglob("*") if p.is_file()]
        if limit != resource.RLIM_INFINITY and any(p.stat().st_size >= limit for p in files):
            return True
        return shutil.disk_usage(tmp.parent).free < (1 << 20)
    except OSError:
        return False


class WriteError(OSError):
    """A write that failed for lack of space or a file-size limit; the message names the file and what to do."""


_SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_space_error(e: BaseException) -> bool:
    """True for 'disk full' / 'file too large' failures, also when a library re-raised them without the errno
    (torch.save: 'file write failed')."""
    if isinstance(e, WriteError):
        return False  # already explained
    if isinstance(e, OSError) and e.errno in _SPACE_ERRNOS:
        return True
    text = str(e).lower()
    if re.search(r"\d+ requested and \d+ written", text):  # numpy's short write (tofile/save)
        return True
    return any(s in text for s in ("file write failed", "file too large", "no space left", "disk is full"))


def _replace(tmp: Path, path: Path) -> None:
    if tmp.is_dir() and path.is_dir():  # os.replace cannot replace a non-empty directory: swap, then delete
        old = path.with_name(f".{path.name}.old{os.getpid()}")
        _remove(old)
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def path_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be opened, in words ("does not exist", "is a symbolic link loop", ...), or None."""
    p = Path(path)
    try:
        p.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop (following it leads back to itself)"
        if e.errno == errno.ENOENT and p.is_symlink():
            return f"is a broken symbolic link (to '{os.readlink(p)}', which does not exist)"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return "does not exist"
        return f"cannot be read ({e.strerror})"
    return None
