"""Prompts: the accepted forms, the model's context length, one string per token.

Checking a prompt (empty, too long, ids outside the vocabulary, a batch where one prompt is expected) is
``checks.prompt_ids``."""

from __future__ import annotations

from typing import Sequence

import torch

Prompt = str | Sequence[int] | torch.Tensor


def context_length(model) -> int:
    """The longest sequence the model accepts (``cfg.n_ctx``)."""
    return int(getattr(model.bridge.cfg, "n_ctx", 0) or 2048)


def token_strings(model, ids: Sequence[int]) -> list[str]:
    """One decoded string per token id."""
    return [model.tokenizer.decode([int(i)]) for i in ids]
