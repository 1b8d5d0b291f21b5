"""Architecture registry: each SAE file registers its class under a name with ``@register("name")``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from sae_lab.configbase import ConfigError

if TYPE_CHECKING:
    from sae_lab.saes.base import BaseSAE
    from sae_lab.saes.config import SAEConfig

_REGISTRY: dict[str, type] = {}
# Names the config accepts; the classes are imported lazily (see _load_all) so config.py needs no torch code.
KNOWN_ARCHITECTURES = ("topk", "mutual_choice", "feature_choice", "matching_pursuit", "standard")


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make ``cls`` buildable as ``architecture: name``."""

    def deco(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"SAE architecture '{name}' is registered twice ({_REGISTRY[name].__name__}, {cls.__name__})")
        _REGISTRY[name] = cls
        cls.architecture = name
        return cls

    return deco


def _load_all() -> None:
    import sae_lab.saes  # noqa: F401  (importing the package imports every architecture file)


def registered_names() -> list[str]:
    """Names of every registered architecture, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def get_sae_class(name: str) -> type["BaseSAE"]:
    """The class registered under ``name``; an unknown name raises ConfigError listing the known ones."""
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown SAE architecture '{name}'; known architectures: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_sae(cfg: "SAEConfig | dict") -> "BaseSAE":
    """A freshly initialised SAE for ``cfg`` (an SAEConfig or a plain dict validated into one)."""
    from sae_lab.configbase import build_config
    from sae_lab.saes.config import SAEConfig

    if isinstance(cfg, dict):
        cfg = build_config(SAEConfig, cfg, "sae config")
    return get_sae_class(cfg.architecture)(cfg)
