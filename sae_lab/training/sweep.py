"""The shared state of a sweep's training (``Sweep``), the batch a step trains on (``Batch``), and the bookkeeping
a step does after the SAEs have stepped: metrics lines, checkpoints, the threshold calibration, parameter checks.

The step itself is ``trainer._step``; it reads and writes only a ``Sweep``. Rank 0 alone writes (``main``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from sae_lab.activations.batch import split_batch
from sae_lab.activations.source import ActivationSource
from sae_lab.distributed import global_rows, world
from sae_lab.rundir import RunDir
from sae_lab.saes import BaseSAE
from sae_lab.training import checkpoint as ckpt
from sae_lab.training import ddp
from sae_lab.training.config import TrainConfig
from sae_lab.training.divergence import DivergedError, DivergenceGuard, diverged_message
from sae_lab.training.metrics_log import MetricsLogger
from sae_lab.training.report import make_record, postfix
from sae_lab.training.state import Member, Position, checkpoint_state
from sae_lab.training.step import first_non_finite_param


class NonFiniteError(FloatingPointError):
    """Training hit NaN/inf; the message names the SAE, the step and the last good checkpoint."""


@dataclass
class Batch:
    """One step's data on this rank: activations ``x [rows, d_in]`` and ``n``, the rows of the global batch (under
    torchrun ``x`` holds this rank's share of them). ``extra`` carries further tensors, row-aligned with ``x``, that
    a training rule may need (e.g. the model's gradient at the hook)."""

    x: torch.Tensor
    n: int
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def rank_batches(source: ActivationSource, cfg: TrainConfig, skip_batches: int, device) -> Iterator[Batch]:
    """This rank's share of every global batch of ``source`` from batch ``skip_batches`` on (see ddp.rank_batches)."""
    xs = ddp.rank_batches(source, cfg.batch_size, cfg.seed, skip_batches, device)  # now: it checks the batch size
    return (_batch(*split_batch(x)) for x in xs)


def _batch(x: torch.Tensor, grad: torch.Tensor | None) -> Batch:
    """A Batch of rows ``x`` (and, from a gradient source, the LM's gradient at them: ``extra['grad']``)."""
    return Batch(x, global_rows(int(x.shape[0])), {} if grad is None else {"grad": grad})


@dataclass
class StepInfo:
    """Passed to callbacks after every step (and its logging/checkpointing)."""

    step: int
    tokens: int
    checkpoint: Path | None
    members: list[Member]


@dataclass
class Sweep:
    """Everything a training step reads and writes: the SAEs with their optimisers, schedules and logging windows
    (``members``), the stream position, the run directory with its checkpoints and metrics sinks, the divergence
    guard, and the hooks the step runs (``grad_hook`` after backward, ``callbacks`` after the bookkeeping)."""

    members: list[Member]
    cfg: TrainConfig
    run: RunDir
    config_hash: str
    calibration_source: ActivationSource | None = None  # held out for the thresholds (None: the stream's next)
    grad_hook: Callable[[torch.nn.Module], None] | None = None
    callbacks: Sequence[Callable[[StepInfo], None]] = ()
    pos: Position = field(default_factory=Position)
    started_at: int = 0  # the step this call started from (a resumed run: its checkpoint's)
    last_ckpt: Path | None = None
    logger: MetricsLogger | None = None
    guard: DivergenceGuard = field(default_factory=DivergenceGuard)
    main: bool = field(default_factory=lambda: world()[0] == 0)  # only the main rank writes to the run directory
    batches: Iterator[Batch] | None = None  # set by open(): the training batches from pos.batches on
    bar: tqdm | None = None
    clock: tuple[float, int] = (0.0, 0)  # (time, tokens) of the last metrics line, for tokens_per_s

    @property
    def saes(self) -> list[BaseSAE]:
        return [m.sae for m in self.members]

    def open(self, source: ActivationSource) -> None:
        """Before the first step: the batches from the current position, the progress bar and the clock."""
        cfg = self.cfg
        self.batches = rank_batches(source, cfg, self.pos.batches, cfg.resolved_device())
        self.bar = tqdm(
            total=cfg.total_steps * cfg.batch_size,
            initial=self.pos.tokens,
            unit="tok",
            unit_scale=True,
            disable=not (cfg.progress and self.main),
            desc=f"train {len(self.members)} SAE(s)",
            dynamic_ncols=True,
        )
        self.clock = (time.perf_counter(), self.pos.tokens)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    # ---- bookkeeping after a step -----------------------------------------------------------------
    def non_finite(self, name: str, step: int, err: object) -> NonFiniteError:
        where = f"{self.last_ckpt}" if self.last_ckpt is not None else "none (no checkpoint was written yet)"
        return NonFiniteError(
            f"SAE '{name}' hit a non-finite value at step {step}: {err}. "
            f"Training stopped; the last good checkpoint is {where} and was left intact. "
            "Lower train.lr, set train.grad_clip, or check the activations for NaN/inf, then start a new run_dir."
        )

    def check_params(self) -> None:
        """Raise NonFiniteError if any SAE's weights hold NaN/inf (one pass over them: at log and save steps)."""
        for m in self.members:
            bad = first_non_finite_param(m.sae)
            if bad is not None:
                raise self.non_finite(m.name, self.pos.step, f"parameter {bad} holds NaN/inf")

    def log(self) -> None:
        """One metrics line per SAE (its window's means; the window restarts), the progress bar's summary, and
        the divergence rule: DivergedError when an SAE's FVU blew up for several lines in a row."""
        now = time.perf_counter()
        tokens_per_s = (self.pos.tokens - self.clock[1]) / max(now - self.clock[0], 1e-9)
        records = [make_record(m, self.pos, self.cfg, tokens_per_s) for m in self.members]
        for r in records:
            self.logger.log(r)
        self.bar.set_postfix_str(postfix(records), refresh=False)
        diverged = [r["sae"] for r in records if self.guard.update(r["sae"], r["fvu"])]
        if diverged:
            raise DivergedError(diverged_message(diverged, self.guard, self.pos.step, self.last_ckpt))
        self.clock = (now, self.pos.tokens)

    def save_checkpoint(self) -> Path:
        """Checkpoint this position (keeping the newest ``keep_checkpoints``) and record it in run.json."""
        state = checkpoint_state(self.members, self.pos, self.config_hash)
        self.last_ckpt = ckpt.save_checkpoint(self.run.checkpoints_dir, state, self.cfg.keep_checkpoints)
        self.run.write_status(tokens_seen=self.pos.tokens, steps=self.pos.step, last_checkpoint=self.last_ckpt.name)
        return self.last_ckpt

    def pause(self) -> None:
        """Stop before the next step: checkpoint this position, unless the last checkpoint already holds it."""
        if self.main and (self.last_ckpt is None or self.last_ckpt.name != ckpt.checkpoint_name(self.pos.tokens)):
            self.check_params()
            self.save_checkpoint()

    def calibrate(self) -> None:
        """After the last step: set the choice SAEs' inference thresholds with the final weights (see
        sae_lab/saes/calibration.py) from all of ``calibration_source`` (held out from training, see
        trainer.calibration_split), or, when there is none (a stream), from its next ``calibrate_tokens``.
        Runs before the final checkpoint, so a resumed run never calibrates twice."""
        cfg, batches = self.cfg, self.batches
        if self.calibration_source is None:
            n = math.ceil(cfg.calibrate_tokens / cfg.batch_size)
        else:
            n = self.calibration_source.n_tokens // cfg.batch_size
            batches = rank_batches(self.calibration_source, cfg, 0, cfg.resolved_device())
        cals = (
            [(m, m.sae.threshold_calibrator(cfg.batch_size, n)) for m in self.members if m.sae.has_thresholds]
            if n
            else []
        )
        if not cals:
            return
        for _ in range(n):
            x = next(batches).x
            for m, c in cals:
                c.add(m.rows(x))
        for m, c in cals:
            m.calibration = c.finish()
