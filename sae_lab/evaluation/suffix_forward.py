"""Share the forward up to a hook between the variants of one batch (clean, spliced SAEs, ablations).

The clean forward is the bridge's own (``run_with_cache``). While it runs, a forward pre-hook on each needed
block records what that block receives: its hidden state and the keyword arguments the Hugging Face model
passes it (the causal / attention mask, the rotary ``position_embeddings``, ``position_ids``). A variant then
runs only the bridge's block modules from there on, then ``ln_final`` and ``unembed``, with its hooks attached
through ``bridge.hooks``: every hook point of those blocks fires as in a full forward, so a splice at any hook
inside a block (residual, ``attn.hook_z``, ``hook_mlp_out``, ...) works unchanged, and the logits are the
full forward's bit for bit. (TransformerLens 4's ``start_at_layer`` cannot do this: it still runs blocks
0..L-1 and discards their output.) A ``blocks.L.hook_resid_post`` is the input of block L+1, so its variants
start there, the hook attached as ``blocks.{L+1}.hook_resid_pre``. Several hooks: each variant starts at its
own hook's block.

Falls back to full forwards (``bridge.run_with_hooks``) for hooks outside the blocks (embedding, final norm),
and for every variant if the first batch's check fails: the clean logits recomputed from each recorded block
must match the bridge's (an architecture whose model is not "blocks, then final norm, then unembedding").
"""

from __future__ import annotations

import logging

import torch

from sae_lab.hooknames import parse_hook

log = logging.getLogger(__name__)

# Per-call state a block must not reuse: the clean forward's KV cache (a variant would attend to it) and flags.
_PER_CALL = frozenset({"hidden_states", "cache", "past_key_values", "past_key_value", "use_cache", "output_attentions"})


def start_of(hook: str, n_layers: int) -> tuple[int, str] | None:
    """(first block a variant changed at ``hook`` must run, the name to attach its hook by), or None when
    ``hook`` is outside the blocks (full forward)."""
    h = parse_hook(hook)
    if not h.in_block:
        return None
    if h.module is None and h.kind == "hook_resid_post" and h.layer + 1 < n_layers:
        return h.layer + 1, f"blocks.{h.layer + 1}.hook_resid_pre"
    return h.layer, hook


class SharedForward:
    """The forwards of one eval: ``clean`` once per batch, then ``logits`` per variant from its hook's block."""

    def __init__(self, bridge, hooks: list[str], share: bool = True):
        blocks = getattr(bridge, "blocks", None)  # architectures without a 'blocks' stack: full forwards
        self.bridge, self.share, self.checked = bridge, share and blocks is not None, False
        self.starts = {h: start_of(h, len(blocks)) if self.share else None for h in hooks}
        self.inputs: dict[int, tuple[torch.Tensor, dict]] = {}
        self.counts = {"from_block": 0, "full": 0}
        self.ids: torch.Tensor | None = None
        self.kwargs: dict = {}

    def clean(self, ids: torch.Tensor, names_filter: list[str], **kwargs):
        """``bridge.run_with_cache(ids, names_filter=..., **kwargs)`` (e.g. ``attention_mask``), recording the inputs
        of the blocks variants start at."""
        self.ids, self.kwargs, self.inputs = ids, kwargs, {}
        layers = {s[0] for s in self.starts.values() if s is not None} if self.share else set()
        handles = [
            self.bridge.blocks[layer].register_forward_pre_hook(self._recorder(layer), with_kwargs=True)
            for layer in layers
        ]
        try:
            logits, cache = self.bridge.run_with_cache(ids, names_filter=names_filter, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        if not self.checked:
            self._check(logits)
        return logits, cache

    def logits(self, hook: str, fwd_hooks: list) -> torch.Tensor:
        """Logits of the last ``clean`` batch with ``fwd_hooks`` (hooks at ``hook``) attached."""
        start = self.starts.get(hook)
        if start is None or start[0] not in self.inputs:
            self.counts["full"] += 1
            return self.bridge.run_with_hooks(self.ids, fwd_hooks=fwd_hooks, **self.kwargs)
        layer, name = start
        self.counts["from_block"] += 1
        return self.from_block(layer, [(name if n == hook else n, fn) for n, fn in fwd_hooks])

    def from_block(self, layer: int, fwd_hooks: list) -> torch.Tensor:
        """Blocks ``layer``.. , final norm and unembedding on the recorded input of block ``layer``."""
        hidden, kwargs = self.inputs[layer]
        with self.bridge.hooks(fwd_hooks=fwd_hooks):
            for block in self.bridge.blocks[layer:]:
                out = block(hidden, **kwargs)
                hidden = out[0] if isinstance(out, tuple) else out
            return self.bridge.unembed(self.bridge.ln_final(hidden))

    def _recorder(self, layer: int):
        def record(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            self.inputs[layer] = (hidden, {k: v for k, v in kwargs.items() if k not in _PER_CALL})

        return record

    def _check(self, clean_logits: torch.Tensor) -> None:
        """Once: the clean logits from every recorded block must equal the bridge's, else share nothing."""
        self.checked = True
        for layer in sorted(self.inputs):
            if not torch.allclose(self.from_block(layer, []).float(), clean_logits.float(), rtol=1e-5, atol=1e-5):
                log.warning(
                    "eval: running from block %d does not reproduce the model's logits (%s); "
                    "every variant runs the full forward",
                    layer,
                    type(self.bridge.original_model).__name__,
                )
                self.share, self.inputs = False, {}
                return
