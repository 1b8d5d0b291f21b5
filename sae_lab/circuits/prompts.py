"""Prompts: the accepted forms, the model's context length, one string per token.

Checking a prompt (empty, too long, ids outside the vocabulary, a batch where one prompt is expected) is
``checks.prompt_ids``; ``to_ids`` and ``single_token`` are kept as its one-prompt shorthands."""

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


def to_ids(model, prompt: Prompt) -> torch.Tensor:
    """One prompt as checked ``[1, T]`` ids (``checks.prompt_ids``; a batch is refused)."""
    from sae_lab.circuits.checks import prompt_ids

    return prompt_ids(model, prompt)


def single_token(model, text: str, name: str = "token") -> int:
    """The id of single-token ``text`` (``checks.token``)."""
    from sae_lab.circuits.checks import token

    return token(model, text, name)
