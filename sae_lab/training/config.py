"""TrainConfig: the validated optimisation, schedule, checkpoint and logging settings of a training run."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field, field_validator, model_validator

from sae_lab.configbase import StrictModel
from sae_lab.devices import DeviceName, resolve_device
from sae_lab.distributed import local_device
from sae_lab.fileio import json_sha256
from sae_lab.saes.config import DEAD_TOKENS_CAP
from sae_lab.saes.registry import get_sae_class

# Fields that change how a run is observed or stored but not the weights it ends with.
# They are left out of the config hash, so changing them does not block a resume.
NON_TRAINING_FIELDS = frozenset(
    {"checkpoint_every_tokens", "keep_checkpoints", "log_every_steps", "progress", "wandb", "tensorboard", "device"}
)


# `lr: auto`: Adam's base lr as a function of the SAE's width and architecture,
#     lr = AUTO_LR_AT_REF * auto_lr_scale / sqrt(d_sae / AUTO_LR_REF_LATENTS).
# The 1/sqrt(d_sae) scaling is eai-sparsify's default (sparsify 1.3.3, trainer.py: Adam lr = 2e-4 / sqrt(num_latents
# / 2**14)). Its constant suits sparsify's long runs; this one is tuned for sae-lab's schedule (warm-up, constant,
# linear decay to 0) on runs of a few hundred steps (fitted at 4,608 latents), checked at 2,304 and 9,216: lr_auto.py,
# BENCHMARKS.md "Default learning rate". ``auto_lr_scale`` is the architecture's (a class attribute of its SAE):
# TopK (encoder_eps_ratio 2) and Feature Choice (ratio 1) train best at twice the constant once their rare latents are
# protected, matching pursuit at three times it (BENCHMARKS.md §13).
AUTO_LR_REF_LATENTS = 2**14
AUTO_LR_AT_REF = 2e-3


def auto_lr(d_sae: int, architecture: str | None = None) -> float:
    """The `lr: auto` learning rate of an SAE with ``d_sae`` latents of ``architecture`` (see AUTO_LR_AT_REF;
    None: scale 1)."""
    if d_sae <= 0:
        raise ValueError(f"d_sae must be positive, got {d_sae}")
    scale = get_sae_class(architecture).auto_lr_scale if architecture else 1.0
    return AUTO_LR_AT_REF * scale / math.sqrt(d_sae / AUTO_LR_REF_LATENTS)


def auto_encoder_eps_ratio(architecture: str) -> float:
    """The `encoder_eps_ratio: auto` of ``architecture``: its SAE class's ``auto_encoder_eps_ratio``."""
    return float(get_sae_class(architecture).auto_encoder_eps_ratio)


AUTO_DEAD_FRACTION = 0.1  # `dead_tokens: auto`: a tenth of the run


def auto_dead_tokens(total_tokens: int, batch_size: int) -> int:
    """The `dead_tokens: auto` window: a tenth of the training run, at least one batch, at most DEAD_TOKENS_CAP.
    A fixed window of 1M tokens (the old default) is longer than runs of a few hundred steps, so no latent ever
    counted as dead there and AuxK never ran (BENCHMARKS.md §13, "The default learning rate and dead latents")."""
    return int(min(DEAD_TOKENS_CAP, max(batch_size, AUTO_DEAD_FRACTION * total_tokens)))


class WandbConfig(StrictModel):
    """Optional Weights & Biases logging (needs `pip install wandb`)."""

    project: str = "sae-lab"
    entity: str | None = None
    run_name: str | None = Field(None, description="defaults to the run directory's name")
    mode: Literal["online", "offline", "disabled"] = "online"


class TrainConfig(StrictModel):
    """How to train the SAEs of a sweep. Token counts are in activation vectors (one per token position)."""

    batch_size: int = Field(4096, gt=0, description="tokens per optimisation step")
    total_tokens: int = Field(10_000_000, gt=0, description="training length; rounded down to whole batches")
    lr: Annotated[float, Field(gt=0)] | Literal["auto"] = Field(
        "auto",
        description="Adam's base lr, or 'auto': a width-aware rule, 2e-3 * scale / sqrt(d_sae / 16384) with the "
        "architecture's scale (TopK 2, matching pursuit 3, others 1), resolved per SAE "
        "(sae_lab.training.config.auto_lr)",
    )
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    encoder_eps_ratio: Annotated[float, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="Adam's eps for W_enc and b_enc as this multiple of a typical latent's RMS gradient, recomputed "
        "each step, so rarely firing latents are not kicked off their decoder rows by full-size steps "
        "(sae_lab.training.optim); 0: the plain eps; 'auto': the architecture's (TopK 2, FC 1, others 0)",
    )
    warmup_tokens: int | None = Field(
        None, ge=0, description="linear warm-up length in tokens; wins over warmup_fraction"
    )
    warmup_fraction: float = Field(0.01, ge=0, le=1, description="warm-up as a fraction of total_tokens")
    decay: Literal["cosine", "linear", "none"] = "linear"
    decay_start: float = Field(0.8, ge=0, le=1, description="fraction of training after which the lr decays")
    lr_end: float = Field(0.0, ge=0, le=1, description="final lr as a fraction of lr")
    grad_clip: float | None = Field(1.0, gt=0, description="max global grad norm per SAE; null disables clipping")
    seed: int = Field(0, ge=0)
    recon_loss: Literal["fvu", "mse"] = Field(
        "fvu",
        description="fvu: sum||x-x_hat||^2 / sum||x-mean(x)||^2 over the batch; mse: mean over batch and dims",
    )
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    b_dec_init_tokens: int = Field(8192, gt=0, description="sample size (from the start of the stream) for b_dec_init")
    calibrate_tokens: int = Field(
        16384,
        ge=0,
        description="choice SAEs: tokens on which the inference thresholds are calibrated with the "
        "final weights after the last step (rounded up to whole batches; 0 keeps the training EMAs). With a cache, "
        "they are whole contexts spread over it, held out from training for every SAE of the sweep; with a "
        "stream, its next ones",
    )
    rare_density: float = Field(
        1e-5, ge=0, le=1, description="latents firing less often than this in a log window count as underutilised"
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="compute dtype of forward/backward (autocast); parameters and Adam state stay float32"
    )
    device: DeviceName = Field(
        "auto", description="'auto' (CUDA, else MPS, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'"
    )
    checkpoint_every_tokens: int | None = Field(None, gt=0, description="null: only the final checkpoint")
    keep_checkpoints: int = Field(2, ge=1, description="how many most recent checkpoints to keep")
    log_every_steps: int = Field(50, gt=0)
    progress: bool = True
    wandb: WandbConfig | None = None
    tensorboard: bool = False

    @field_validator("betas")
    @classmethod
    def _check_betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must both lie in [0, 1), got {list(v)}")
        return v

    @model_validator(mode="after")
    def _check_lengths(self) -> "TrainConfig":
        if self.total_tokens < self.batch_size:
            raise ValueError(f"total_tokens ({self.total_tokens}) must be at least batch_size ({self.batch_size})")
        if self.warmup_tokens is not None and self.warmup_tokens > self.total_tokens:
            raise ValueError(f"warmup_tokens ({self.warmup_tokens}) exceeds total_tokens ({self.total_tokens})")
        return self

    # ---- derived quantities -------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        """Optimisation steps in the run (total_tokens rounded down to whole batches)."""
        return self.total_tokens // self.batch_size

    @property
    def warmup_steps(self) -> int:
        tokens = self.warmup_tokens if self.warmup_tokens is not None else self.warmup_fraction * self.total_tokens
        return int(round(tokens / self.batch_size))

    def lr_for(self, d_sae: int, architecture: str | None = None) -> float:
        """The base lr of an SAE with ``d_sae`` latents: ``lr`` itself, or :func:`auto_lr` under 'auto'."""
        return auto_lr(d_sae, architecture) if self.lr == "auto" else float(self.lr)

    def encoder_eps_ratio_for(self, architecture: str) -> float:
        """``encoder_eps_ratio`` itself, or the architecture's under 'auto'."""
        if self.encoder_eps_ratio == "auto":
            return auto_encoder_eps_ratio(architecture)
        return float(self.encoder_eps_ratio)

    def bind_sae(self, sae_cfg):
        """``sae_cfg`` with what this run resolves for it: ``dead_tokens: auto`` (auto_dead_tokens)."""
        if sae_cfg.dead_tokens != "auto":
            return sae_cfg
        return sae_cfg.model_copy(
            update={"dead_tokens": auto_dead_tokens(self.total_steps * self.batch_size, self.batch_size)}
        )

    def resolved_device(self) -> torch.device:
        """The device to train on (sae_lab.devices.resolve_device: 'auto' = CUDA, else MPS, else CPU); under
        torchrun with CUDA, each rank's own GPU (LOCAL_RANK)."""
        return resolve_device(local_device(self.device))

    def compute_dtype(self) -> torch.dtype:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[self.dtype]

    def training_dict(self) -> dict:
        """The fields that determine the trained weights (hashed to decide whether a run may resume)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in NON_TRAINING_FIELDS}


def config_hash(payload: dict) -> str:
    """A stable short hash of a JSON-able payload (sorted keys)."""
    return json_sha256(payload, compact=True)[:16]
