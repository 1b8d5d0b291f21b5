"""Turn the final streaming state (+ decoder directions) into the feature database's table rows."""

from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np
import torch

from sae_lab.evaluation.config import AnalyzeConfig
from sae_lab.evaluation.feature_stats import UNSET
from sae_lab.evaluation.pair_counts import top_pairs


def feature_rows(s: dict[str, torch.Tensor], W_dec: torch.Tensor) -> Iterator[tuple]:
    n = max(int(s["n_tokens"]), 1)
    fired = s["fired"].numpy()
    mean = (s["sum_act"] / s["fired"].clamp_min(1)).numpy()
    hist_max = torch.where(s["exp"] == UNSET, 0.0, torch.pow(2.0, s["exp"].double())).numpy()
    norms = W_dec.detach().float().norm(dim=1).cpu().numpy()
    hist = s["hist"].numpy().astype("<i8")
    max_act = s["max_act"].numpy()
    for f in range(len(fired)):
        yield (
            f,
            int(fired[f]),
            fired[f] / n,
            float(mean[f]),
            float(max_act[f]),
            float(hist_max[f]),
            hist[f].tobytes(),
            float(norms[f]),
        )


def _window_blobs(x: np.ndarray, valid: np.ndarray) -> list[bytes]:
    """Per row of ``x`` [n, W], the bytes of its valid entries (a window's valid positions are one contiguous
    run: the context cuts it only at its ends), sliced from one buffer."""
    n, W = valid.shape
    lo, hi = valid.argmax(1), W - valid[:, ::-1].argmax(1)
    if not (valid.sum(1) == hi - lo).all():  # not contiguous: cannot happen for windows; mask row by row
        return [x[r][valid[r]].tobytes() for r in range(n)]
    buf, size = x.tobytes(), x.itemsize
    base = np.arange(n) * W
    return [buf[a:b] for a, b in zip(((base + lo) * size).tolist(), ((base + hi) * size).tolist())]


def _example_rows(
    kind: str,
    feat: np.ndarray,
    interval: np.ndarray,
    rank: np.ndarray,
    at: tuple[np.ndarray, ...],
    arrays: tuple[np.ndarray, ...],
    T: int,
    left: int,
    chunk: int = 1 << 15,
) -> Iterator[tuple]:
    """Rows of examples: entry ``r`` is arrays (value, token index, window ids, window acts) at index ``at[.][r]``;
    built ``chunk`` rows at a time, so memory stays bounded at any d_sae."""
    for c in range(0, len(feat), chunk):
        sl = slice(c, c + chunk)
        val, gidx, ids, acts = (a[tuple(i[sl] for i in at)] for a in arrays)
        valid = ids >= 0
        pos = gidx % T
        yield from zip(
            feat[sl].tolist(),
            itertools.repeat(kind),
            interval[sl].tolist(),
            rank[sl].tolist(),
            val.tolist(),
            gidx.tolist(),
            (gidx // T).tolist(),
            pos.tolist(),
            np.maximum(pos - left, 0).tolist(),
            _window_blobs(np.ascontiguousarray(ids, "<i4"), valid),
            _window_blobs(np.ascontiguousarray(acts, "<f4"), valid),
        )


def top_example_rows(s: dict[str, torch.Tensor], cfg: AnalyzeConfig, T: int) -> Iterator[tuple]:
    f, r = np.nonzero((s["top_val"] > 0).numpy())
    arrays = tuple(s[k].numpy() for k in ("top_val", "top_idx", "top_ids", "top_acts"))
    yield from _example_rows("top", f, np.full(len(f), -1), r, (f, r), arrays, T, cfg.context_left)


def interval_example_rows(s: dict[str, torch.Tensor], cfg: AnalyzeConfig, T: int) -> Iterator[tuple]:
    I = cfg.n_intervals
    val = torch.where(torch.isfinite(s["s_key"]), s["s_val"].double(), -1.0)  # [F*I, S]
    val, order = val.sort(dim=1, descending=True)  # highest value first within an interval
    g, r = np.nonzero((val >= 0).numpy())
    del val
    slot = order.numpy()[g, r]
    arrays = tuple(s[k].numpy() for k in ("s_val", "s_idx", "s_ids", "s_acts"))
    yield from _example_rows("interval", g // I, g % I, r, (g, slot), arrays, T, cfg.context_left)


def example_rows(s: dict[str, torch.Tensor], cfg: AnalyzeConfig, T: int) -> Iterator[tuple]:
    """The examples table: every feature's top examples, then its interval samples."""
    yield from top_example_rows(s, cfg, T)
    yield from interval_example_rows(s, cfg, T)


def top_token_rows(s: dict[str, torch.Tensor], cfg: AnalyzeConfig) -> Iterator[tuple]:
    """The top_tokens table (``feature_db.TOP_TOKENS_SELECT`` over the top examples), from the state: per
    (activating token, feature) of the live top examples, their count and largest value; key order."""
    F = s["top_val"].shape[0]
    f, r = np.nonzero((s["top_val"] > 0).numpy())
    key = s["top_ids"].numpy()[f, r, cfg.context_left].astype(np.int64) * F + f  # the window's centre token
    order = np.argsort(key, kind="stable")
    key, val = key[order], s["top_val"].numpy()[f, r][order]
    if not len(key):
        return iter(())
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    count = np.diff(np.append(starts, len(key)))
    return zip(
        (key[starts] // F).tolist(),
        (key[starts] % F).tolist(),
        count.tolist(),
        np.maximum.reduceat(val, starts).tolist(),
    )


def interval_rows(s: dict[str, torch.Tensor], cfg: AnalyzeConfig) -> Iterator[tuple]:
    I, B = cfg.n_intervals, cfg.hist_bins
    counts = s["hist"].reshape(-1, I, B // I).sum(-1).numpy()
    top = torch.pow(2.0, s["exp"].double()).numpy()
    for f, j in zip(*np.nonzero(counts)):
        yield int(f), int(j), float(j * top[f] / I), float((j + 1) * top[f] / I), int(counts[f, j])


def _ranked(*columns: np.ndarray) -> Iterator[tuple]:
    """Rows (feature, rank, *columns) of [F, n] arrays, all as Python scalars (one vectorised conversion)."""
    F, n = columns[0].shape
    feature, rank = np.divmod(np.arange(F * n), n)
    return zip(feature.tolist(), rank.tolist(), *(c.reshape(-1).tolist() for c in columns))


def logit_rows(effects: dict[str, torch.Tensor] | None) -> Iterator[tuple]:
    if effects is None:
        return
    for sign, key in ((1, "pos"), (-1, "neg")):
        ids, vals = effects[f"{key}_ids"].numpy(), effects[f"{key}_vals"].numpy()
        for f, r, i, v in _ranked(ids, vals):
            yield f, sign, r, i, v


def neighbour_rows(ids: torch.Tensor, cos: torch.Tensor) -> Iterator[tuple]:
    return _ranked(ids.numpy(), cos.numpy())


def cooccurrence_rows(s: dict[str, torch.Tensor], n: int) -> Iterator[tuple]:
    """Each feature's ``n`` most co-active features (count > 0), from the sparse pair table (computed when the
    first row is asked for, so its scratch memory is not held alongside other tables' work)."""
    F = s["fired"].shape[0]
    counts, other = top_pairs(s["cooc_keys"].numpy(), s["cooc_counts"].numpy(), F, n)
    fraction = counts.double() / s["fired"].clamp_min(1).double().unsqueeze(1)
    live = (counts > 0).numpy()
    f, r = np.nonzero(live)
    yield from zip(
        f.tolist(),
        r.tolist(),
        other.numpy()[live].tolist(),
        counts.numpy()[live].tolist(),
        fraction.numpy()[live].tolist(),
    )


def vocabulary(tokenizer, vocab_size: int) -> list[str]:
    """The decoded string of every id of the unembedding (``<id>`` beyond the tokenizer's vocabulary), for the
    tokens table, so every stored id can be shown and searched."""
    n = min(len(tokenizer), vocab_size)
    ids = [[i] for i in range(n)]
    backend = getattr(tokenizer, "backend_tokenizer", None)  # a fast tokenizer decodes 8x faster without the wrapper
    strings = (
        backend.decode_batch(ids, skip_special_tokens=False)
        if backend is not None
        else tokenizer.batch_decode(ids, clean_up_tokenization_spaces=False)
    )
    return strings + [f"<{i}>" for i in range(n, vocab_size)]
