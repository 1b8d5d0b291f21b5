"""The in-memory state of a sweep (SAEs, optimisers, schedulers, data position) and its checkpoint form."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sae_lab.activations.batch import split_batch
from sae_lab.activations.source import ActivationSource, HookPart, part_for
from sae_lab.saes import BaseSAE, SAEConfig, build_sae
from sae_lab.training import checkpoint as ckpt
from sae_lab.training.checks import sae_name
from sae_lab.training.config import TrainConfig
from sae_lab.training.schedule import make_scheduler
from sae_lab.training.step import WindowStats, make_optimizer


@dataclass
class Member:
    """One SAE of the sweep with its optimiser, scheduler and logging window."""

    name: str
    sae: BaseSAE
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    window: WindowStats = field(default_factory=WindowStats)
    last_record: dict | None = None
    calibration: dict | None = None  # the threshold calibration at the end of training (choice SAEs)
    part: HookPart | None = None  # its hook's columns of the batches (a source of several hooks: one of them)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """This SAE's activations in a batch ``x`` of the source (its hook's columns)."""
        return x if self.part is None else self.part.take(x)


@dataclass
class Position:
    """Where the run is: optimiser steps taken, batches consumed from the stream, tokens trained on."""

    step: int = 0
    batches: int = 0
    tokens: int = 0


def build_saes(saes: Sequence[BaseSAE | SAEConfig], seed: int) -> list[BaseSAE]:
    """SAE modules from a mix of modules and SAEConfigs; each config is built under ``seed``,
    so two identical configs start identical."""
    out = []
    for item in saes:
        if isinstance(item, torch.nn.Module):
            out.append(item)
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out.append(build_sae(item))
    return out


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def make_members(
    saes: list[BaseSAE], cfg: TrainConfig, device: torch.device, parts: dict[str, HookPart] | None = None
) -> list[Member]:
    """The sweep's members; ``parts`` (the source's hooks) gives each SAE its hook's columns of the batches."""
    members = []
    for sae in saes:
        sae.to(device)
        arch = sae.cfg.architecture
        lr, ratio = cfg.lr_for(sae.cfg.d_sae, arch), cfg.encoder_eps_ratio_for(arch)
        opt = make_optimizer(sae, lr, cfg.betas, cfg.eps, ratio)
        part = part_for(parts, sae.cfg.hook_name) if parts else None
        members.append(Member(sae_name(sae), sae, opt, make_scheduler(opt, cfg), part=part))
    return members


def init_b_dec(members: list[Member], source: ActivationSource, cfg: TrainConfig, device: torch.device) -> None:
    """b_dec from the first ``b_dec_init_tokens`` of the stream (same seed as training: deterministic)."""
    if cfg.b_dec_init == "zeros":
        sample = torch.zeros(1, source.d_in, device=device)  # every hook's columns
    else:
        head = getattr(source, "head", None)  # a cache reads just these rows, not its whole first window
        sample = head(cfg.b_dec_init_tokens, cfg.batch_size, seed=cfg.seed) if head else None
        if sample is not None:
            sample = sample.to(device)
        else:
            n_batches = math.ceil(cfg.b_dec_init_tokens / cfg.batch_size)
            it = source.iter_batches(cfg.batch_size, seed=cfg.seed, skip_batches=0, device=device)
            sample = torch.cat([split_batch(next(it))[0] for _ in range(n_batches)])[: cfg.b_dec_init_tokens]
    with torch.no_grad():
        for m in members:
            m.sae.init_b_dec(m.rows(sample), method=cfg.b_dec_init)


def checkpoint_state(members: list[Member], pos: Position, chash: str) -> dict:
    return {
        "config_hash": chash,
        "step": pos.step,
        "batches_consumed": pos.batches,
        "tokens_seen": pos.tokens,
        "rng": ckpt.capture_rng(),
        "saes": {
            m.name: {
                "model": m.sae.state_dict(),
                "optimizer": m.optimizer.state_dict(),
                "scheduler": m.scheduler.state_dict(),
                "window": m.window.state_dict(),
                "calibration": m.calibration or {},
            }
            for m in members
        },
    }


def restore(members: list[Member], state: dict, path: Path, chash: str) -> Position:
    if state["config_hash"] != chash:
        raise ckpt.CheckpointError(f"checkpoint {path} has config hash {state['config_hash']}, the run has {chash}")
    missing = [m.name for m in members if m.name not in state["saes"]]
    if missing:
        raise ckpt.CheckpointError(f"checkpoint {path} holds no state for SAE(s) {missing}")
    for m in members:
        s = state["saes"][m.name]
        m.sae.load_state_dict(s["model"])
        m.optimizer.load_state_dict(s["optimizer"])
        m.scheduler.load_state_dict(s["scheduler"])
        m.window.load_state_dict(s["window"])
        m.calibration = s.get("calibration") or None
    ckpt.restore_rng(state["rng"])
    return Position(int(state["step"]), int(state["batches_consumed"]), int(state["tokens_seen"]))
