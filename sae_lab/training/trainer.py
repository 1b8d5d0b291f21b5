"""train_sweep: train several SAEs in one pass over one activation stream, with exact resume.

Each batch is drawn once and every SAE of the sweep steps on it (one Adam + scheduler per SAE). The data
position is a plain count of batches consumed; ``source.iter_batches(..., skip_batches=n)`` resumes there.
Only rank 0 writes to the run directory. Under torchrun the ranks split every global batch and reduce
gradients and batch-level rules (see training/ddp.py); a single process never communicates.

Reading order: ``train_sweep`` checks the input and builds one ``Sweep`` (training/sweep.py: the SAEs with their
optimisers and schedules, the position, checkpoints, metrics), ``_start`` restores or initialises it, ``_train``
runs ``_step`` (one step, top to bottom: each SAE's training step on the batch, then the bookkeeping) to the end,
and ``_finish`` saves the SAEs. The per-SAE math is ``train_step`` in training/step.py.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from sae_lab.activations.source import ActivationSource, hook_parts
from sae_lab.distributed import sharded_batches
from sae_lab.rundir import RunDir, RunDirError
from sae_lab.saedir import SAEDir
from sae_lab.saes import BaseSAE, SAEConfig
from sae_lab.training import checkpoint as ckpt
from sae_lab.training import ddp
from sae_lab.training.checks import preflight
from sae_lab.training.config import TrainConfig
from sae_lab.training.divergence import DivergedError, diverged_message
from sae_lab.training.metrics_log import MetricsLogger, require_optional_loggers, truncate_metrics
from sae_lab.training.report import underused_mask
from sae_lab.training.resume import ResumeMode, check_writable, prepare, resolved_config, resolved_hash
from sae_lab.training.state import build_saes, init_b_dec, make_members, restore, seed_all
from sae_lab.training.step import NonFiniteValue, train_step
from sae_lab.training.sweep import Batch, StepInfo, Sweep


@dataclass
class SAEResult:
    name: str
    sae_dir: Path | None
    metrics: dict
    dead_latents: list[int]
    underused_latents: list[int]  # below their Zipf-expected density (see report.underused_mask)


@dataclass
class SweepResult:
    """What train_sweep returns. ``saes`` are the trained modules in the *normalised* space of the
    stream (the copies in ``saes/<name>/`` have the scale folded in and apply to raw activations)."""

    run_dir: Path
    status: str  # "done" or "stopped" (a diverged run raises DivergedError; run.json says "diverged")
    steps: int
    tokens_seen: int
    results: dict[str, SAEResult]
    saes: dict[str, BaseSAE]


def _start(sw: Sweep, mode: str, resume: ResumeMode, source: ActivationSource) -> int:
    """Restore the newest checkpoint when resuming; otherwise seed everything and initialise b_dec.
    Returns the tokens up to which metrics were logged before (0 for a fresh run)."""
    cfg, run = sw.cfg, sw.run
    found = ddp.on_main(
        lambda: ckpt.load_latest(run.checkpoints_dir, map_location="cpu") if mode == "resume" else None
    )  # rank 0 reads it; every rank gets the same state
    if found is None:
        if resume == "must":
            raise RunDirError(f"resume='must' but '{run.checkpoints_dir}' holds no checkpoint to resume from")
        seed_all(cfg.seed)
        if sw.main:  # from the global batches; ddp.sync_saes copies it to the other ranks
            init_b_dec(sw.members, source, cfg, cfg.resolved_device())
    else:
        sw.last_ckpt, state = found
        sw.pos = restore(sw.members, state, sw.last_ckpt, sw.config_hash)
    return truncate_metrics(run, sw.pos.tokens) if sw.main else 0  # lines a killed run logged after the checkpoint


def _train(sw: Sweep, source: ActivationSource, stop_after_tokens: int | None) -> bool:
    """Step until total_steps (returns False), or pause at ``stop_after_tokens`` with a checkpoint (returns True)."""
    sw.open(source)
    try:
        while sw.pos.step < sw.cfg.total_steps:
            if stop_after_tokens is not None and sw.pos.tokens >= stop_after_tokens:
                sw.pause()
                return True
            _step(sw, next(sw.batches))
        return False
    finally:
        sw.close()


def _step(sw: Sweep, batch: Batch) -> None:
    """One training step of the sweep, top to bottom: every SAE trains on ``batch``, then the bookkeeping."""
    cfg, pos = sw.cfg, sw.pos
    for m in sw.members:
        x = m.rows(batch.x)  # its hook's columns (a source of several hooks)
        try:  # forward (the architecture's rule, its aux losses; it updates its dead-latent counters) -> losses
            # -> backward -> grad_hook (DDP all-reduce) -> clip -> Adam -> unit-norm decoder -> lr schedule
            stats = train_step(
                m.sae,
                m.optimizer,
                m.scheduler,
                x,
                recon_loss=cfg.recon_loss,
                grad_clip=cfg.grad_clip,
                compute_dtype=cfg.compute_dtype(),
                grad_hook=sw.grad_hook,
                grad=batch.extra.get("grad"),
            )  # the LM's dL/dx at the hook, for g-SAEs
        except NonFiniteValue as e:
            raise sw.non_finite(m.name, pos.step + 1, e) from None
        m.window.add(stats, batch.n)  # the running sums of the next metrics line
    pos.step, pos.batches, pos.tokens = pos.step + 1, pos.batches + 1, pos.tokens + batch.n
    last = pos.step == cfg.total_steps
    if last:
        sw.calibrate()  # the choice SAEs' inference thresholds, from the final weights
    every = cfg.checkpoint_every_tokens
    log_now = last or pos.step % cfg.log_every_steps == 0
    save_now = sw.main and (last or (every is not None and pos.tokens // every > (pos.tokens - batch.n) // every))
    if log_now or save_now:
        sw.check_params()  # NaN/inf weights are never logged as a result nor saved
    if log_now:
        sw.log()  # one metrics line per SAE; DivergedError when one blew up
    saved = sw.save_checkpoint() if save_now else None
    sw.bar.update(batch.n)
    for cb in sw.callbacks:
        cb(StepInfo(pos.step, pos.tokens, saved, sw.members))


def calibration_split(
    saes: Sequence[BaseSAE], source: ActivationSource, cfg: TrainConfig
) -> tuple[ActivationSource, ActivationSource | None]:
    """(training source, calibration source or None). The choice SAEs calibrate their inference thresholds on
    text they never trained on: a finite source (cache, tensor) holds out ``calibrate_tokens`` (whole batches),
    whole contexts spread over all its text, and the whole sweep trains on the rest. A stream calibrates on its next
    tokens (None), which are new text unless training wrapped around its corpus. Why: BENCHMARKS.md §8.
    At most a quarter of a small source is held out (with a warning); below four batches, none.
    """
    b = cfg.batch_size
    n = math.ceil(cfg.calibrate_tokens / b) * b
    split = getattr(source, "split_holdout", None)
    if not n or split is None or not any(s.has_thresholds for s in saes):
        return source, None
    most = source.n_tokens // (4 * b) * b
    if n > most:
        warnings.warn(
            f"train.calibrate_tokens={cfg.calibrate_tokens} is more than a quarter of the {source.n_tokens} usable "
            f"tokens of the activation source; "
            + (
                f"holding out {most} for the threshold calibration instead"
                if most
                else "calibrating the thresholds on tokens the SAEs trained on"
            )
            + ". Cache more data "
            "(data.max_tokens) for an unbiased calibration",
            stacklevel=3,
        )
        n = most
    return split(n) if n else (source, None)


def _last_logged(run: RunDir, name: str) -> dict:
    records = run.metrics(name)
    return records[-1] if records else {}


def _finish(sw: Sweep, source: ActivationSource, status: str) -> SweepResult:
    """Save the final SAEs (when done), record the results in run.json and build the return value.

    SAEs that diverged (see training.divergence) are not saved; the run is then "diverged" and raises."""
    run, pos, guard = sw.run, sw.pos, sw.guard
    diverged = [m.name for m in sw.members if guard.failed_at_end(m.name)] if status == "done" else []
    results = {}
    for m in sw.members:
        sae_dir = run.sae_dir(m.name) if status == "done" and m.name not in diverged else None
        # a finished run resumed without a step already saved these weights: keep its eval.json and feature DB,
        # unless the saved SAE is damaged (a flipped byte): then save it again from the checkpoint
        kept = sw.pos.step == sw.started_at and sae_dir is not None and SAEDir(sae_dir).is_intact()
        if sae_dir is not None and sw.main and not kept:
            SAEDir(sae_dir).replace(m.sae, fold_scale=m.part.norm_scale)  # never half written
        dead = torch.nonzero(m.sae.dead_mask()).flatten().tolist()
        under = torch.nonzero(underused_mask(m.sae)).flatten().tolist()
        results[m.name] = SAEResult(m.name, sae_dir, m.last_record or _last_logged(run, m.name), dead, under)
    if sw.main:
        summary = {
            n: {**r.metrics, "n_dead": len(r.dead_latents), "n_underused": len(r.underused_latents)}
            for n, r in results.items()
        }
        for m in sw.members:
            summary[m.name]["base_lr"] = m.optimizer.param_groups[0]["initial_lr"]  # train.lr resolved (auto)
            if m.calibration:
                summary[m.name]["threshold_calibration"] = m.calibration
        run.write_status(
            status="diverged" if diverged else status,
            tokens_seen=pos.tokens,
            steps=pos.step,
            results=summary,
            error=diverged_message(diverged, guard, pos.step, sw.last_ckpt) if diverged else None,
        )
    if diverged:
        raise DivergedError(diverged_message(diverged, guard, pos.step, sw.last_ckpt))
    return SweepResult(run.path, status, pos.step, pos.tokens, results, {m.name: m.sae for m in sw.members})


def train_sweep(
    saes: Sequence[BaseSAE | SAEConfig],
    source: ActivationSource,
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: ResumeMode = "auto",
    *,
    overwrite: bool = False,
    stop_after_tokens: int | None = None,
    callbacks: Iterable[Callable[[StepInfo], None]] = (),
    extra_config: dict | None = None,
    grad_hook: Callable[[torch.nn.Module], None] | None = None,
    config_path: str | Path | None = None,
) -> SweepResult:
    """Train every SAE in ``saes`` (modules or SAEConfigs) on one pass over ``source``.

    resume: 'auto' continues a run in ``run_dir`` with the same training config (else starts fresh),
    'must' requires a checkpoint to continue from, 'never' refuses an existing run unless ``overwrite``.
    A run dir holding a different config is never touched. ``stop_after_tokens`` pauses cleanly (a
    checkpoint is written; status 'stopped'). ``extra_config`` adds sections (e.g. data, model) to
    config.yaml without entering the config hash. ``grad_hook(sae)`` runs after backward (DDP all-reduce).
    ``config_path`` (the user's config file) is protected: overwrite never clears a directory holding it.
    Raises ConfigError/RunDirError before training on bad input, NonFiniteError on NaN/inf, DivergedError when
    training made an SAE worse (run.json then says "diverged").
    """
    modules = build_saes(saes, cfg.seed)
    for sae in modules:
        sae.cfg = cfg.bind_sae(sae.cfg)  # dead_tokens: auto -> a tenth of this run
    preflight(modules, source, cfg)
    ddp.check_world(cfg.batch_size)
    ddp.sync_norm_scale(source)  # before the config hash: a stream's description holds its scale
    source, calibration_source = calibration_split(modules, source, cfg)
    _warn_many_epochs(source, cfg)
    require_optional_loggers(cfg)
    run = RunDir(run_dir)
    resolved = resolved_config(cfg, modules, source, extra_config)
    chash = resolved_hash(resolved)
    ddp.check_same("the training config", chash, "give every rank the same config file and overrides")
    mode = ddp.on_main(lambda: _prepare(run, resolved, resume, overwrite, config_path))
    sw = Sweep(
        make_members(modules, cfg, cfg.resolved_device(), hook_parts(source)),
        cfg,
        run,
        chash,
        calibration_source,
        ddp.grad_hook(grad_hook),
        tuple(callbacks),
    )
    logged = _start(sw, mode, resume, source)
    sw.started_at = sw.pos.step
    ddp.sync_saes(sw.saes)
    if sw.main:
        run.write_config(resolved)
        run.write_status(
            status="running",
            config_hash=chash,
            total_tokens=cfg.total_steps * cfg.batch_size,
            saes=[m.name for m in sw.members],
            error=None,
        )
    for m in sw.members:
        m.sae.train()
    sw.logger = MetricsLogger(run, cfg, resolved, active=sw.main, logged_tokens=logged)
    try:
        with sharded_batches():
            stopped = _train(sw, source, stop_after_tokens)
        return _finish(sw, source, "stopped" if stopped else "done")
    except BaseException as e:
        if sw.main:
            _record_failure(run, e)
        raise
    finally:
        sw.logger.close()


def _prepare(run: RunDir, resolved: dict, resume: ResumeMode, overwrite: bool, config_path) -> str:
    """Rank 0: decide fresh or resume (clearing or refusing the directory as asked) and claim the run dir."""
    mode = prepare(run, resolved, resume, overwrite, config_path)
    check_writable(run.path)
    run.claim()
    return mode


MANY_EPOCHS = 10


def _warn_many_epochs(source, cfg: TrainConfig) -> None:
    """Training for many passes over a small cache overfits it; say so (the user may have meant more data)."""
    n = getattr(source, "n_tokens", None)
    total = cfg.total_steps * cfg.batch_size
    if n and total > MANY_EPOCHS * n:
        warnings.warn(
            f"train.total_tokens={total} is {total / n:.0f} epochs of the {n} usable tokens of the "
            "activation source; cache more data (data.max_tokens) or train for fewer tokens",
            stacklevel=3,
        )


def _record_failure(run: RunDir, e: BaseException) -> None:
    """run.json never keeps saying "running" after the process gave up (best effort: the disk may be full)."""
    if isinstance(e, DivergedError):
        status = "diverged"
    elif isinstance(e, KeyboardInterrupt):
        status = "interrupted"
    else:
        status = "failed"
    try:
        if run.read_status().get("status") != "diverged":
            run.write_status(status=status, error=f"{type(e).__name__}: {e}" if status == "failed" else str(e))
    except Exception:  # noqa: BLE001 -- the original error is what the user must see
        pass
