"""The hook-name grammar (TransformerLens names), parsed in one place into a small typed object.

``blocks.L.<kind>`` (block-level: ``hook_resid_pre/mid/post``, ``hook_mlp_out``, ``hook_attn_out``),
``blocks.L.<module>.<kind>`` (inside a block: ``attn.hook_z`` per head, ``mlp.hook_post``, ...), and names
outside the blocks (``hook_embed``, ``embed.hook_out``, ``ln_final.hook_normalized``, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BLOCK = re.compile(r"^blocks\.(\d+)\.(?:(.+)\.)?(\w+)$")
_BEFORE_BLOCKS = ("embed", "hook_embed", "pos_embed", "hook_pos_embed", "rotary_emb")
RESIDUAL_KINDS = frozenset({"hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out", "hook_attn_out"})


@dataclass(frozen=True)
class HookName:
    """One parsed hook name."""

    name: str
    layer: int | None  # block index; -1 before the blocks (embeddings); None after them or unknown
    module: str | None  # sub-module inside the block ('attn', 'mlp', ...), None for block-level hooks
    kind: str  # the last component, e.g. 'hook_resid_post', 'hook_z'

    @property
    def in_block(self) -> bool:
        return self.layer is not None and self.layer >= 0

    @property
    def is_residual(self) -> bool:
        """A block-level hook whose activation is a residual-stream vector (or a write into it)."""
        return self.in_block and self.module is None and self.kind in RESIDUAL_KINDS

    @property
    def is_attn_z(self) -> bool:
        """``blocks.L.attn.hook_z``: the per-head attention outputs ``[..., heads, d_head]`` (before W_O)."""
        return self.in_block and self.module == "attn" and self.kind == "hook_z"

    @property
    def saelens_layer(self) -> int:
        """SAELens's ``hook_layer``: the block index, -1 for anything outside the blocks."""
        return self.layer if self.in_block else -1


def parse_hook(name: str) -> HookName:
    """Parse ``name`` (never raises: unknown shapes get layer None and their last component as kind)."""
    m = _BLOCK.match(name)
    if m:
        return HookName(name, int(m.group(1)), m.group(2), m.group(3))
    layer = -1 if name.startswith(_BEFORE_BLOCKS) else None
    return HookName(name, layer, None, name.rsplit(".", 1)[-1])
