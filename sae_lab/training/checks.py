"""Checks run before training starts: each bad input gets a clear error instead of a failure mid-run."""

from __future__ import annotations

import re
from typing import Sequence

from sae_lab.activations.source import ActivationSource, hook_parts, part_for
from sae_lab.configbase import ConfigError
from sae_lab.devices import check_available
from sae_lab.saes.base import BaseSAE
from sae_lab.training.config import TrainConfig

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def sae_name(sae: BaseSAE) -> str:
    return str(sae.cfg.name)


def check_names(saes: Sequence) -> None:
    """Names label metrics and become directory names: they must be unique and filesystem-safe."""
    names = [sae_name(s) for s in saes]
    if not names:
        raise ConfigError("saes: the sweep holds no SAE; give at least one SAE config")
    for n in names:
        if not _NAME_RE.match(n):
            raise ConfigError(f"saes: name '{n}' must be letters, digits, '_', '-' or '.', not starting with a symbol")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"saes: names must be unique within a sweep; repeated: {', '.join(dupes)} (set each SAE's name)"
        )


def check_source(saes: Sequence[BaseSAE], source: ActivationSource) -> None:
    """Every SAE must match its hook's width in the source, and its hook must be one the source holds."""
    parts = hook_parts(source)
    for sae in saes:
        c = sae.cfg
        hook = getattr(c, "hook_name", None)
        if len(parts) > 1 and hook not in parts:
            raise ConfigError(
                f"SAE '{c.name}' has hook_name='{hook}' but the activation source holds the hooks "
                f"{', '.join(parts)}; set its hook_name to one of them (or add its hook to the run's hooks)"
            )
        part = part_for(parts, hook)
        if int(c.d_in) != part.d_in:
            raise ConfigError(
                f"SAE '{c.name}' has d_in={c.d_in} but the activation source has d_in={part.d_in} "
                f"(hook '{part.hook_name}'); set the SAE's d_in to {part.d_in} or use a matching source"
            )
        if hook and part.hook_name and hook != part.hook_name:
            raise ConfigError(
                f"SAE '{c.name}' has hook_name='{hook}' but the activation source holds '{part.hook_name}'; "
                "make them the same (or use a cache of that hook)"
            )


def check_gradients(saes: Sequence[BaseSAE], source: ActivationSource) -> None:
    """SAEs whose training rule needs the LM loss's gradient (g-SAE) need a source that yields it."""
    needy = [sae_name(s) for s in saes if getattr(s, "needs_gradients", False)]
    if needy and not getattr(source, "has_gradients", False):
        raise ConfigError(
            f"SAE(s) {', '.join(needy)} select latents with the LM loss's gradient (selection: gradient, g-SAE), "
            f"but the activation source ({source.describe().get('kind', type(source).__name__)}) has no gradients. "
            "Train them from a live stream with gradients: cache: null in the run config (sae-lab run/train), or "
            "sae_lab.activations.grad_stream.GradientStreamingSource in Python; or set selection: activation"
        )


def check_batch(saes: Sequence, cfg: TrainConfig) -> None:
    """Batch-size rules: k <= d_sae, k*batch_size must fit the batch x latent matrix, plus each SAE's own rules."""
    for sae in saes:
        c = sae.cfg
        k, d_sae = getattr(c, "k", None), getattr(c, "d_sae", None)
        if k is not None and d_sae is not None and k > d_sae:
            raise ConfigError(f"SAE '{c.name}': k={k} exceeds d_sae={d_sae}; k must be at most d_sae")
        if k is not None and k * cfg.batch_size < 1:
            raise ConfigError(f"SAE '{c.name}': k*batch_size = {k}*{cfg.batch_size} must be at least 1")
        own_check = getattr(sae, "check_batch_size", None) or getattr(c, "check_batch_size", None)
        if callable(own_check):
            try:
                own_check(cfg.batch_size)
            except (ValueError, ConfigError) as e:
                raise ConfigError(f"SAE '{c.name}' cannot train with train.batch_size={cfg.batch_size}: {e}") from None


def preflight(saes: Sequence[BaseSAE], source: ActivationSource, cfg: TrainConfig) -> None:
    """All checks that need no data: names, source compatibility, batch rules, device."""
    check_names(saes)
    check_source(saes, source)
    check_gradients(saes, source)
    check_batch(saes, cfg)
    check_available(cfg.resolved_device(), "train.device")
