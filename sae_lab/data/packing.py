"""Tokenise documents and pack them into fixed-length contexts.

Every context starts with BOS and holds ``context_length - 1`` tokens of a continuous stream in which
documents are joined by a separator token (EOS by default). Pre-tokenised rows that are already exactly
``context_length`` long are taken as ready-made contexts.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Iterator

import numpy as np

from sae_lab.data.config import DataConfig
from sae_lab.data.sources import DataSourceError, Document, iter_documents

TOKENIZE_BATCH = 64


def special_ids(tokenizer) -> dict[str, int | None]:
    """BOS/EOS/pad ids, falling back to EOS for a missing BOS (as GPT-2 does)."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return {"bos": bos, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id}


def _tokenized(docs: Iterable[Document], tokenizer) -> Iterator[list[int]]:
    """Token ids per document; text is tokenised in batches (no special tokens added)."""
    it = iter(docs)
    while True:
        chunk = list(itertools.islice(it, TOKENIZE_BATCH))
        if not chunk:
            return
        texts = [d for d in chunk if isinstance(d, str)]
        encoded = iter(tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else iter(())
        for d in chunk:
            yield next(encoded) if isinstance(d, str) else _in_vocab([int(t) for t in d], tokenizer)


def _in_vocab(ids: list[int], tokenizer) -> list[int]:
    """Pre-tokenised ids must exist in the model's vocabulary (an embedding lookup would fail obscurely)."""
    size = max(len(tokenizer), int(getattr(tokenizer, "vocab_size", 0) or 0))
    bad = [t for t in ids if not 0 <= t < size]
    if bad:
        raise DataSourceError(
            f"pre-tokenised data holds token id {bad[0]} ({len(bad)} such), outside the "
            f"tokenizer's vocabulary of {size}; was it tokenised for another model?"
        )
    return ids


def pack_token_stream(
    docs: Iterable[list[int]], context_length: int, bos: int, sep: int | None
) -> Iterator[np.ndarray]:
    """Pack token lists into int32 contexts [BOS, t1 … t_{n-1}]; a final partial context is dropped."""
    body = context_length - 1
    buf: list[int] = []
    first = True
    for ids in docs:
        if len(ids) == context_length and ids[0] == bos and not buf:
            yield np.asarray(ids, dtype=np.int32)  # an already-packed context
            continue
        if sep is not None and not first:
            buf.append(sep)
        first = False
        buf.extend(ids)
        while len(buf) >= body:
            yield np.asarray([bos] + buf[:body], dtype=np.int32)
            del buf[:body]


def iter_contexts(cfg: DataConfig, tokenizer) -> Iterator[np.ndarray]:
    """The deterministic stream of packed contexts for ``cfg``, limited by ``cfg.max_tokens``."""
    ids = special_ids(tokenizer)
    if ids["bos"] is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token; cannot mark context starts")
    sep = {"eos": ids["eos"], "bos": ids["bos"], "none": None}[cfg.separator]
    stream = pack_token_stream(_tokenized(iter_documents(cfg), tokenizer), cfg.context_length, ids["bos"], sep)
    return itertools.islice(stream, cfg.max_contexts) if cfg.max_contexts is not None else stream


def special_token_mask(tokens: np.ndarray, tokenizer) -> np.ndarray:
    """True where a position holds BOS, EOS or pad (positions users exclude from training)."""
    ids = [i for i in special_ids(tokenizer).values() if i is not None]
    return np.isin(tokens, np.asarray(sorted(set(ids)), dtype=tokens.dtype))


def count_contexts(cfg: DataConfig, tokenizer) -> int | None:
    """How many contexts ``cfg`` yields, when that is cheap to know (a token limit or the embedded corpus)."""
    if cfg.max_contexts is not None and cfg.source != "embedded":
        return cfg.max_contexts
    if cfg.source == "embedded":
        return sum(1 for _ in iter_contexts(cfg, tokenizer))
    return None
