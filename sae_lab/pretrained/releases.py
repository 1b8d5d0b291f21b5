"""The registry of published SAE releases: release name -> Hub repo, model, file format, and its SAE ids.

Three sources, later ones overriding earlier ones by release name:
1. sae-lab's own small registry (``OWN_RELEASES`` below): the main releases, each described by a rule for its
   SAE ids (a regular expression and the folder it maps to) rather than by a list;
2. SAELens's ``pretrained_saes.yaml`` when the ``sae-lens`` package is installed (read as a file; sae_lens is
   never imported): every release it lists whose conversion sae-lab has (``FORMATS``);
3. YAML files named in ``$SAE_LAB_RELEASES`` (``:``-separated), in SAELens's format
   (``NAME: {repo_id, model, conversion_func, saes: [{id, path}, ...]}``): your own releases.
A name that is not a release but looks like a Hub repo (``org/name``) is used as a repo whose file format is
detected from the files in the SAE's folder.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from sae_lab.configbase import ConfigError

# SAELens's conversion_func -> sae-lab's converter (converters.py); releases with other conversions are skipped.
FORMATS = {None: "saelens", "gemma_2": "gemma_scope", "gemma_3": "gemma_scope", "sparsify": "sparsify"}


@dataclass(frozen=True)
class Release:
    """One release: its SAEs are folders of ``repo_id``; ``ids`` maps an SAE id to its folder."""

    name: str
    repo_id: str
    model: str | None  # the model name as the release gives it (model_names.canonical maps it)
    format: str  # 'saelens' | 'gemma_scope' | 'sparsify' | 'auto'
    ids: tuple[tuple[str, str], ...] = ()  # (regular expression for the id, folder template using its groups)
    listed: dict[str, str] = field(default_factory=dict)  # explicit id -> folder (from a YAML registry)
    examples: tuple[str, ...] = ()
    source: str = "sae-lab"

    def folder(self, sae_id: str) -> str | None:
        """The repo folder of ``sae_id``, or None if this release has no such SAE."""
        if sae_id in self.listed:
            return self.listed[sae_id]
        for pattern, template in self.ids:
            m = re.fullmatch(pattern, sae_id)
            if m:
                return template.format(*m.groups(), **m.groupdict()) if template else sae_id
        return None

    def match(self, pattern: str) -> list[str]:
        """Listed ids matching a glob (``layer_1*/width_16k/canonical``)."""
        return [i for i in self.listed if fnmatch.fnmatchcase(i, pattern)]

    def describe_ids(self) -> str:
        if self.listed:
            shown = list(self.listed)[:6]
            more = f" (and {len(self.listed) - 6} more)" if len(self.listed) > 6 else ""
            return ", ".join(shown) + more
        return ", ".join(self.examples) or "see the repo's folders"


_L = r"(\d|1\d|2[0-5])"  # Gemma 2 2B: 26 layers
OWN_RELEASES = [
    Release(
        "gemma-scope-2b-pt-res",
        "google/gemma-scope-2b-pt-res",
        "google/gemma-2-2b",
        "gemma_scope",
        ids=((rf"layer_{_L}/width_(16k|65k|1m)/average_l0_\d+", ""),),
        examples=("layer_12/width_16k/average_l0_82", "layer_20/width_16k/average_l0_71"),
    ),
    Release(
        "gemma-scope-2b-pt-att",
        "google/gemma-scope-2b-pt-att",
        "google/gemma-2-2b",
        "gemma_scope",
        ids=((rf"layer_{_L}/width_(16k|65k)/average_l0_\d+", ""),),
        examples=("layer_12/width_16k/average_l0_93",),
    ),
    Release(
        "gemma-scope-2b-pt-mlp",
        "google/gemma-scope-2b-pt-mlp",
        "google/gemma-2-2b",
        "gemma_scope",
        ids=((rf"layer_{_L}/width_(16k|65k)/average_l0_\d+", ""),),
        examples=("layer_12/width_16k/average_l0_72",),
    ),
    Release(
        "gpt2-small-res-jb",
        "jbloom/GPT2-Small-SAEs-Reformatted",
        "gpt2",
        "saelens",
        ids=((r"blocks\.(\d|1[01])\.hook_resid_pre", ""), (r"blocks\.11\.hook_resid_post", "")),
        examples=("blocks.8.hook_resid_pre",),
    ),
    Release(
        "pythia-70m-deduped-res-sm",
        "ctigges/pythia-70m-deduped__res-sm_processed",
        "EleutherAI/pythia-70m-deduped",
        "saelens",
        ids=((r"blocks\.0\.hook_resid_pre", "e-res-sm"), (r"blocks\.([0-5])\.hook_resid_post", "{0}-res-sm")),
        examples=("blocks.3.hook_resid_post",),
    ),
    Release(
        "pythia-70m-deduped-att-sm",
        "ctigges/pythia-70m-deduped__att-sm_processed",
        "EleutherAI/pythia-70m-deduped",
        "saelens",
        ids=((r"blocks\.([0-5])\.hook_attn_out", "{0}-att-sm"),),
        examples=("blocks.3.hook_attn_out",),
    ),
    Release(
        "pythia-70m-deduped-mlp-sm",
        "ctigges/pythia-70m-deduped__mlp-sm_processed",
        "EleutherAI/pythia-70m-deduped",
        "saelens",
        ids=((r"blocks\.([0-5])\.hook_mlp_out", "{0}-mlp-sm"),),
        examples=("blocks.3.hook_mlp_out",),
    ),
]


def saelens_registry_path() -> Path | None:
    """The installed sae-lens package's ``pretrained_saes.yaml`` (found without importing sae_lens), or None."""
    try:
        spec = importlib.util.find_spec("sae_lens")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "pretrained_saes.yaml"
    return path if path.is_file() else None


def read_yaml_registry(path: Path, source: str) -> list[Release]:
    """Releases of a registry file in SAELens's format; those needing a conversion sae-lab lacks are left out."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read the SAE release registry '{path}': {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"'{path}' must map release names to releases (SAELens's pretrained_saes.yaml format)")
    out = []
    for name, r in data.items():
        try:
            fmt = FORMATS.get(r.get("conversion_func"))
            if fmt is None:
                continue
            listed = {str(s["id"]): str(s.get("path", s["id"])) for s in r["saes"]}
            out.append(Release(str(name), str(r["repo_id"]), r.get("model"), fmt, listed=listed, source=source))
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"release '{name}' in '{path}' lacks repo_id or saes[].id ({e})") from None
    return out


def all_releases() -> dict[str, Release]:
    """Every known release by name (own registry, then sae-lens's, then $SAE_LAB_RELEASES files)."""
    releases = {r.name: r for r in OWN_RELEASES}
    path = saelens_registry_path()
    if path is not None:
        releases.update({r.name: r for r in read_yaml_registry(path, f"sae-lens ({path})")})
    for extra in filter(None, os.environ.get("SAE_LAB_RELEASES", "").split(os.pathsep)):
        if not Path(extra).is_file():
            raise ConfigError(f"$SAE_LAB_RELEASES names '{extra}', which is not a file")
        releases.update({r.name: r for r in read_yaml_registry(Path(extra), extra)})
    return releases


def looks_like_repo(name: str) -> bool:
    """``org/name`` as the Hub spells repo ids."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None


def find_release(name: str) -> Release:
    """The release called ``name``; an ``org/name`` repo id not in the registry gives a release of that repo with
    the format detected from its files; anything else is a ConfigError listing close names."""
    releases = all_releases()
    if name in releases:
        return releases[name]
    if looks_like_repo(name):
        return Release(name, name, None, "auto", ids=((r".+", ""),), source="repo id")
    close = difflib.get_close_matches(name, list(releases), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(
        f"unknown SAE release '{name}'; {hint}known releases: {', '.join(sorted(releases)[:12])}"
        f"{' ...' if len(releases) > 12 else ''} (or a Hub repo id, org/name); nor is it a path"
    )


def sae_ids(release: Release, sae_id: str | None) -> list[str]:
    """The SAE ids ``sae_id`` selects in ``release`` (a glob selects several listed ids); errors list examples."""
    if sae_id is None:
        raise ConfigError(
            f"release '{release.name}' holds several SAEs: name one with RELEASE:SAE_ID (or "
            f"sae_id=...), e.g. {release.name}:{(release.describe_ids().split(', ') or [''])[0]}"
        )
    if any(c in sae_id for c in "*?[") and release.listed:
        found = release.match(sae_id)
        if found:
            return found
    if release.folder(sae_id) is None:
        close = difflib.get_close_matches(sae_id, [*release.listed, *release.examples], n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"release '{release.name}' ({release.repo_id}) has no SAE '{sae_id}'.{hint} Its SAE ids "
            f"look like: {release.describe_ids()}"
        )
    return [sae_id]
