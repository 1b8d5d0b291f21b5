"""Published SAEs by name: ``RELEASE:SAE_ID`` (or ``load_sae(RELEASE, sae_id=...)``) -> SAEs that know their model.

``resolve_release("gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_82")`` finds the release
(``releases.py``), fetches the SAE's files through ``huggingface_hub``'s cache (``hub.py``), converts them
(``converters.py``) and keeps the result as an sae-lab SAE directory under ``<sae-lab cache>/pretrained/``, so
that eval and analyze write beside it and the dashboard opens it like any SAE directory; its cfg.json records
the model (``model_names.py``). The conversion is redone only when the Hub files it came from change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from sae_lab.configbase import ConfigError
from sae_lab.pretrained import converters, hub, model_names, releases
from sae_lab.saedir import SAEDir

__all__ = ["ResolvedSAE", "resolve_release", "release_dirs", "parse_target", "is_release_target", "model_for"]
model_for = model_names.model_for
FORMAT_VERSION = 1


class ResolvedSAE(NamedTuple):
    """One published SAE: the SAE, the model it belongs to (a name load_model takes, or None), where it came
    from (release, sae_id, repo, folder, format, revision), and its local sae-lab directory."""

    sae: object
    model: str | None
    metadata: dict
    directory: Path


def parse_target(text: str) -> tuple[str, str | None]:
    """``RELEASE:SAE_ID`` -> (release, sae_id); a bare ``RELEASE`` -> (release, None)."""
    name, sep, sae_id = str(text).partition(":")
    return name, (sae_id if sep else None)


def is_release_target(text: str | Path) -> bool:
    """True for a name that is not an existing path and names a release, or has the form ``NAME:SAE_ID`` (an
    unknown NAME then gets the registry's did-you-mean error rather than "no such directory")."""
    text = str(text)
    if Path(text).exists() or not text:
        return False
    name, sae_id = parse_target(text)
    return name in releases.all_releases() or sae_id is not None


def resolve_release(name: str, sae_id: str | None = None, device=None) -> list[ResolvedSAE]:
    """The SAEs ``sae_id`` selects in release ``name`` (one id, or a glob over a listed release's ids)."""
    release = releases.find_release(name)
    out = []
    for sid in releases.sae_ids(release, sae_id):
        directory = materialise(release, sid)
        meta = json.loads(SAEDir(directory).info_path.read_text())["metadata"]
        sae = SAEDir(directory).load(device=device)
        sae.model_name = meta.get("model_name") or None  # the model to run it with (sae_lab.models.load_model)
        out.append(ResolvedSAE(sae, sae.model_name, meta, directory))
    return out


def release_dirs(target: str) -> list[Path]:
    """The local SAE directories of a ``RELEASE:SAE_ID`` target (converted on first use)."""
    name, sae_id = parse_target(target)
    release = releases.find_release(name)
    return [materialise(release, sid) for sid in releases.sae_ids(release, sae_id)]


def local_dir(release: releases.Release, sae_id: str) -> Path:
    from sae_lab.models import user_cache_dir

    safe = sae_id.strip("/").replace("/", "__") or "sae"
    return user_cache_dir() / "pretrained" / release.name.replace("/", "__") / safe


def materialise(release: releases.Release, sae_id: str) -> Path:
    """The sae-lab directory of one published SAE: reused when its recorded sources are the files the Hub cache
    holds now, else converted again (replacing stale eval/feature files)."""
    folder = release.folder(sae_id) or sae_id
    where = f"'{release.repo_id}/{folder}' (release '{release.name}', SAE '{sae_id}')"

    def fetch(name: str) -> Path | None:
        return hub.hub_file(release.repo_id, f"{folder}/{name}" if folder else name)

    fmt, files = converters.locate(release.format, fetch, where)
    sources = {n: [str(p.resolve()), p.stat().st_size] for n, p in files.items()}
    final = local_dir(release, sae_id)
    if _recorded_sources(final) == sources:
        return final
    conv = converters.convert(fmt, files, release.repo_id, folder)
    if fmt == "sparsify" and conv.model is None:
        conv.model = converters.sparsify_model(lambda n: hub.hub_file(release.repo_id, n), folder)
    model = model_names.canonical(release.model or conv.model)
    conv.sae.cfg = conv.sae.cfg.model_copy(update={"name": f"{release.name}:{sae_id}"})
    meta = {
        "model_name": model or "",
        "release": release.name,
        "sae_id": sae_id,
        "repo_id": release.repo_id,
        "folder": folder,
        "source_format": fmt,
        "registry": release.source,
        "sources": sources,
        "revision": hub.snapshot_revision(next(iter(files.values()))),
        "pretrained_format": FORMAT_VERSION,
    }
    return SAEDir(final).replace(conv.sae, metadata=meta)


def _recorded_sources(directory: Path) -> dict | None:
    try:
        meta = json.loads(SAEDir(directory).info_path.read_text())["metadata"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta.get("sources") if meta.get("pretrained_format") == FORMAT_VERSION else None


def resolve_target(target: str | Path) -> Path:
    """A CLI target as a local directory: a ``RELEASE:SAE_ID`` naming one SAE becomes its converted directory;
    anything else is returned unchanged (the caller checks paths)."""
    if not is_release_target(target):
        return Path(target)
    dirs = release_dirs(str(target))
    if len(dirs) != 1:
        raise ConfigError(f"'{target}' selects {len(dirs)} SAEs; this command takes one (name a single SAE id)")
    return dirs[0]
