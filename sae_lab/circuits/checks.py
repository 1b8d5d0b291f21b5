"""The circuit API's argument checkers, one per kind of argument; each raises CircuitError naming the argument.

Prompts: text (BOS first), or token ids as a list, a 1-D tensor/array, or a ``[1, T]`` tensor/array. A batch
(``[b, T]`` with b > 1) is accepted only where ``batch=True`` (``Spliced.run``); everywhere else it is refused,
never silently cut to its first row or joined into one sequence.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from sae_lab import argcheck as A
from sae_lab.circuits.errors import CircuitError
from sae_lab.circuits.prompts import context_length, token_strings


# ---- numbers and indices ------------------------------------------------------------------------------
def count(value, name: str, minimum: int = 1, maximum: int | None = None, why: str = "") -> int:
    return A.as_count(value, name, CircuitError, minimum, maximum, why)


def number(value, name: str, minimum: float | None = None) -> float:
    return A.as_number(value, name, CircuitError, minimum)


def flag(value, name: str) -> bool:
    return A.as_flag(value, name, CircuitError)


def _owner(sae) -> str:
    return f"the SAE at {sae.cfg.hook_name}"


def feature(sae, value, name: str = "feature") -> int:
    """One feature index of ``sae``."""
    return A.as_index(value, name, sae.cfg.d_sae, CircuitError, "feature", _owner(sae))


def features(sae, values, name: str = "features") -> list[int]:
    """One feature index or a list of distinct ones."""
    return A.as_indices(values, name, sae.cfg.d_sae, CircuitError, "feature", _owner(sae))


def positions(value, name: str = "positions") -> list[int] | None:
    """``"all"`` (None), one non-negative token position or a list of distinct ones (counted from the start)."""
    if isinstance(value, str):
        if value != "all":
            raise CircuitError(f"{name} must be 'all', a token position or a list of them, got {value!r}")
        return None
    return A.as_indices(value, name, None, CircuitError, "position")


def position(value, T: int, name: str = "position") -> int:
    """One token position of a ``T``-token sequence, as ``0..T-1`` (negative values count from the end)."""
    p = A.as_int(value, name, CircuitError)
    if not -T <= p < T:
        raise CircuitError(
            f"{name} {p} is out of range for a sequence of {T} tokens (give 0..{T - 1}, or -1 for the last)"
        )
    return p + T if p < 0 else p


# ---- SAEs ----------------------------------------------------------------------------------------------
def sae(value, name: str = "sae"):
    """An SAE (a module with ``cfg.hook_name``, ``cfg.d_sae`` and ``W_dec``)."""
    cfg = getattr(value, "cfg", None)
    if not (hasattr(cfg, "hook_name") and hasattr(cfg, "d_sae") and hasattr(value, "W_dec")):
        raise CircuitError(f"{name} must be an SAE (sae_lab.load_sae(...)), got {A.describe(value)}")
    return value


def saes(value, name: str = "saes") -> list:
    """One SAE or a list of them, as a list."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    return [sae(s, f"{name}[{i}]" if isinstance(value, (list, tuple)) else name) for i, s in enumerate(items)]


# ---- prompts and tokens --------------------------------------------------------------------------------
def is_batch_shaped(prompt) -> bool:
    """True for 2-D token ids (a ``[b, T]`` tensor or array, or a list of lists), whatever b."""
    if isinstance(prompt, (list, tuple)):
        return bool(prompt) and all(isinstance(p, (list, tuple)) or getattr(p, "ndim", 0) == 1 for p in prompt)
    return getattr(prompt, "ndim", None) == 2


def _id_tensor(prompt, name: str) -> torch.Tensor:
    """Token ids as a 2-D tensor (not yet range-checked)."""
    if isinstance(prompt, (list, tuple)) and not is_batch_shaped(prompt):
        t = torch.tensor([A.as_int(p, f"{name}[{i}]", CircuitError) for i, p in enumerate(prompt)], dtype=torch.long)
    elif isinstance(prompt, (list, tuple, np.ndarray, torch.Tensor)):
        try:
            t = torch.as_tensor(
                np.asarray([np.asarray(p) for p in prompt]) if isinstance(prompt, (list, tuple)) else prompt
            )
        except (ValueError, TypeError):
            raise CircuitError(f"{name}: its rows have different lengths; give one sequence of token ids") from None
    else:
        raise CircuitError(
            f"{name} must be text, a list of token ids, or a 1-D or [1, T] tensor of them, got {A.describe(prompt)}"
        )
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise CircuitError(f"{name}: token ids must be integers, got a tensor of {t.dtype}")
    if t.dim() not in (1, 2):
        raise CircuitError(f"{name} must be a 1-D or [1, T] tensor of token ids, got shape {tuple(t.shape)}")
    return (t[None] if t.dim() == 1 else t).to(torch.long)


def prompt_ids(model, prompt, name: str = "prompt", batch: bool = False) -> torch.Tensor:
    """``prompt`` as ``[b, T]`` long token ids on the model's device, checked: not empty, ids in the vocabulary,
    no longer than the context. Text gets the model's BOS token first (as in training); ids are used as given.
    ``batch=False`` refuses b > 1."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise CircuitError(f"{name}: the prompt is empty; give some text or a non-empty list of token ids")
        ids = model.bridge.to_tokens(prompt, prepend_bos=True, truncate=False)
    else:
        ids = _id_tensor(prompt, name)
    b, T = ids.shape
    if b > 1 and not batch:
        raise CircuitError(
            f"{name} holds {b} sequences (shape [{b}, {T}]); this function takes one prompt: pass "
            f"one row (e.g. {name}[0]) and loop over the rows yourself"
        )
    if T == 0 or b == 0:
        raise CircuitError(f"{name}: the prompt is empty; give some text or a non-empty list of token ids")
    vocab = int(model.bridge.cfg.d_vocab)
    bad = ids[(ids < 0) | (ids >= vocab)]
    if bad.numel():
        raise CircuitError(
            f"{name}: token id {int(bad[0])} is out of range: the vocabulary has {vocab} ids (0..{vocab - 1})"
        )
    n_ctx = context_length(model)
    if T > n_ctx:
        raise CircuitError(
            f"{name}: the prompt has {T} tokens, longer than the model's context of {n_ctx} tokens; shorten it"
        )
    return ids.to(model.device)


def token(model, text, name: str) -> int:
    """The id of ``text`` if it is exactly one token (no BOS), else CircuitError naming its tokens."""
    A.as_text(text, name, CircuitError, "a single-token string such as ' Mary'")
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise CircuitError(
            f"{name}: {text!r} is {len(ids)} tokens {token_strings(model, ids)}, not one; name "
            f"single-token strings (often with a leading space, e.g. ' Mary')"
        )
    return int(ids[0])


def tokens(model, texts, name: str = "tokens") -> dict[str, int]:
    """One single-token string or a list of distinct ones, as ``{string: id}`` (each checked with ``token``)."""
    items = [texts] if isinstance(texts, str) else texts
    if not isinstance(items, Sequence):
        raise CircuitError(f"{name} must be a list of single-token strings, got {A.describe(texts)}")
    out: dict[str, int] = {}
    for i, t in enumerate(items):
        tid = token(model, t, f"{name}[{i}]")
        if t in out:
            raise CircuitError(f"{name}: {t!r} is given twice; name each token once")
        out[t] = tid
    return out
