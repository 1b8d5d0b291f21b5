"""Files: SAELens on-disk layout (cfg.json + sae_weights.safetensors) plus sae-lab's own metadata.

A saved directory holds
- ``cfg.json`` and ``sae_weights.safetensors`` in SAELens layout wherever SAELens has an equivalent
  architecture (each architecture's file says which: ``saelens_architecture``, ``saelens_fields``; e.g.
  topk -> 'topk', mutual/feature choice -> 'jumprelu' with a threshold vector, standard -> 'standard',
  non-negative matching pursuit with fixed/absolute stopping -> 'matching_pursuit', whose weights file holds
  only W_dec and b_dec); an SAE with no SAELens equivalent gets the architecture 'sae_lab_<architecture>',
  which SAELens refuses rather than running a different rule;
- ``sae_lab_state.safetensors``: our extra buffers (dead counters, density EMAs, ...);
- ``sae_lab.json``: our full config, the class, the fold scale.
Only JSON and safetensors are ever read (never pickle). See README.md in this folder for the mapping.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from sae_lab.configbase import ConfigError
from sae_lab.fileio import path_problem, sha256_file
from sae_lab.hooknames import parse_hook
from sae_lab.saes import registry
from sae_lab.saes.config import SAEConfig

if TYPE_CHECKING:  # base imports this module (save/load)
    from sae_lab.saes.base import BaseSAE

SAELENS_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
FORMAT = "sae-lab/1"


def save_sae(sae: BaseSAE, directory: str | Path, fold_scale: float | None = None,
             metadata: dict | None = None) -> Path:
    """Write ``sae`` to ``directory``; with ``fold_scale`` s the saved SAE applies to raw x (training saw s·x)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if fold_scale is not None:
        state, cfg = sae.folded_tensors(float(fold_scale))
    else:
        state, cfg = {k: v.detach().clone() for k, v in sae.state_dict().items()}, sae.cfg
    arch, sl_arch = sae.architecture, type(sae).saelens_architecture(cfg)
    weights = {k: state.pop(k) for k in SAELENS_KEYS if k in state}
    if sl_arch == "jumprelu":
        weights["threshold"] = weights["threshold"].expand(cfg.d_sae)
    weights = {k: v.float().contiguous().cpu() for k, v in weights.items()}
    save_file(weights, str(d / "sae_weights.safetensors"))
    save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(d / "sae_lab_state.safetensors"))
    saelens = {**saelens_cfg(cfg, sl_arch or f"sae_lab_{arch}", metadata or {}), **type(sae).saelens_fields(cfg)}
    (d / "cfg.json").write_text(json.dumps(saelens, indent=2))
    ours = {"format": FORMAT, "architecture": arch, "config": cfg.model_dump(mode="json"), "fold_scale": fold_scale,
            "saelens_architecture": sl_arch, "metadata": metadata or {},
            "sha256": {f: sha256_file(d / f) for f in ("sae_weights.safetensors", "sae_lab_state.safetensors")}}
    if sl_arch is None:
        ours["note"] = type(sae).saelens_unmapped_note(cfg)
    (d / "sae_lab.json").write_text(json.dumps(ours, indent=2))
    return d


def saelens_cfg(cfg: SAEConfig, architecture: str, meta: dict) -> dict:
    """cfg.json in SAELens layout (top-level fields of SAELens 5 and the 'metadata' block of SAELens 6); the
    architecture adds its own fields (``saelens_fields``)."""
    common = {"model_name": meta.get("model_name", ""), "hook_name": cfg.hook_name, "hook_head_index": None,
              "prepend_bos": meta.get("prepend_bos", True), "context_size": meta.get("context_size"),
              "dataset_path": meta.get("dataset_path", ""), "sae_lens_training_version": None}
    return {"architecture": architecture, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": "float32", "device": "cpu",
            "apply_b_dec_to_input": True, "normalize_activations": "none", "finetuning_scaling_factor": False,
            "hook_layer": parse_hook(cfg.hook_name).saelens_layer, **common, "activation_fn_str": "relu",
            "metadata": {**common, **{k: v for k, v in meta.items() if k not in common}, "sae_lab_name": cfg.name}}


def load_sae(directory: str | Path, device: str | torch.device | None = None) -> BaseSAE:
    """Load an SAE directory saved by sae-lab, or a SAELens standard/topk/jumprelu/matching_pursuit SAE.
    (``sae_lab.load_sae`` also accepts a run directory holding one SAE.)"""
    d = Path(directory)
    if not (d / "sae_weights.safetensors").is_file():
        raise ConfigError(_not_an_sae_dir(d))
    try:
        sae = _load_ours(d) if (d / "sae_lab.json").is_file() else _load_saelens(d)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise SAEFileError(f"'{d}' is not a usable SAE directory: cfg.json or the weights lack or mis-shape "
                           f"{type(e).__name__}: {e}") from None
    return sae.to(device) if device is not None else sae


def _not_an_sae_dir(d: Path) -> str:
    """What is wrong with ``d``, which lacks ``sae_weights.safetensors``: missing, a link loop, a file, or empty."""
    problem = path_problem(d)
    if problem is not None:
        return f"'{d}' {problem}; give the directory of a saved SAE (it holds sae_weights.safetensors)"
    if not d.is_dir():
        hint = f"give its directory '{d.parent}'" if d.name in ("sae_weights.safetensors", "cfg.json",
                                                                 "sae_lab.json") else "give an SAE directory"
        return f"'{d}' is a file, not an SAE directory: {hint}"
    return f"'{d}' holds no sae_weights.safetensors: not an SAE directory"


class SAEFileError(ConfigError):
    """An SAE file that cannot be used (unreadable, truncated, malformed, non-finite); the message names it."""


def read_json(path: Path) -> dict:
    """A JSON object from ``path``, or SAEFileError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SAEFileError(f"'{path}' cannot be read as JSON ({e}); restore it or save the SAE again") from None
    if not isinstance(data, dict):
        raise SAEFileError(f"'{path}' must hold a JSON object, not {type(data).__name__}")
    return data


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, refusing truncated/damaged files and NaN/inf values, naming both."""
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for truncated or malformed headers
        raise SAEFileError(f"'{path}' is not a readable safetensors file ({type(e).__name__}: {e}); "
                           "it is truncated or damaged: restore it or save the SAE again") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n_bad = int((~torch.isfinite(t)).sum())
            raise SAEFileError(f"'{path}': tensor '{name}' holds {n_bad} NaN/inf value(s); these weights are "
                               "unusable (a diverged or damaged SAE): retrain it or restore the file")
    return tensors


def _load_ours(d: Path):
    info = read_json(d / "sae_lab.json")
    try:
        cls = registry.get_sae_class(info["architecture"])
        # files written before per-architecture configs hold every architecture's options: keep this one's
        fields = cls.config_class.model_fields
        sae = cls(cls.config_class.model_validate({k: v for k, v in info["config"].items() if k in fields}))
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise SAEFileError(f"'{d / 'sae_lab.json'}' does not describe an SAE ({type(e).__name__}: {e})") from None
    state = read_tensors(d / "sae_weights.safetensors")  # unreadable or non-finite: named precisely
    extra = d / "sae_lab_state.safetensors"
    if extra.is_file():
        state.update(read_tensors(extra))
    for fname, digest in (info.get("sha256") or {}).items():  # then any silent change (a flipped bit)
        if (d / fname).is_file() and sha256_file(d / fname) != digest:
            raise SAEFileError(f"'{d / fname}' does not match the SHA-256 recorded in sae_lab.json: the file is "
                               "damaged; restore it or save the SAE again")
    own = sae.state_dict()
    if "threshold" in state and own["threshold"].dim() == 0:
        state["threshold"] = state["threshold"].reshape(-1)[0]
    try:
        sae.load_state_dict(state)
    except RuntimeError as e:
        raise SAEFileError(f"the weights in '{d}' do not fit its config: {e}") from None
    return sae


def _load_saelens(d: Path):
    c = read_json(d / "cfg.json")
    arch = c.get("architecture") or ("topk" if c.get("activation_fn_str") == "topk" else "standard")
    meta = c.get("metadata") or {}
    norm = c.get("normalize_activations") or "none"
    if norm in ("layer_norm", "constant_norm_rescale"):
        raise ConfigError(f"SAELens normalize_activations='{norm}' depends on each input and cannot be folded; "
                          "unsupported")
    if norm != "none":
        warnings.warn(f"SAELens normalize_activations='{norm}': the scale is not stored; inputs must be scaled as "
                      "in training")
    loaders = {name: cls for cls in registry.registered_classes() for name in cls.saelens_loads}
    if arch not in loaders:
        raise ConfigError(f"SAELens architecture '{arch}' is not supported; supported: {', '.join(sorted(loaders))}")
    W = {k: v.float() for k, v in read_tensors(d / "sae_weights.safetensors").items()}
    fields = dict(d_in=int(c["d_in"]), d_sae=int(c["d_sae"]), name=d.name or "saelens",
                  hook_name=c.get("hook_name") or meta.get("hook_name") or "")
    sae = loaders[arch].from_saelens(c, W, fields)
    sae.loaded_from = f"saelens:{arch}"
    return sae


def load_encoder_weights(sae: BaseSAE, cfg_json: dict, W: dict[str, torch.Tensor]) -> BaseSAE:
    """Copy a SAELens encoder SAE's W_enc, b_enc, W_dec, b_dec into ``sae`` (folding apply_b_dec_to_input=False
    into b_enc: x W + b = (x - b_dec) W + (b + b_dec W)); returns ``sae``."""
    b_enc = W["b_enc"]
    if not cfg_json.get("apply_b_dec_to_input", True):
        b_enc = b_enc + W["b_dec"] @ W["W_enc"]
    with torch.no_grad():
        for name, value in (("W_enc", W["W_enc"]), ("W_dec", W["W_dec"]), ("b_dec", W["b_dec"]), ("b_enc", b_enc)):
            getattr(sae, name).copy_(value)
    return sae
