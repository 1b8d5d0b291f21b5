"""What a feature's decoder direction does: logit effects through the unembedding, nearest features.

Logit effects. Feature i writes d_i (its decoder row) into the hook. For residual-stream hooks
(``hook_resid_pre/mid/post``, ``hook_mlp_out``, ``hook_attn_out``) d_i is already a residual direction; for
``attn.hook_z`` SAEs d_i is reshaped to [heads, d_head] and mapped through that layer's W_O (summed over
heads). The direction then goes through the final norm and the unembedding. The final norm is not linear:
RMSNorm(x) = γ ⊙ x / rms(x). We drop 1/rms(x), a positive scalar per token that rescales every logit
alike and so does not change which tokens a direction promotes, and keep γ: effect = (γ ⊙ d) W_U. For
LayerNorm models the direction is also centred (LayerNorm removes the mean over d_model) before γ. The
values are therefore logit changes per unit of activation at unit residual rms (the direct path only:
later layers are ignored). Hooks with no residual meaning (e.g. ``mlp.hook_post``) get no logit effects.
"""

from __future__ import annotations

import torch

from sae_lab.hooknames import parse_hook
from sae_lab.models import LoadedModel
from sae_lab.saes.base import BaseSAE


@torch.no_grad()
def residual_directions(sae: BaseSAE, model: LoadedModel) -> torch.Tensor | None:
    """[d_sae, d_model] residual-stream directions of the SAE's decoder rows, or None if the hook has none."""
    W = sae.W_dec.detach().float()
    hook = parse_hook(sae.cfg.hook_name)
    if hook.is_attn_z:
        W_O = model.bridge.blocks[hook.layer].attn.W_O.detach().float()  # [H, d_head, d_model]
        return W @ W_O.reshape(-1, W_O.shape[-1]).to(W.device)
    if hook.is_residual and W.shape[1] == model.d_model:
        return W
    return None


@torch.no_grad()
def unembedding(model: LoadedModel) -> torch.Tensor:
    """γ-folded W_U [d_model, vocab] (see the module docstring)."""
    W_U = model.bridge.W_U.detach().float()
    gamma = getattr(model.bridge.ln_final, "weight", None)
    if gamma is not None:
        W_U = W_U * gamma.detach().float().unsqueeze(1)
    return W_U


def _centred(model: LoadedModel) -> bool:
    norm = str(getattr(model.bridge.cfg, "normalization_type", "RMS") or "")
    return norm.startswith("LN")


@torch.no_grad()
def logit_effects(dirs: torch.Tensor, model: LoadedModel, n: int, chunk: int = 512) -> dict[str, torch.Tensor]:
    """Top ``n`` positive and negative logit effects per direction: pos/neg ids [F, n] and values [F, n]."""
    W_U = unembedding(model).to(dirs.device)
    if _centred(model):
        dirs = dirs - dirs.mean(1, keepdim=True)
    out = {k: [] for k in ("pos_ids", "pos_vals", "neg_ids", "neg_vals")}
    buf = W_U.new_empty(min(chunk, dirs.shape[0]), W_U.shape[1])  # reused: fresh pages cost ~20% per chunk
    for s in range(0, dirs.shape[0], chunk):
        logits = torch.mm(dirs[s : s + chunk], W_U, out=buf[: min(chunk, dirs.shape[0] - s)])
        pv, pi = blocked_topk(logits, n)
        nv, ni = blocked_topk(logits, n, largest=False)
        out["pos_ids"].append(pi), out["pos_vals"].append(pv), out["neg_ids"].append(ni), out["neg_vals"].append(nv)
    return {k: torch.cat(v).cpu() for k, v in out.items()}


def blocked_topk(x: torch.Tensor, k: int, largest: bool = True, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """``x.topk(k, dim=1)``, exactly, for wide rows: the k blocks of ``block`` columns with the most extreme
    maxima (minima) hold the k largest (smallest) entries, so one amax pass plus a topk over k blocks replace
    a topk over every column (~4x faster on a 49k-token vocabulary)."""
    n, m = x.shape
    if m % block or m // block <= k:
        return x.topk(k, dim=1, largest=largest)
    blocks = x.view(n, m // block, block)
    extreme = blocks.amax(-1) if largest else blocks.amin(-1)
    best = extreme.topk(k, dim=1, largest=largest).indices  # [n, k] block ids
    cand = blocks.gather(1, best.unsqueeze(-1).expand(-1, -1, block)).reshape(n, k * block)
    values, j = cand.topk(k, dim=1, largest=largest)
    return values, best.gather(1, j // block) * block + j % block


@torch.no_grad()
def decoder_neighbours(W_dec: torch.Tensor, n: int, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` features with the highest decoder cosine to each feature (itself excluded): ids, cosines [F, n]."""
    W = W_dec.detach().float()
    W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n = min(n, W.shape[0] - 1)
    ids, cos = [], []
    for s in range(0, W.shape[0], chunk):
        sims = W[s : s + chunk] @ W.t()
        rows = torch.arange(sims.shape[0], device=W.device)
        sims[rows, rows + s] = -float("inf")
        v, i = sims.topk(n, dim=1)
        ids.append(i), cos.append(v)
    return torch.cat(ids).cpu(), torch.cat(cos).cpu()
