"""The one exception type of the circuit API; its message names what was wrong and how to fix it."""

from __future__ import annotations


class CircuitError(ValueError):
    """Bad input to the circuit API (SAE/model mismatch, index out of range, empty or too long prompt, ...)."""
