"""The SAELens mapping: sae-lab SAEs to and from SAELens's cfg.json fields and weight names (no files).

An SAE directory (:mod:`sae_lab.saedir`, which reads and writes the files) holds ``cfg.json`` and
``sae_weights.safetensors`` in SAELens layout wherever SAELens has an equivalent architecture (each
architecture's file says which: ``saelens_architecture``, ``saelens_fields``; e.g. topk -> 'topk', mutual/feature
choice -> 'jumprelu' with a threshold vector, standard -> 'standard', non-negative matching pursuit with
fixed/absolute stopping -> 'matching_pursuit', whose weights hold only W_dec and b_dec); an SAE with no SAELens
equivalent gets the architecture 'sae_lab_<architecture>', which SAELens refuses rather than running a different
rule. See README.md in this folder for the mapping.
"""

from __future__ import annotations

import warnings

import torch

from sae_lab.configbase import ConfigError
from sae_lab.hooknames import parse_hook
from sae_lab.saes import registry
from sae_lab.saes.base import BaseSAE
from sae_lab.saes.config import SAEConfig

SAELENS_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")  # the tensors of sae_weights.safetensors


def saelens_cfg(cfg: SAEConfig, architecture: str, meta: dict) -> dict:
    """cfg.json in SAELens layout (top-level fields of SAELens 5 and the 'metadata' block of SAELens 6); the
    architecture adds its own fields (``saelens_fields``)."""
    common = {
        "model_name": meta.get("model_name", ""),
        "hook_name": cfg.hook_name,
        "hook_head_index": None,
        "prepend_bos": meta.get("prepend_bos", True),
        "context_size": meta.get("context_size"),
        "dataset_path": meta.get("dataset_path", ""),
        "sae_lens_training_version": None,
    }
    return {
        "architecture": architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "finetuning_scaling_factor": False,
        "hook_layer": parse_hook(cfg.hook_name).saelens_layer,
        **common,
        "activation_fn_str": "relu",
        "metadata": {**common, **{k: v for k, v in meta.items() if k not in common}, "sae_lab_name": cfg.name},
    }


def _architecture(c: dict) -> str:
    return c.get("architecture") or ("topk" if c.get("activation_fn_str") == "topk" else "standard")


def saelens_class(c: dict) -> type[BaseSAE]:
    """The sae-lab class that loads the SAELens SAE whose cfg.json is ``c`` (its ``saelens_loads``); ConfigError
    for an architecture or input normalisation sae-lab cannot reproduce."""
    arch = _architecture(c)
    norm = c.get("normalize_activations") or "none"
    if norm in ("layer_norm", "constant_norm_rescale"):
        raise ConfigError(
            f"SAELens normalize_activations='{norm}' depends on each input and cannot be folded; unsupported"
        )
    if norm != "none":
        warnings.warn(
            f"SAELens normalize_activations='{norm}': the scale is not stored; inputs must be scaled as in training"
        )
    loaders = {loads: cls for cls in registry.registered_classes() for loads in cls.saelens_loads}
    if arch not in loaders:
        raise ConfigError(f"SAELens architecture '{arch}' is not supported; supported: {', '.join(sorted(loaders))}")
    return loaders[arch]


def from_saelens(cls: type[BaseSAE], c: dict, W: dict[str, torch.Tensor], name: str) -> BaseSAE:
    """The SAE that SAELens cfg.json ``c`` and its float32 weights ``W`` describe, as ``cls``
    (:func:`saelens_class`), named ``name``."""
    meta = c.get("metadata") or {}
    fields = dict(
        d_in=int(c["d_in"]),
        d_sae=int(c["d_sae"]),
        name=name,
        hook_name=c.get("hook_name") or meta.get("hook_name") or "",
    )
    sae = cls.from_saelens(c, W, fields)
    sae.loaded_from = f"saelens:{_architecture(c)}"
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
