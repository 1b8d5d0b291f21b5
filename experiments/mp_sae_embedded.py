"""Part 2 of experiments/mp_sae.py on the embedded model: does MP's adaptive inference give harder tokens more atoms?"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

HOOK = "blocks.15.hook_resid_post"  # the main job's hook
OUTLIER_MULTIPLE = 10.0  # as the main job's cache: positions above 10x the median norm (attention sinks) excluded


def token_rows(model, hook: str, split: str, max_tokens: int):
    """(raw activations [n, d], next-token loss [n], token ids [n]) at the kept positions of ``split``: special
    tokens, outliers and each context's last position (no next token) excluded."""
    from sae_lab.activations.masks import special_positions
    from sae_lab.data.config import DataConfig
    from sae_lab.data.packing import iter_contexts

    contexts = np.stack(list(iter_contexts(DataConfig(split=split, max_tokens=max_tokens), model.tokenizer)))
    acts, losses = [], []
    with torch.inference_mode():
        for chunk in np.array_split(contexts, max(1, len(contexts) // 8)):
            ids = torch.as_tensor(chunk, dtype=torch.long)
            logits, cache = model.bridge.run_with_cache(ids, names_filter=[hook])
            lp = torch.log_softmax(logits[:, :-1].float(), -1)
            losses.append(-lp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1))
            acts.append(cache[hook][:, :-1].float())
    acts, losses = torch.cat(acts), torch.cat(losses)
    tokens = torch.as_tensor(contexts[:, :-1])
    keep = ~torch.as_tensor(special_positions(contexts, model.tokenizer)[:, :-1])
    norms = acts.norm(dim=-1)
    keep &= norms < OUTLIER_MULTIPLE * norms[keep].median()
    return acts[keep], losses[keep], tokens[keep]


def unigram_rarity(model, tokens: torch.Tensor) -> torch.Tensor:
    """-log frequency of each token in the training split (add-one smoothed)."""
    from sae_lab.data.config import DataConfig
    from sae_lab.data.packing import iter_contexts

    counts = Counter()
    for ctx in iter_contexts(DataConfig(split="train"), model.tokenizer):
        counts.update(ctx.tolist())
    total = sum(counts.values()) + len(counts)
    return torch.tensor([-math.log((counts.get(int(t), 0) + 1) / total) for t in tokens])


def small_mp(model, a):
    """--quick: (a small MP SAE trained on 8k training tokens of the hook, normalised like a cache: mean ||x|| =
    sqrt(d); that scale, which the held-out activations are multiplied by before encoding)."""
    from mp_sae import train_all

    x, _, _ = token_rows(model, HOOK, "train", 8192)
    scale = math.sqrt(x.shape[1]) / float(x.norm(dim=-1).mean())
    sae = train_all(x * scale, 4 * x.shape[1], 16, 4 * x.shape[0], 0, 512, archs=("matching_pursuit",))
    return sae["matching_pursuit"], scale


def adaptive_embedded(a) -> dict:
    """L0/FVU of the MP SAE as τ varies, and Spearman correlations of per-token L0 with loss and rarity."""
    from mp_sae import TAUS, with_stop
    from scipy.stats import spearmanr

    from sae_lab.models import load_model

    model = load_model("embedded", "cpu")
    if a.quick:
        sae, in_scale = small_mp(model, a)
        source = "a small MP SAE trained in --quick mode (8k tokens, 2,304 latents, k 16)"
    else:
        from sae_lab import load_sae

        path = a.run / "saes" / "matching_pursuit_k32"
        sae, in_scale = load_sae(path).eval(), 1.0
        source = str(path)
    x, loss, tokens = token_rows(model, HOOK, "validation", 2048 if a.quick else 16384)
    x = x * in_scale
    rarity = unigram_rarity(model, tokens)
    k = sae.cfg.k
    rows = []
    for tau in TAUS:
        with torch.no_grad():
            z = with_stop(sae, tau, 4 * k).encode(x)
            fvu = float((x - sae.decode(z)).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
        l0 = (z != 0).sum(1).float()
        row = {"tau": tau, "l0": float(l0.mean()), "l0_std": float(l0.std()), "fvu": fvu}
        if tau > 0 and float(l0.std()) > 0:
            row["spearman_loss"] = float(spearmanr(l0, loss).statistic)
            row["spearman_rarity"] = float(spearmanr(l0, rarity).statistic)
            edges = torch.quantile(loss, torch.tensor([0.2, 0.4, 0.6, 0.8]))
            bins = torch.bucketize(loss, edges)
            row["l0_by_loss_quintile"] = [float(l0[bins == b].mean()) for b in range(5)]
        rows.append(row)
    return {
        "source": source,
        "hook": HOOK,
        "n_tokens": int(x.shape[0]),
        "k": k,
        "rows": rows,
        "mean_loss": float(loss.mean()),
    }
