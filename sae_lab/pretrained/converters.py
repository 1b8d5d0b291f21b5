"""Converters from the published SAE file layouts to sae-lab SAEs (exact: each SAE computes its source's rule).

- ``gemma_scope``: Gemma Scope's ``params.npz`` (Gemma 2) or ``params.safetensors`` (Gemma Scope 2), tensors
  ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc``, ``b_dec``, ``threshold`` (lower-case ``w_`` too).
  Published definition: f(x) = JumpReLU_θ(x W_enc + b_enc), x̂ = f(x) W_dec + b_dec, JumpReLU_θ(z) = z·1[z > θ].
  The encoder does not subtract b_dec, so b_enc becomes b_enc + b_dec W_enc (sae-lab's pre-activation is
  (x − b_dec) W_enc + b_enc). The parameters apply to raw activations (Gemma Scope folded its input scaling
  into them): no scale is applied. The hook comes from the folder (``layer_L``) and the repo (res/att/mlp).
- ``sparsify``: EleutherAI sparsify's ``cfg.json`` + ``sae.safetensors`` (``encoder.weight [d_sae, d_in]``,
  ``encoder.bias``, ``W_dec [d_sae, d_in]``, ``b_dec``). sparsify encodes ReLU(W (x − b_dec) + b) and keeps the
  top k: the same codes as sae-lab's TopK. The hook comes from the folder (the hookpoint, e.g. ``layers.6``).
- ``saelens``: SAELens's ``cfg.json`` + ``sae_weights.safetensors`` (``saes.saelens_format``).
- ``auto``: whichever of these the folder holds.
Every converter returns ``Converted``: the SAE, the model its source names (or None) and what was read.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from sae_lab.configbase import ConfigError
from sae_lab.saedir import CFG, WEIGHTS, SAEDir, SAEFileError, read_json, read_tensors
from sae_lab.saes.saelens_format import load_encoder_weights

Fetch = Callable[[str], "Path | None"]  # file name inside the SAE's folder -> local path, or None if absent


@dataclass
class Converted:
    sae: object  # a BaseSAE
    model: str | None
    files: dict[str, Path] = field(default_factory=dict)
    format: str = ""


# ---- layout detection --------------------------------------------------------------------------------
LAYOUTS = {  # format -> alternatives, each a tuple of the files it needs (first found wins)
    "gemma_scope": (("params.npz",), ("params.safetensors",)),
    "sparsify": ((CFG, "sae.safetensors"),),
    "saelens": ((CFG, WEIGHTS),),  # SAELens's layout is an SAE directory's (sae_lab.saedir)
}


def locate(fmt: str, fetch: Fetch, where: str) -> tuple[str, dict[str, Path]]:
    """(format, {file name: local path}) of the SAE in a folder; ``fmt='auto'`` tries every layout."""
    from sae_lab.pretrained.hub import HubUnavailable

    formats = list(LAYOUTS) if fmt == "auto" else [fmt]
    unavailable = None  # offline: a layout whose files are not cached; the next may be
    for f in formats:
        if f not in LAYOUTS:
            raise ConfigError(f"unknown SAE file format '{f}'; known: {', '.join(LAYOUTS)}")
        for names in LAYOUTS[f]:
            try:
                files = {name: fetch(name) for name in names}
            except HubUnavailable as e:
                unavailable = unavailable or e
                continue
            if all(p is not None for p in files.values()):
                return f, files
    if unavailable is not None:
        raise unavailable
    wanted = " or ".join(" + ".join(n) for f in formats for n in LAYOUTS[f])
    raise ConfigError(f"{where} holds no SAE in a known layout: looked for {wanted}")


def convert(fmt: str, files: dict[str, Path], repo_id: str, folder: str) -> Converted:
    """The sae-lab SAE of the located ``files``."""
    out = {"gemma_scope": gemma_scope, "sparsify": sparsify, "saelens": saelens}[fmt](files, repo_id, folder)
    out.files, out.format = files, fmt
    return out


# ---- Gemma Scope -------------------------------------------------------------------------------------
def read_params(path: Path) -> dict[str, torch.Tensor]:
    """Gemma Scope tensors (npz without pickles, or safetensors) as float32, keys normalised to W_enc/W_dec."""
    if path.suffix == ".npz":
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as data:
                raw = {k: torch.from_numpy(np.asarray(data[k], dtype=np.float32)) for k in data.files}
        except (OSError, ValueError) as e:
            raise SAEFileError(
                f"'{path}' is not a readable .npz file ({e}); delete it from the cache and download it again"
            ) from None
        bad = [k for k, v in raw.items() if not bool(torch.isfinite(v).all())]
        if bad:
            raise SAEFileError(f"'{path}': tensor(s) {bad} hold NaN/inf values; these weights are unusable")
    else:
        raw = {k: v.float() for k, v in read_tensors(path).items()}
    return {("W_" + k[2:] if k.startswith("w_") else k): v for k, v in raw.items()}


def gemma_scope_hook(repo_id: str, folder: str) -> str:
    """The TransformerLens hook of a Gemma Scope SAE from its folder (``layer_L``) and repo (res / att / mlp)."""
    m = re.search(r"layer_(\d+)", folder)
    if m is None:
        raise ConfigError(
            f"cannot tell the layer of Gemma Scope SAE '{repo_id}/{folder}' (no layer_N in its folder)"
            "; embedding and transcoder SAEs are not supported"
        )
    text, layer = f"{repo_id}/{folder}".lower(), int(m.group(1))
    if "transcoder" in text or "clt" in text:
        raise ConfigError(f"'{repo_id}/{folder}' is a transcoder, not an SAE; sae-lab loads SAEs only")
    for keys, hook in (
        (("resid_post", "-res"), "hook_resid_post"),
        (("attn_out", "-att"), "attn.hook_z"),
        (("mlp_out", "-mlp"), "hook_mlp_out"),
    ):
        if any(k in text for k in keys):
            return f"blocks.{layer}.{hook}"
    raise ConfigError(f"cannot tell the hook of Gemma Scope SAE '{repo_id}/{folder}' (res, att or mlp)")


def gemma_scope(files: dict[str, Path], repo_id: str, folder: str) -> Converted:
    from sae_lab.saes.jumprelu import JumpReLUConfig, JumpReLUSAE

    path = files.get("params.npz") or files["params.safetensors"]
    W = read_params(path)
    missing = {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"} - set(W)
    if missing:
        raise SAEFileError(f"'{path}' lacks {sorted(missing)}: not a Gemma Scope JumpReLU SAE")
    d_in, d_sae = W["W_enc"].shape
    shapes = {"W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,), "threshold": (d_sae,)}
    wrong = {k: tuple(W[k].shape) for k, s in shapes.items() if tuple(W[k].shape) != s}
    if wrong:
        raise SAEFileError(f"'{path}': W_enc is [{d_in}, {d_sae}] but {wrong} do not fit it")
    if "scaling_factor" in W and not torch.allclose(W["scaling_factor"], torch.ones_like(W["scaling_factor"])):
        raise ConfigError(f"'{path}' holds a fine-tuning scaling_factor other than 1, which sae-lab does not apply")
    if bool((W["threshold"] < 0).any()):
        warnings.warn(
            f"'{path}': some thresholds are negative; sae-lab's JumpReLU is ReLU(z)·1[z > θ], which "
            "equals Gemma Scope's z·1[z > θ] only for θ >= 0"
        )
    cfg = JumpReLUConfig(d_in=d_in, d_sae=d_sae, hook_name=gemma_scope_hook(repo_id, folder), name=folder or repo_id)
    sae = load_encoder_weights(JumpReLUSAE(cfg), {"apply_b_dec_to_input": False}, W)
    with torch.no_grad():
        sae.threshold.copy_(W["threshold"])
    return Converted(sae, None)


# ---- sparsify ----------------------------------------------------------------------------------------
def sparsify_hook(folder: str) -> str:
    """The TransformerLens hook of a sparsify hookpoint (``layers.6``, ``layers.6.mlp``, ``embed_tokens``...)."""
    point = folder.rstrip("/").rsplit("/", 1)[-1]
    if point.endswith("embed_tokens"):
        return "hook_embed"
    m = re.fullmatch(r"(?:.*\.)?(?:layers|h)[._](\d+)(?:\.(mlp|self_attn|attention|attn))?", point)
    if m is None:
        raise ConfigError(
            f"cannot map sparsify hookpoint '{point}' to a TransformerLens hook (known: layers.N, "
            "layers.N.mlp, layers.N.self_attn, embed_tokens)"
        )
    kind = {None: "hook_resid_post", "mlp": "hook_mlp_out"}.get(m.group(2), "hook_attn_out")
    return f"blocks.{m.group(1)}.{kind}"


def sparsify(files: dict[str, Path], repo_id: str, folder: str) -> Converted:
    from sae_lab.saes.topk import TopKConfig, TopKSAE

    c = read_json(files[CFG])
    unsupported = [k for k in ("transcode", "skip_connection", "signed", "multi_topk_only") if c.get(k)]
    if c.get("activation", "topk") != "topk":
        unsupported.append(f"activation={c['activation']}")
    if unsupported:
        raise ConfigError(
            f"sparsify SAE '{repo_id}/{folder}' uses {unsupported}, which sae-lab does not load "
            "(it loads TopK autoencoders)"
        )
    try:
        d_in, k = int(c["d_in"]), int(c["k"])
        d_sae = int(c.get("num_latents") or d_in * int(c["expansion_factor"]))
    except (KeyError, TypeError, ValueError) as e:
        raise SAEFileError(f"'{files[CFG]}' lacks d_in, k or num_latents/expansion_factor ({e})") from None
    raw = {k_: v.float() for k_, v in read_tensors(files["sae.safetensors"]).items()}
    try:
        W = {
            "W_enc": raw["encoder.weight"].t(),
            "b_enc": raw["encoder.bias"],
            "W_dec": raw["W_dec"],
            "b_dec": raw["b_dec"],
        }
    except KeyError as e:
        raise SAEFileError(f"'{files['sae.safetensors']}' lacks {e}: not a sparsify SAE") from None
    cfg = TopKConfig(d_in=d_in, d_sae=d_sae, k=k, hook_name=sparsify_hook(folder), name=folder or repo_id)
    try:
        sae = load_encoder_weights(TopKSAE(cfg), {"apply_b_dec_to_input": True}, W)  # sparsify subtracts b_dec
    except RuntimeError as e:
        raise SAEFileError(f"the weights in '{files['sae.safetensors']}' do not fit its cfg.json: {e}") from None
    return Converted(sae, c.get("model"))


def sparsify_model(fetch_repo: Fetch, folder: str) -> str | None:
    """The model a sparsify run names in its ``config.json`` (beside the hookpoint folders), if present."""
    parent = folder.rstrip("/").rsplit("/", 1)[0] if "/" in folder.rstrip("/") else ""
    path = fetch_repo(f"{parent}/config.json" if parent else "config.json")
    if path is None:
        return None
    try:
        return json.loads(path.read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        return None


# ---- SAELens -----------------------------------------------------------------------------------------
def saelens(files: dict[str, Path], repo_id: str, folder: str) -> Converted:
    directory = files[CFG].parent
    if files[WEIGHTS].parent != directory:
        raise SAEFileError(f"{CFG} and {WEIGHTS} of '{repo_id}/{folder}' are not in one folder")
    c = read_json(files[CFG])
    model = c.get("model_name") or (c.get("metadata") or {}).get("model_name") or None
    return Converted(SAEDir(directory).load(), model)
