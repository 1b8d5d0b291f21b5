"""Prompts as token ids: validation (empty, too long, bad ids) and one string per token."""

from __future__ import annotations

from typing import Sequence

import torch

from sae_lab.circuits.errors import CircuitError

Prompt = str | Sequence[int] | torch.Tensor


def context_length(model) -> int:
    """The longest sequence the model accepts (``cfg.n_ctx``)."""
    return int(getattr(model.bridge.cfg, "n_ctx", 0) or 2048)


def to_ids(model, prompt: Prompt, prepend_bos: bool = True) -> torch.Tensor:
    """``prompt`` (text, or token ids) as a ``[1, T]`` long tensor on the model's device.

    Text gets the model's BOS token first (as in training); token ids are used as given."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise CircuitError("the prompt is empty; give some text or a non-empty list of token ids")
        ids = model.bridge.to_tokens(prompt, prepend_bos=prepend_bos, truncate=False)
    else:
        ids = torch.as_tensor(prompt, dtype=torch.long).reshape(1, -1) if len(prompt) else None
        if ids is None:
            raise CircuitError("the prompt is empty; give some text or a non-empty list of token ids")
        vocab = int(model.bridge.cfg.d_vocab)
        bad = ids[(ids < 0) | (ids >= vocab)]
        if bad.numel():
            raise CircuitError(f"token id {int(bad[0])} is out of range: the vocabulary has {vocab} ids "
                               f"(0..{vocab - 1})")
    n_ctx = context_length(model)
    if ids.shape[1] > n_ctx:
        raise CircuitError(f"the prompt has {ids.shape[1]} tokens, longer than the model's context of {n_ctx} "
                           f"tokens; shorten it")
    return ids.to(model.device)


def token_strings(model, ids: Sequence[int]) -> list[str]:
    """One decoded string per token id."""
    return [model.tokenizer.decode([int(i)]) for i in ids]


def single_token(model, text: str) -> int:
    """The id of ``text`` if it is exactly one token (no BOS), else CircuitError naming its tokens."""
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        parts = token_strings(model, ids)
        raise CircuitError(f"{text!r} is {len(ids)} tokens {parts}, not one; name single-token strings "
                           f"(often with a leading space, e.g. ' Mary')")
    return int(ids[0])
