"""The one device rule: what 'auto' means, which names are valid, and whether a device is usable here."""

from __future__ import annotations

import re
from typing import Annotated

import torch
from pydantic import AfterValidator

from sae_lab.configbase import ConfigError

DEVICE_NAMES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(name: str) -> str:
    """``name`` if it is a device name sae-lab accepts, else ValueError listing the allowed ones."""
    if not _DEVICE_RE.match(str(name)):
        raise ValueError(f"device must be {DEVICE_NAMES}, got '{name}'")
    return name


DeviceName = Annotated[str, AfterValidator(check_device_name)]  # a config field holding a device name


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device = "auto", auto: str | torch.device | None = None) -> torch.device:
    """A torch.device; 'auto' means ``auto`` when given (e.g. the model's device, so SAEs sit next to their
    model), else CUDA, then MPS, then CPU."""
    if str(device) != "auto":
        return torch.device(device)
    if auto is not None:
        return torch.device(auto)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_available(device: torch.device, what: str = "device") -> None:
    """ConfigError if ``device`` is CUDA or MPS and this machine has none (``what`` names the setting)."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{what} is '{device}' but CUDA is not available; use 'auto' or 'cpu'")
    if device.type == "mps" and not mps_available():
        raise ConfigError(f"{what} is '{device}' but MPS is not available; use 'auto' or 'cpu'")
