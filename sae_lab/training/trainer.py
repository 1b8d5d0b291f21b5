"""train_sweep: train several SAEs in one pass over one activation stream, with exact resume.

Each batch is drawn once and every SAE of the sweep steps on it (one Adam + scheduler per SAE). The data
position is a plain count of batches consumed; ``source.iter_batches(..., skip_batches=n)`` resumes there.
Only rank 0 writes to the run directory. Under torchrun the ranks split every global batch and reduce
gradients and batch-level rules (see training/ddp.py); a single process never communicates.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from sae_lab import ownership
from sae_lab.activations.source import ActivationSource
from sae_lab.distributed import global_rows, sharded_batches, world
from sae_lab.fileio import atomic_path
from sae_lab.rundir import RunDir, RunDirError
from sae_lab.saes import BaseSAE, SAEConfig
from sae_lab.training import checkpoint as ckpt
from sae_lab.training import ddp
from sae_lab.training.checks import preflight
from sae_lab.training.config import TrainConfig
from sae_lab.training.divergence import DivergedError, DivergenceGuard, diverged_message
from sae_lab.training.metrics_log import MetricsLogger, require_optional_loggers, truncate_metrics
from sae_lab.training.report import make_record, postfix, underused_mask
from sae_lab.training.resume import ResumeMode, check_writable, prepare, resolved_config, resolved_hash
from sae_lab.training.state import (
    Member,
    Position,
    build_saes,
    checkpoint_state,
    init_b_dec,
    make_members,
    restore,
    seed_all,
)
from sae_lab.training.step import NonFiniteValue, first_non_finite_param, train_step

SAE_KIND = "sae"
SAE_OWNED = ("cfg.json", "sae_weights.safetensors", "sae_lab_state.safetensors", "sae_lab.json", "eval.json",
             "features.sqlite", "features.sqlite.sha256", ".analyze_checkpoint.safetensors")


class NonFiniteError(FloatingPointError):
    """Training hit NaN/inf; the message names the SAE, the step and the last good checkpoint."""


@dataclass
class StepInfo:
    """Passed to callbacks after every step (and its logging/checkpointing)."""

    step: int
    tokens: int
    checkpoint: Path | None
    members: list[Member]


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


def is_main() -> bool:
    """Only the main process writes run-directory files (config, metrics, checkpoints, weights)."""
    return world()[0] == 0


def _checkpoint_due(pos: Position, n: int, cfg: TrainConfig) -> bool:
    every = cfg.checkpoint_every_tokens
    return pos.step == cfg.total_steps or (every is not None and pos.tokens // every > (pos.tokens - n) // every)


def _non_finite(name: str, step: int, err: object, last: Path | None) -> NonFiniteError:
    where = f"{last}" if last is not None else "none (no checkpoint was written yet)"
    return NonFiniteError(
        f"SAE '{name}' hit a non-finite value at step {step}: {err}. "
        f"Training stopped; the last good checkpoint is {where} and was left intact. "
        "Lower train.lr, set train.grad_clip, or check the activations for NaN/inf, then start a new run_dir."
    )


def _start(members: list[Member], run: RunDir, mode: str, resume: ResumeMode, source: ActivationSource,
           cfg: TrainConfig,
           device: torch.device, chash: str) -> tuple[Position, Path | None, int]:
    """Restore the newest checkpoint when resuming; otherwise seed everything and initialise b_dec.
    Also returns the tokens up to which metrics were logged before (0 for a fresh run)."""
    found = ddp.on_main(lambda: ckpt.load_latest(run.checkpoints_dir, map_location="cpu") if mode == "resume"
                        else None)  # rank 0 reads it; every rank gets the same state
    if found is None:
        if resume == "must":
            raise RunDirError(f"resume='must' but '{run.checkpoints_dir}' holds no checkpoint to resume from")
        seed_all(cfg.seed)
        if is_main():  # from the global batches; ddp.sync_saes copies it to the other ranks
            init_b_dec(members, source, cfg, device)
        pos, path = Position(), None
    else:
        path, state = found
        pos = restore(members, state, path, chash)
    logged = truncate_metrics(run, pos.tokens) if is_main() else 0  # lines a killed run logged after the checkpoint
    return pos, path, logged


def _log(members: list[Member], pos: Position, cfg: TrainConfig, logger: MetricsLogger, bar, clock,
         guard: DivergenceGuard, last_ckpt: Path | None):
    now = time.perf_counter()
    tokens_per_s = (pos.tokens - clock[1]) / max(now - clock[0], 1e-9)
    records = [make_record(m, pos, cfg, tokens_per_s) for m in members]
    for r in records:
        logger.log(r)
    bar.set_postfix_str(postfix(records), refresh=False)
    diverged = [r["sae"] for r in records if guard.update(r["sae"], r["fvu"])]
    if diverged:
        raise DivergedError(diverged_message(diverged, guard, pos.step, last_ckpt))
    return now, pos.tokens


def _save_checkpoint(members: list[Member], pos: Position, run: RunDir, cfg: TrainConfig, chash: str) -> Path:
    path = ckpt.save_checkpoint(run.checkpoints_dir, checkpoint_state(members, pos, chash), cfg.keep_checkpoints)
    run.write_status(tokens_seen=pos.tokens, steps=pos.step, last_checkpoint=path.name)
    return path


def _loop(members: list[Member], source: ActivationSource, cfg: TrainConfig, run: RunDir, pos: Position, chash: str,
          logger: MetricsLogger, last_ckpt: Path | None, stop_after_tokens: int | None,
          callbacks: Iterable[Callable[[StepInfo], None]], grad_hook,
          guard: DivergenceGuard, calibration_source: ActivationSource | None) -> tuple[bool, Path | None]:
    """Train until total_steps (returns False) or stop_after_tokens (returns True); checkpoints as it goes."""
    main, device = is_main(), cfg.resolved_device()
    batches = ddp.rank_batches(source, cfg.batch_size, cfg.seed, pos.batches, device)
    bar = tqdm(total=cfg.total_steps * cfg.batch_size, initial=pos.tokens, unit="tok", unit_scale=True,
               disable=not (cfg.progress and main), desc=f"train {len(members)} SAE(s)", dynamic_ncols=True)
    clock = (time.perf_counter(), pos.tokens)
    try:
        while pos.step < cfg.total_steps:
            if stop_after_tokens is not None and pos.tokens >= stop_after_tokens:
                if main and (last_ckpt is None or last_ckpt.name != ckpt.checkpoint_name(pos.tokens)):
                    _check_params(members, pos.step, last_ckpt)
                    last_ckpt = _save_checkpoint(members, pos, run, cfg, chash)
                return True, last_ckpt
            x = next(batches)
            n = global_rows(int(x.shape[0]))  # this rank's rows under torchrun: count the global batch
            _step_all(members, x, n, cfg, pos.step + 1, last_ckpt, grad_hook)
            pos.step, pos.batches, pos.tokens = pos.step + 1, pos.batches + 1, pos.tokens + n
            if pos.step == cfg.total_steps:
                _calibrate(members, batches, calibration_source, cfg, device)
            log_now = pos.step % cfg.log_every_steps == 0 or pos.step == cfg.total_steps
            save_now = main and _checkpoint_due(pos, n, cfg)
            if log_now or save_now:
                _check_params(members, pos.step, last_ckpt)
            if log_now:
                clock = _log(members, pos, cfg, logger, bar, clock, guard, last_ckpt)
            saved = None
            if save_now:
                saved = last_ckpt = _save_checkpoint(members, pos, run, cfg, chash)
            bar.update(n)
            for cb in callbacks:
                cb(StepInfo(pos.step, pos.tokens, saved, members))
        return False, last_ckpt
    finally:
        bar.close()


def _step_all(members: list[Member], x: torch.Tensor, n: int, cfg: TrainConfig, step: int, last_ckpt: Path | None,
              grad_hook) -> None:
    """Every SAE of the sweep takes one step on the same batch ``x``."""
    for m in members:
        try:
            stats = train_step(m.sae, m.optimizer, m.scheduler, x, recon_loss=cfg.recon_loss,
                               grad_clip=cfg.grad_clip, compute_dtype=cfg.compute_dtype(), grad_hook=grad_hook)
        except NonFiniteValue as e:
            raise _non_finite(m.name, step, e, last_ckpt) from None
        m.window.add(stats, n)


def calibration_split(saes: Sequence[BaseSAE], source: ActivationSource,
                      cfg: TrainConfig) -> tuple[ActivationSource, ActivationSource | None]:
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
            f"tokens of the activation source; " + (f"holding out {most} for the threshold calibration instead"
            if most else "calibrating the thresholds on tokens the SAEs trained on") + ". Cache more data "
            "(data.max_tokens) for an unbiased calibration", stacklevel=3)
        n = most
    return split(n) if n else (source, None)


def _calibrate(members: list[Member], batches, calibration_source: ActivationSource | None, cfg: TrainConfig,
               device) -> None:
    """After the last step: set the choice SAEs' inference thresholds with the final weights (see
    sae_lab/saes/calibration.py) from all of ``calibration_source`` (held out from training, see
    calibration_split), or, when there is none (a stream), from the next ``calibrate_tokens`` of ``batches``.
    Runs before the final checkpoint, so a resumed run never calibrates twice."""
    if calibration_source is None:
        n = math.ceil(cfg.calibrate_tokens / cfg.batch_size)
    else:
        n = calibration_source.n_tokens // cfg.batch_size
        batches = ddp.rank_batches(calibration_source, cfg.batch_size, cfg.seed, 0, device)
    cals = [(m, m.sae.threshold_calibrator(cfg.batch_size, n)) for m in members if m.sae.has_thresholds] if n else []
    if not cals:
        return
    for _ in range(n):
        x = next(batches)
        for _, c in cals:
            c.add(x)
    for m, c in cals:
        m.calibration = c.finish()


def _check_params(members: list[Member], step: int, last_ckpt: Path | None) -> None:
    for m in members:
        bad = first_non_finite_param(m.sae)
        if bad is not None:
            raise _non_finite(m.name, step, f"parameter {bad} holds NaN/inf", last_ckpt)


def _save_sae(sae: BaseSAE, final: Path, norm_scale: float) -> None:
    """sae.save into a temp dir, then swap it in, so saes/<name>/ is never half written. An existing
    saes/<name>/ is replaced only when sae-lab owns everything in it (ownership.clear_owned refuses, naming
    them, while foreign files are there)."""
    if final.exists():
        ownership.clear_owned(final, SAE_KIND, SAE_OWNED)
    with atomic_path(final, directory=True) as tmp:
        ownership.mark(tmp, SAE_KIND)
        sae.save(tmp, fold_scale=norm_scale)


def _last_logged(run: RunDir, name: str) -> dict:
    records = run.metrics(name)
    return records[-1] if records else {}


def _finish(members: list[Member], source: ActivationSource, run: RunDir, pos: Position, status: str,
            guard: DivergenceGuard, last_ckpt: Path | None) -> SweepResult:
    """Save the final SAEs (when done), record the results in run.json and build the return value.

    SAEs that diverged (see training.divergence) are not saved; the run is then "diverged" and raises."""
    diverged = [m.name for m in members if guard.failed_at_end(m.name)] if status == "done" else []
    results = {}
    for m in members:
        sae_dir = run.sae_dir(m.name) if status == "done" and m.name not in diverged else None
        if sae_dir is not None and is_main():
            _save_sae(m.sae, sae_dir, source.norm_scale)
        dead = torch.nonzero(m.sae.dead_mask()).flatten().tolist()
        under = torch.nonzero(underused_mask(m.sae)).flatten().tolist()
        results[m.name] = SAEResult(m.name, sae_dir, m.last_record or _last_logged(run, m.name), dead, under)
    if is_main():
        summary = {n: {**r.metrics, "n_dead": len(r.dead_latents), "n_underused": len(r.underused_latents)}
                   for n, r in results.items()}
        for m in members:
            summary[m.name]["base_lr"] = m.optimizer.param_groups[0]["initial_lr"]  # train.lr resolved (auto)
            if m.calibration:
                summary[m.name]["threshold_calibration"] = m.calibration
        run.write_status(status="diverged" if diverged else status, tokens_seen=pos.tokens, steps=pos.step,
                         results=summary, error=diverged_message(diverged, guard, pos.step, last_ckpt)
                         if diverged else None)
    if diverged:
        raise DivergedError(diverged_message(diverged, guard, pos.step, last_ckpt))
    return SweepResult(run.path, status, pos.step, pos.tokens, results, {m.name: m.sae for m in members})


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
    members = make_members(modules, cfg, cfg.resolved_device())
    pos, last_ckpt, logged = _start(members, run, mode, resume, source, cfg, cfg.resolved_device(), chash)
    ddp.sync_saes([m.sae for m in members])
    if is_main():
        run.write_config(resolved)
        run.write_status(status="running", config_hash=chash, total_tokens=cfg.total_steps * cfg.batch_size,
                         saes=[m.name for m in members], error=None)
    for m in members:
        m.sae.train()
    logger = MetricsLogger(run, cfg, resolved, active=is_main(), logged_tokens=logged)
    guard = DivergenceGuard()
    try:
        with sharded_batches():
            stopped, last_ckpt = _loop(members, source, cfg, run, pos, chash, logger, last_ckpt, stop_after_tokens,
                                       callbacks, ddp.grad_hook(grad_hook), guard, calibration_source)
        return _finish(members, source, run, pos, "stopped" if stopped else "done", guard, last_ckpt)
    except BaseException as e:
        if is_main():
            _record_failure(run, e)
        raise
    finally:
        logger.close()


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
        warnings.warn(f"train.total_tokens={total} is {total / n:.0f} epochs of the {n} usable tokens of the "
                      "activation source; cache more data (data.max_tokens) or train for fewer tokens",
                      stacklevel=3)


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
