"""Hook names against a model: validation with suggestions, where a forward may stop, filesystem-safe slugs.

The grammar of a name (layer, module, kind) is parsed by :func:`sae_lab.hooknames.parse_hook`.
"""

from __future__ import annotations

import difflib
import fnmatch
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
            raise HookNameError(
                f"unknown hook name '{hook}'.{hint} "
                f"Examples: blocks.0.hook_resid_post, blocks.0.hook_mlp_out, blocks.0.attn.hook_z"
            )
    if len(set(hooks)) != len(hooks):
        raise HookNameError(f"hook names are repeated in {hooks}")


GLOB_CHARS = "*?["


def is_pattern(name: str) -> bool:
    """Whether a hook name is a glob (``blocks.*.hook_resid_post``, ``blocks.[0-3].hook_mlp_out``)."""
    return any(c in name for c in GLOB_CHARS)


def expand_hooks(patterns: list[str], available: list[str], where: str = "hooks") -> list[str]:
    """Hook names and globs (fnmatch: ``*``, ``?``, ``[0-3]``) -> hook names, in the order of ``available`` for each
    glob (the model's order: layer by layer), repeats dropped. A glob that matches nothing is an error that names the
    closest valid names; a plain name is kept as given (``validate_hooks`` checks it)."""
    out: list[str] = []
    for pat in patterns:
        if not is_pattern(pat):
            names = [pat]
        else:
            names = [h for h in available if fnmatch.fnmatchcase(h, pat)]
            if not names:
                close = difflib.get_close_matches(pat.replace("*", "0"), available, n=5, cutoff=0.5)
                hint = f" Closest valid names: {', '.join(close)}." if close else ""
                raise HookNameError(
                    f"{where}: the pattern '{pat}' matches no hook.{hint} Globs use fnmatch: "
                    "blocks.*.hook_resid_post, blocks.[0-3].hook_mlp_out"
                )
        out.extend(n for n in names if n not in out)
    return out


def stop_layer(hooks: list[str]) -> int | None:
    """The ``stop_at_layer`` that still runs the deepest requested hook (None = the whole model)."""
    layers = [parse_hook(h).layer for h in hooks]
    if any(layer is None for layer in layers):
        return None
    return max(layers) + 1  # type: ignore[type-var]


def hook_slug(hook: str) -> str:
    """A filesystem-safe name for a hook's files."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", hook)
