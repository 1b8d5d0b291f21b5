"""Hook names against a model: validation with suggestions, where a forward may stop, filesystem-safe slugs.

The grammar of a name (layer, module, kind) is parsed by :func:`sae_lab.hooknames.parse_hook`.
"""

from __future__ import annotations

import difflib
import re

from sae_lab.hooknames import parse_hook


class HookNameError(ValueError):
    """An unknown hook name; the message lists the closest valid ones."""


def validate_hooks(hooks: list[str], available: list[str]) -> None:
    """Raise HookNameError for any hook not in ``available``, naming the closest valid names."""
    if not hooks:
        raise HookNameError("no hook given; set e.g. hooks: [blocks.6.hook_resid_post]")
    known = set(available)
    for hook in hooks:
        if hook not in known:
            close = difflib.get_close_matches(hook, available, n=5, cutoff=0.5)
            hint = f" Closest valid names: {', '.join(close)}." if close else ""
            raise HookNameError(f"unknown hook name '{hook}'.{hint} "
                                f"Examples: blocks.0.hook_resid_post, blocks.0.hook_mlp_out, blocks.0.attn.hook_z")
    if len(set(hooks)) != len(hooks):
        raise HookNameError(f"hook names are repeated in {hooks}")


def stop_layer(hooks: list[str]) -> int | None:
    """The ``stop_at_layer`` that still runs the deepest requested hook (None = the whole model)."""
    layers = [parse_hook(h).layer for h in hooks]
    if any(layer is None for layer in layers):
        return None
    return max(layers) + 1  # type: ignore[type-var]


def hook_slug(hook: str) -> str:
    """A filesystem-safe name for a hook's files."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", hook)
