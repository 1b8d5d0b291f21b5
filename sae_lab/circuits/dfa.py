"""Direct feature attribution for attention-output SAEs (Kissane et al. 2024) on ``blocks.L.attn.hook_z``.

The SAE's pre-activation is linear in z: ``pre_f = sum_h z_h . W_enc[h, :, f] + (b_enc[f] - b_dec . W_enc[:, f])``,
and each head's output at destination t is ``z_h[t] = sum_s pattern[h, t, s] v_{kv(h)}[s]``. So pre_f splits
exactly into ``pattern[h, t, s] * (v_{kv(h)}[s] . W_enc[h, :, f])`` per head h and source position s, plus the
bias term. With grouped-query attention query head h reads key/value head ``h // (n_heads / n_kv_heads)``
(Hugging Face's ``repeat_kv``). Any value bias is inside v and so inside the per-source terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, repeat

from sae_lab.circuits import checks
from sae_lab.circuits.errors import CircuitError
from sae_lab.circuits.prompts import Prompt, token_strings
from sae_lab.hooknames import parse_hook


@dataclass
class DirectFeatureAttribution:
    """``by_head_source[h, s]`` (zero for s > position) + ``bias`` == ``pre_activation``; ``activation`` is the
    feature's code by the SAE's inference rule."""

    tokens: list[str]
    feature: int
    position: int
    by_head_source: torch.Tensor  # [n_heads, T]
    bias: float
    pre_activation: float
    activation: float

    @property
    def by_head(self) -> torch.Tensor:
        return self.by_head_source.sum(1)

    @property
    def by_source(self) -> torch.Tensor:
        return self.by_head_source.sum(0)

    def to_dict(self) -> dict:
        return {
            "tokens": self.tokens,
            "feature": self.feature,
            "position": self.position,
            "by_head_source": self.by_head_source.tolist(),
            "bias": self.bias,
            "pre_activation": self.pre_activation,
            "activation": self.activation,
        }


@torch.inference_mode()
def direct_feature_attribution(
    model, sae, prompt: Prompt, feature: int, position: int = -1
) -> DirectFeatureAttribution:
    """Split ``feature``'s pre-activation at ``position`` (default: the last token) by head and source, on one
    ``prompt`` (text, token ids, or a ``[1, T]`` tensor; a batch is refused). ``feature``: one index."""
    hook = parse_hook(checks.sae(sae).cfg.hook_name)
    if not hook.is_attn_z or not getattr(sae, "has_encoder", True):
        raise CircuitError(
            f"direct feature attribution needs an encoder SAE on blocks.L.attn.hook_z, got "
            f"{sae.cfg.architecture} on '{sae.cfg.hook_name}'"
        )
    from sae_lab.circuits.spliced import check_saes

    check_saes(model, [sae])
    f = checks.feature(sae, feature)
    ids = checks.prompt_ids(model, prompt)
    T = ids.shape[1]
    t = checks.position(position, T)
    L = hook.layer
    names = [f"blocks.{L}.attn.hook_pattern", f"blocks.{L}.attn.hook_v", sae.cfg.hook_name]
    _, cache = model.bridge.run_with_cache(ids, names_filter=names, stop_at_layer=L + 1)
    pattern, v, z = (cache[n][0].to(sae.W_dec.dtype) for n in names)  # [H, T, T], [T, KV, dh], [T, H, dh]
    H, dh = z.shape[1], z.shape[2]
    v_heads = repeat(v, "s kv d -> s (kv g) d", g=H // v.shape[1])  # grouped-query: each KV head serves g heads
    w = rearrange(sae.W_enc[:, f], "(h d) -> h d", h=H, d=dh)  # the feature's encoder column, split by head
    per_source = torch.einsum("shd,hd->hs", v_heads, w)  # [H, T]
    contrib = pattern[:, t, :] * per_source
    bias = float(sae.b_enc[f] - sae.b_dec @ sae.W_enc[:, f])
    x = rearrange(z[t], "h d -> 1 (h d)")  # hook_z at t, heads concatenated as the SAE reads it
    pre, act = float(sae.pre_acts(x)[0, f]), float(sae.encode(x)[0, f])
    return DirectFeatureAttribution(token_strings(model, ids[0]), f, t, contrib.float().cpu(), bias, pre, act)
