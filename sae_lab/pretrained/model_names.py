"""Which model an SAE belongs to: the name its files record, mapped to a name ``sae_lab.models.load_model`` loads.

Releases and SAELens configs name models the TransformerLens way (``gpt2-small``, ``gemma-2-2b``,
``pythia-70m-deduped``); ``canonical`` maps those to Hugging Face ids (``gpt2``, ``google/gemma-2-2b``, ...)
with a small table of our own and, when present, TransformerLens's own alias table (read as a file).
``model_for(sae_dir, explicit)`` is the rule every command uses: the SAE's recorded model, an explicit
``--model`` that names the same model, or a clear error when they differ.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

from sae_lab.configbase import ConfigError

# TransformerLens-style names used by SAE releases -> Hugging Face ids (checked against the Hub's model pages)
_ALIASES = {
    "gpt2-small": "gpt2",
    "openai-community/gpt2": "gpt2",
    "gpt2-medium": "gpt2-medium",
    "openai-community/gpt2-medium": "gpt2-medium",
}
_ORGS = {"gemma-": "google/", "pythia-": "EleutherAI/"}


@functools.lru_cache(maxsize=1)
def _transformer_lens_aliases() -> dict[str, str]:
    """alias -> official HF name from TransformerLens's model_aliases.json (without importing the package)."""
    try:
        spec = importlib.util.find_spec("transformer_lens")
        root = Path(list(spec.submodule_search_locations)[0])
        data = json.loads((root / "tools/model_registry/data/model_aliases.json").read_text())["aliases"]
    except (AttributeError, ImportError, OSError, ValueError, KeyError, TypeError, IndexError):
        return {}
    return {alias: official for official, aliases in data.items() for alias in aliases}


def canonical(name: str | None) -> str | None:
    """The loadable name of a model as releases spell it (None, '' -> None; 'embedded' and paths unchanged)."""
    if not name:
        return None
    name = str(name)
    if name in _ALIASES:
        return _ALIASES[name]
    if name == "embedded" or "/" in name or Path(name).is_dir():
        return name
    official = _transformer_lens_aliases().get(name)
    if official:
        return _ALIASES.get(official, official)
    for prefix, org in _ORGS.items():
        if name.startswith(prefix):
            return org + name
    return name


def recorded_model(sae_dir: str | Path) -> str | None:
    """The model an SAE directory's cfg.json records (top-level or in ``metadata``), made loadable; None if none."""
    from sae_lab.saedir import SAEDir

    path = SAEDir(sae_dir).cfg_path
    try:
        c = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(c, dict):
        return None
    return canonical(c.get("model_name") or (c.get("metadata") or {}).get("model_name"))


def model_for(sae_dir: str | Path, explicit: str | None, default: str = "embedded") -> str:
    """The model to run an SAE directory with: ``explicit`` (--model) if given and consistent with the SAE's
    recorded model, else the recorded one, else ``default``. A local model directory is always accepted."""
    recorded = recorded_model(sae_dir)
    if explicit is None:
        return recorded or default
    if recorded and not Path(explicit).is_dir() and canonical(explicit) != recorded:
        raise ConfigError(
            f"--model {explicit} does not match the model the SAE '{sae_dir}' was trained on "
            f"({recorded}, from its cfg.json); drop --model to use {recorded}, or pass a local copy "
            "of that model's directory"
        )
    return explicit
