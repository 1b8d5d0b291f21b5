"""Architecture registry: each architecture's file registers its SAE class with ``@register("name")``.

The class names its config (``config_class``, a subclass of :class:`sae_lab.saes.config.SAEConfig`), so the
registry also answers which config class an ``architecture:`` value means. This module imports nothing
from the SAE layer; the package ``sae_lab.saes`` imports every architecture file once, which registers them.
"""

from __future__ import annotations

from typing import Callable

from sae_lab.configbase import ConfigError

_REGISTRY: dict[str, type] = {}


def register(name: str, trainable: bool = True) -> Callable[[type], type]:
    """Class decorator: make ``cls`` (with its ``config_class``) buildable as ``architecture: name``.
    ``trainable=False``: an inference-only architecture (loaded from files, never trained; e.g. JumpReLU), left out
    of ``registered_names`` and ``config_classes`` (what a run config can train)."""

    def deco(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(
                f"SAE architecture '{name}' is registered twice ({_REGISTRY[name].__name__}, {cls.__name__})"
            )
        config = getattr(cls, "config_class", None)
        arch_field = getattr(config, "model_fields", {}).get("architecture")
        if arch_field is None or arch_field.default != name:
            raise ValueError(
                f"{cls.__name__}.config_class must be a config whose architecture defaults to '{name}' "
                f"(architecture: Literal['{name}'] = '{name}')"
            )
        for other in _REGISTRY.values():
            taken = set(getattr(cls, "saelens_loads", ())) & set(getattr(other, "saelens_loads", ()))
            if taken and other is not cls and name not in _REGISTRY:
                raise ValueError(
                    f"{cls.__name__} would load SAELens architecture(s) {sorted(taken)}, which "
                    f"{other.__name__} already loads; set {cls.__name__}.saelens_loads = ()"
                )
        _REGISTRY[name] = cls
        cls.architecture, cls.trainable = name, trainable
        return cls

    return deco


def registered_names() -> list[str]:
    """Names of every trainable registered architecture, sorted."""
    return sorted(n for n, cls in _REGISTRY.items() if cls.trainable)


def get_sae_class(name: str) -> type:
    """The class registered under ``name``; an unknown name raises ConfigError listing the known ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown SAE architecture '{name}'; known architectures: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def config_classes() -> dict[str, type]:
    """architecture name -> its config class (trainable architectures)."""
    return {name: cls.config_class for name, cls in sorted(_REGISTRY.items()) if cls.trainable}


def registered_classes() -> list[type]:
    """Every registered SAE class, by name."""
    return [cls for _, cls in sorted(_REGISTRY.items())]
