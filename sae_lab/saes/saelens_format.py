"""Files: SAELens on-disk layout (cfg.json + sae_weights.safetensors) plus sae-lab's own metadata.

A saved directory holds
- ``cfg.json`` and ``sae_weights.safetensors`` in SAELens layout wherever SAELens has an equivalent
  architecture (topk -> 'topk', mutual/feature choice -> 'jumprelu' with a threshold vector, standard ->
  'standard', non-negative matching pursuit with fixed/absolute stopping -> 'matching_pursuit', whose weights
  file holds only W_dec and b_dec); other MP variants get the architecture 'sae_lab_matching_pursuit', which
  SAELens refuses rather than running a different rule;
- ``sae_lab_state.safetensors``: our extra buffers (dead counters, density EMAs, ...);
- ``sae_lab.json``: our full config, the class, the fold scale.
Only JSON and safetensors are ever read (never pickle). See README.md in this folder for the mapping.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sae_lab.configbase import ConfigError
from sae_lab.saes.config import SAEConfig
from sae_lab.saes.registry import get_sae_class

SAELENS_ARCH = {"topk": "topk", "mutual_choice": "jumprelu", "feature_choice": "jumprelu", "standard": "standard",
                "matching_pursuit": "matching_pursuit"}
# written to cfg.json for an MP-SAE that SAELens's matching_pursuit would run differently, so that SAELens refuses it
UNMAPPED_MP = "sae_lab_matching_pursuit"
SAELENS_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
FORMAT = "sae-lab/1"


def save_sae(sae, directory, fold_scale: float | None = None, metadata: dict | None = None) -> Path:
    """Write ``sae`` to ``directory``; with ``fold_scale`` s the saved SAE applies to raw x (training saw s·x)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if fold_scale is not None:
        state, cfg = sae.folded_tensors(float(fold_scale))
    else:
        state, cfg = {k: v.detach().clone() for k, v in sae.state_dict().items()}, sae.cfg
    arch, sl_arch = sae.architecture, saelens_architecture(cfg)
    weights = {k: state.pop(k) for k in SAELENS_KEYS if k in state}
    if sl_arch == "jumprelu":
        weights["threshold"] = weights["threshold"].expand(cfg.d_sae)
    weights = {k: v.float().contiguous().cpu() for k, v in weights.items()}
    save_file(weights, str(d / "sae_weights.safetensors"))
    save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(d / "sae_lab_state.safetensors"))
    (d / "cfg.json").write_text(json.dumps(saelens_cfg(cfg, sl_arch or UNMAPPED_MP, metadata or {}), indent=2))
    ours = {"format": FORMAT, "architecture": arch, "config": cfg.model_dump(mode="json"), "fold_scale": fold_scale,
            "saelens_architecture": sl_arch, "metadata": metadata or {}}
    if sl_arch is None:
        ours["note"] = (f"SAELens's matching_pursuit is non-negative with fixed or absolute stopping; this one "
                        f"(mp_nonneg={cfg.mp_nonneg}, mp_stop={cfg.mp_stop}) is not: SAELens cannot load it, sae-lab can.")
    (d / "sae_lab.json").write_text(json.dumps(ours, indent=2))
    return d


def saelens_architecture(cfg: SAEConfig) -> str | None:
    """The SAELens architecture that computes exactly this SAE's inference rule, or None."""
    if cfg.architecture == "matching_pursuit" and not (cfg.mp_nonneg and cfg.mp_stop in ("fixed", "absolute")):
        return None
    return SAELENS_ARCH.get(cfg.architecture)


def _saelens_mp_fields(cfg: SAEConfig) -> dict:
    """SAELens matching_pursuit options for our stopping rule (fixed: exactly k steps)."""
    return {"residual_threshold": cfg.mp_threshold if cfg.mp_stop == "absolute" else 0.0,
            "max_iterations": cfg.mp_inference_steps, "stop_on_duplicate_support": cfg.mp_stop_on_repeat}


def saelens_cfg(cfg: SAEConfig, architecture: str, meta: dict) -> dict:
    """cfg.json in SAELens layout (top-level fields of SAELens 5 and the 'metadata' block of SAELens 6)."""
    m = re.search(r"blocks\.(\d+)\.", cfg.hook_name)
    common = {"model_name": meta.get("model_name", ""), "hook_name": cfg.hook_name, "hook_head_index": None,
              "prepend_bos": meta.get("prepend_bos", True), "context_size": meta.get("context_size"),
              "dataset_path": meta.get("dataset_path", ""), "sae_lens_training_version": None}
    out = {"architecture": architecture, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "finetuning_scaling_factor": False,
           "hook_layer": int(m.group(1)) if m else -1, **common,
           "activation_fn_str": "topk" if architecture == "topk" else "relu",
           "metadata": {**common, **{k: v for k, v in meta.items() if k not in common}, "sae_lab_name": cfg.name}}
    if architecture == "topk":
        out["k"] = cfg.k
        out["activation_fn_kwargs"] = {"k": cfg.k}
    if cfg.architecture == "matching_pursuit":
        out.update(_saelens_mp_fields(cfg))
    return out


def load_sae(directory, device: str | torch.device | None = None):
    """Load an SAE directory saved by sae-lab, or a SAELens standard/topk/jumprelu/matching_pursuit SAE.
    (``sae_lab.load_sae`` also accepts a run directory holding one SAE.)"""
    d = Path(directory)
    if not (d / "sae_weights.safetensors").is_file():
        raise ConfigError(f"'{d}' holds no sae_weights.safetensors: not an SAE directory")
    sae = _load_ours(d) if (d / "sae_lab.json").is_file() else _load_saelens(d)
    return sae.to(device) if device is not None else sae


def _load_ours(d: Path):
    info = json.loads((d / "sae_lab.json").read_text())
    cfg = SAEConfig.model_validate(info["config"])
    sae = get_sae_class(info["architecture"])(cfg)
    state = load_file(str(d / "sae_weights.safetensors"))
    extra = d / "sae_lab_state.safetensors"
    if extra.is_file():
        state.update(load_file(str(extra)))
    own = sae.state_dict()
    if "threshold" in state and own["threshold"].dim() == 0:
        state["threshold"] = state["threshold"].reshape(-1)[0]
    sae.load_state_dict(state)
    return sae


def _load_saelens(d: Path):
    c = json.loads((d / "cfg.json").read_text())
    arch = c.get("architecture") or ("topk" if c.get("activation_fn_str") == "topk" else "standard")
    meta = c.get("metadata") or {}
    norm = c.get("normalize_activations") or "none"
    if norm in ("layer_norm", "constant_norm_rescale"):
        raise ConfigError(f"SAELens normalize_activations='{norm}' depends on each input and cannot be folded; unsupported")
    if norm != "none":
        warnings.warn(f"SAELens normalize_activations='{norm}': the scale is not stored; inputs must be scaled as in training")
    W = {k: v.float() for k, v in load_file(str(d / "sae_weights.safetensors")).items()}
    fields = dict(d_in=int(c["d_in"]), d_sae=int(c["d_sae"]), hook_name=c.get("hook_name") or meta.get("hook_name") or "",
                  name=d.name or "saelens")
    if arch == "topk":
        k = c.get("k") or (c.get("activation_fn_kwargs") or {}).get("k")
        if k is None:
            raise ConfigError(f"SAELens topk SAE in '{d}' has no 'k' in cfg.json")
        sae = get_sae_class("topk")(SAEConfig(architecture="topk", k=int(k), **fields))
    elif arch == "jumprelu":  # per-latent thresholds = feature choice's inference rule; k (a training budget) is unknown
        sae = get_sae_class("feature_choice")(SAEConfig(architecture="feature_choice", k=1, **fields))
        thr = W["threshold"] if "threshold" in W else W["log_threshold"].exp()
        sae.threshold.copy_(thr)
        sae.threshold_started.fill_(True)
    elif arch == "standard":
        sae = get_sae_class("standard")(SAEConfig(architecture="standard", **fields))
    elif arch == "matching_pursuit":
        return _load_saelens_mp(c, W, fields)
    else:
        raise ConfigError(f"SAELens architecture '{arch}' is not supported; "
                          "supported: standard, topk, jumprelu, matching_pursuit")
    b_enc = W["b_enc"]
    if not c.get("apply_b_dec_to_input", True):  # x W + b = (x - b_dec) W + (b + b_dec W)
        b_enc = b_enc + W["b_dec"] @ W["W_enc"]
    with torch.no_grad():
        for name, value in (("W_enc", W["W_enc"]), ("W_dec", W["W_dec"]), ("b_dec", W["b_dec"]), ("b_enc", b_enc)):
            getattr(sae, name).copy_(value)
    sae.loaded_from = f"saelens:{arch}"
    return sae


def _load_saelens_mp(c: dict, W: dict, fields: dict):
    """SAELens's (non-negative, tied) matching_pursuit: its stopping rules map onto ours exactly."""
    steps = int(c.get("max_iterations") or fields["d_in"])  # SAELens: None means d_in
    threshold = float(c.get("residual_threshold", 1e-2))  # SAELens: 0 disables the residual rule
    cfg = SAEConfig(architecture="matching_pursuit", k=min(steps, fields["d_sae"]), mp_nonneg=True,
                    mp_stop="absolute" if threshold > 0 else "fixed", mp_threshold=threshold, mp_k_max=steps,
                    mp_stop_on_repeat=bool(c.get("stop_on_duplicate_support", True)), **fields)  # SAELens defaults
    sae = get_sae_class("matching_pursuit")(cfg)
    b_dec = W["b_dec"] if c.get("apply_b_dec_to_input", True) else torch.zeros_like(W["b_dec"])
    with torch.no_grad():
        sae.W_dec.copy_(W["W_dec"])
        sae.b_dec.copy_(b_dec)
    sae.loaded_from = "saelens:matching_pursuit"
    return sae
