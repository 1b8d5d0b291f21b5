"""Argument checkers shared by the library's APIs, one per kind of argument: a whole number, an index, a list of
indices, a count, a finite number, a flag, a non-empty string. Each returns the value in plain Python form or
raises the caller's error class (``error``) with a message that names the argument, what was wrong and what to
give instead. Integers of any kind are accepted (``int``, numpy integers, 0-d integer tensors and arrays, as
``argmax()`` returns them); floats and bools never stand for whole numbers.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable


def describe(value) -> str:
    """A short description of ``value`` for messages: its type and, when small, its value or shape."""
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) > 0:
        return f"a {type(value).__name__} of shape {tuple(shape)}"
    dtype = getattr(value, "dtype", None)
    kind = f"{type(value).__name__}" + (f" ({dtype})" if dtype is not None else "")
    text = repr(value)
    return f"{text} ({kind})" if len(text) <= 40 else f"a {kind}"


def _is_bool(value) -> bool:
    return isinstance(value, bool) or str(getattr(value, "dtype", "")) in ("bool", "torch.bool")


def as_int(value, name: str, error: type[Exception]) -> int:
    """``value`` as an int if it is an integer scalar of any kind, else ``error``."""
    if not _is_bool(value) and getattr(value, "ndim", 0) == 0:
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise error(f"{name} must be a whole number (an int), got {describe(value)}")


def as_index(value, name: str, size: int, error: type[Exception], noun: str = "index", owner: str = "it") -> int:
    """An int in ``0 .. size-1``; the message says ``{owner} has {size} {noun}s``."""
    i = as_int(value, name, error)
    if not 0 <= i < size:
        raise error(f"{name}: {noun} {i} is out of range: {owner} has {size} {noun}s (0..{size - 1})")
    return i


def as_indices(
    values, name: str, size: int | None, error: type[Exception], noun: str = "index", owner: str = "it"
) -> list[int]:
    """One index or a flat, non-empty list (tuple, 1-D array or tensor) of distinct indices, as a list of ints.
    ``size=None``: any non-negative int."""
    if isinstance(values, (str, bytes)) or getattr(values, "ndim", 1) > 1:
        raise error(f"{name} must be one {noun} or a flat list of them, got {describe(values)}")
    items = [values] if getattr(values, "ndim", None) == 0 or not isinstance(values, Iterable) else list(values)
    if not items:
        raise error(f"{name} is empty; give at least one {noun}")
    out = []
    for v in items:
        if size is None:
            i = as_int(v, name, error)
            if i < 0:
                raise error(f"{name}: {noun} {i} is negative; {noun}s count from 0")
        else:
            i = as_index(v, name, size, error, noun, owner)
        if i in out:
            raise error(f"{name}: {noun} {i} is given twice; give each once")
        out.append(i)
    return out


def as_count(
    value, name: str, error: type[Exception], minimum: int = 1, maximum: int | None = None, why: str = ""
) -> int:
    """A whole number ``>= minimum`` (and ``<= maximum`` when given; ``why`` explains the maximum)."""
    n = as_int(value, name, error)
    if n < minimum:
        raise error(f"{name} must be at least {minimum}, got {n}")
    if maximum is not None and n > maximum:
        raise error(f"{name} must be at most {maximum}{f' ({why})' if why else ''}, got {n}")
    return n


def as_number(value, name: str, error: type[Exception], minimum: float | None = None) -> float:
    """A finite real number (int, float, numpy scalar, 0-d tensor), ``>= minimum`` when given."""
    if _is_bool(value) or isinstance(value, (str, bytes)) or getattr(value, "ndim", 0) != 0:
        raise error(f"{name} must be a number, got {describe(value)}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise error(f"{name} must be a number, got {describe(value)}") from None
    if not math.isfinite(x):
        raise error(f"{name} must be a finite number, got {x}")
    if minimum is not None and x < minimum:
        raise error(f"{name} must be at least {minimum}, got {x}")
    return x


def as_flag(value, name: str, error: type[Exception]) -> bool:
    """A bool (Python or numpy); anything else (a string such as 'False', a number) is refused."""
    if isinstance(value, bool) or type(value).__name__ == "bool":  # numpy.bool
        return bool(value)
    raise error(f"{name} must be True or False, got {describe(value)}")


def as_text(value, name: str, error: type[Exception], what: str = "a string") -> str:
    """A non-empty string."""
    if not isinstance(value, str):
        raise error(f"{name} must be {what}, got {describe(value)}")
    if not value:
        raise error(f"{name} is the empty string; give {what}")
    return value
