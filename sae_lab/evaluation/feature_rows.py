"""Turn the final streaming state (+ decoder directions) into the feature database's table rows."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from sae_lab.evaluation.config import AnalyzeConfig
from sae_lab.evaluation.feature_stats import UNSET


def feature_rows(s: dict[str, torch.Tensor], W_dec: torch.Tensor) -> Iterator[tuple]:
    n = max(int(s["n_tokens"]), 1)
    fired = s["fired"].numpy()
    mean = (s["sum_act"] / s["fired"].clamp_min(1)).numpy()
    hist_max = torch.where(s["exp"] == UNSET, 0.0, torch.pow(2.0, s["exp"].double())).numpy()
    norms = W_dec.detach().float().norm(dim=1).cpu().numpy()
    hist = s["hist"].numpy().astype("<i8")
    max_act = s["max_act"].numpy()
    for f in range(len(fired)):
        yield (f, int(fired[f]), fired[f] / n, float(mean[f]), float(max_act[f]), float(hist_max[f]),
               hist[f].tobytes(), float(norms[f]))


def _example_rows(kind: str, feat: np.ndarray, interval: np.ndarray, rank: np.ndarray, val: np.ndarray,
                  gidx: np.ndarray, ids: np.ndarray, acts: np.ndarray, T: int, left: int) -> Iterator[tuple]:
    valid = ids >= 0
    ids, acts = ids.astype("<i4"), acts.astype("<f4")
    for r in range(len(feat)):
        pos = int(gidx[r] % T)
        v = valid[r]
        yield (int(feat[r]), kind, int(interval[r]), int(rank[r]), float(val[r]), int(gidx[r]), int(gidx[r] // T), pos,
               max(pos - left, 0), ids[r][v].tobytes(), acts[r][v].tobytes())


def top_example_rows(s: dict[str, torch.Tensor], cfg: AnalyzeConfig, T: int) -> Iterator[tuple]:
    F, K = s["top_val"].shape
    live = (s["top_val"] > 0).numpy()
    f, r = np.nonzero(live)
    return _example_rows("top", f, np.full(len(f), -1), r, s["top_val"].numpy()[f, r], s["top_idx"].numpy()[f, r],
                         s["top_ids"].numpy()[f, r], s["top_acts"].numpy()[f, r], T, cfg.context_left)


def interval_example_rows(s: dict[str, torch.Tensor], cfg: AnalyzeConfig, T: int) -> Iterator[tuple]:
    I = cfg.n_intervals
    val = torch.where(torch.isfinite(s["s_key"]), s["s_val"].double(), -1.0)  # [F*I, S]
    val, order = val.sort(dim=1, descending=True)  # highest value first within an interval
    g, r = np.nonzero((val >= 0).numpy())
    slot = order.numpy()[g, r]
    pick = lambda name: s[name].numpy()[g, slot]  # noqa: E731
    return _example_rows("interval", g // I, g % I, r, pick("s_val"), pick("s_idx"), pick("s_ids"), pick("s_acts"),
                         T, cfg.context_left)


def interval_rows(s: dict[str, torch.Tensor], cfg: AnalyzeConfig) -> Iterator[tuple]:
    I, B = cfg.n_intervals, cfg.hist_bins
    counts = s["hist"].reshape(-1, I, B // I).sum(-1).numpy()
    top = torch.pow(2.0, s["exp"].double()).numpy()
    for f, j in zip(*np.nonzero(counts)):
        yield int(f), int(j), float(j * top[f] / I), float((j + 1) * top[f] / I), int(counts[f, j])


def logit_rows(effects: dict[str, torch.Tensor] | None) -> Iterator[tuple]:
    if effects is None:
        return
    for sign, key in ((1, "pos"), (-1, "neg")):
        ids, vals = effects[f"{key}_ids"].numpy(), effects[f"{key}_vals"].numpy()
        for f in range(ids.shape[0]):
            for r in range(ids.shape[1]):
                yield f, sign, r, int(ids[f, r]), float(vals[f, r])


def neighbour_rows(ids: torch.Tensor, cos: torch.Tensor) -> Iterator[tuple]:
    ids, cos = ids.numpy(), cos.numpy()
    for f in range(ids.shape[0]):
        for r in range(ids.shape[1]):
            yield f, r, int(ids[f, r]), float(cos[f, r])


def cooccurrence_rows(s: dict[str, torch.Tensor], n: int) -> Iterator[tuple]:
    cooc = s["cooc"] + s["cooc"].t()  # stored for i < j only
    counts, other = cooc.topk(min(n, cooc.shape[1]), dim=1)
    fired = s["fired"].numpy()
    counts, other = counts.numpy(), other.numpy()
    for f, r in zip(*np.nonzero(counts > 0)):
        yield int(f), int(r), int(other[f, r]), int(counts[f, r]), float(counts[f, r] / max(fired[f], 1))


def token_rows(tokenizer, vocab_size: int) -> Iterator[tuple]:
    """(id, decoded string) for the whole vocabulary, so every stored id can be shown and searched."""
    n = min(len(tokenizer), vocab_size)
    strings = tokenizer.batch_decode([[i] for i in range(n)], clean_up_tokenization_spaces=False)
    for i, text in enumerate(strings):
        yield i, text
    for i in range(n, vocab_size):
        yield i, f"<{i}>"
