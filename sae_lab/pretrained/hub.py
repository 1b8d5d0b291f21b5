"""Files of a Hub repo through ``huggingface_hub`` and its cache; without network, an error saying how to get them.

A file already in the local Hugging Face cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub``, ``~/.cache/huggingface/hub``)
is used as it is, with no network access. Otherwise it is downloaded (into that cache), unless the Hub is
unreachable or ``HF_HUB_OFFLINE=1``: then ``HubUnavailable`` names the repo, the folder and how to pre-download.
"""

from __future__ import annotations

from pathlib import Path


class HubUnavailable(RuntimeError):
    """A pretrained SAE's files are not in the local cache and cannot be downloaded; the message says what to do."""


def download_hint(repo_id: str, folder: str) -> str:
    """How to fill the local cache with ``folder`` of ``repo_id`` on a machine with network."""
    include = f" --include '{folder}/*'" if folder else ""
    return (
        f"pre-download it where there is network: `hf download {repo_id}{include}` (huggingface_hub >= 1.0; "
        f"older: `huggingface-cli download {repo_id}{include}`), copy the Hugging Face cache "
        f"(`hf cache` / $HF_HOME) to this machine and run with HF_HUB_OFFLINE=1"
    )


def cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """The local path of ``filename`` in ``repo_id`` (from the cache, else downloaded), or None when the repo has
    no such file. Raises HubUnavailable when it is not cached and the Hub cannot be reached."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from sae_lab.models import hub_unreachable

    cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    if cached is not None:  # the cache records that the repo has no such file
        return None
    folder = filename.rsplit("/", 1)[0] if "/" in filename else ""
    why = hub_unreachable()
    if why is not None:
        raise HubUnavailable(
            f"'{filename}' of the Hub repo '{repo_id}' is not in the local Hugging Face cache "
            f"({cache_dir()}) and the Hub is unreachable ({why}); {download_hint(repo_id, folder)}"
        )
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except LocalEntryNotFoundError as e:  # a subclass of EntryNotFoundError: first
        raise HubUnavailable(
            f"could not download '{filename}' of '{repo_id}' ({e}); {download_hint(repo_id, folder)}"
        ) from None
    except (EntryNotFoundError, RevisionNotFoundError):
        return None
    except GatedRepoError:
        raise HubUnavailable(
            f"the Hub repo '{repo_id}' is gated: accept its terms on huggingface.co and log in "
            f"(`hf auth login`), or {download_hint(repo_id, folder)}"
        ) from None
    except RepositoryNotFoundError:
        raise HubUnavailable(
            f"the Hub repo '{repo_id}' does not exist (or is private: log in with `hf auth login`)"
        ) from None


def snapshot_revision(path: Path) -> str | None:
    """The commit of a file in the Hub cache layout (``.../snapshots/<commit>/...``), or None elsewhere."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None
