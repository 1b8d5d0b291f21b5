"""``sae-lab analyze``: one streaming pass of feature statistics per SAE, then a feature database per SAE.

The SAEs of a run share each model forward (it stops after the deepest hook). The streaming state of every
SAE is checkpointed atomically (one safetensors file) every ``checkpoint_every_tokens``; a rerun with the same
config, SAEs and model resumes from it, and because every statistic is independent of batching and order
(see feature_stats.py) the final database equals that of an uninterrupted run. The checkpoint is removed
once every database is written.
"""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors.torch import load_file, save_file

from sae_lab.activations.generate import ActivationGenerator
from sae_lab.activations.masks import keep_mask
from sae_lab.evaluation import feature_rows as R
from sae_lab.evaluation import inputs as I
from sae_lab.evaluation.config import AnalyzeConfig
from sae_lab.evaluation.directions import decoder_neighbours, logit_effects, residual_directions
from sae_lab.evaluation.feature_db import write_feature_db
from sae_lab.evaluation.feature_stats import FeatureStats
from sae_lab.fileio import atomic_path, canonical_json, remove_temps
from sae_lab.models import LoadedModel
from sae_lab.rundir import RunDir
from sae_lab.saedir import SAEDir
from sae_lab.saeref import SAERef

log = logging.getLogger(__name__)


def analyze_run(
    run_dir: str | Path,
    cfg: AnalyzeConfig | None = None,
    model: LoadedModel | None = None,
    stop_after_tokens: int | None = None,
) -> dict:
    """Analyse every SAE of a run: writes saes/<name>/features.sqlite. Returns a status record."""
    run = RunDir(run_dir)
    run_cfg = run.read_config()
    cfg = cfg or AnalyzeConfig.model_validate(run_cfg.get("analyze") or {})
    model = I.model_for(run_cfg, model)
    return analyze_targets(
        I.run_targets(run), model, cfg, I.outlier_multiple(cfg, run_cfg), run.analyze_checkpoint_path, stop_after_tokens
    )


def analyze_sae_dir(
    sae_dir: str | Path, model: LoadedModel, cfg: AnalyzeConfig | None = None, stop_after_tokens: int | None = None
) -> dict:
    """Analyse one SAE directory (ours or SAELens format): writes sae_dir/features.sqlite."""
    cfg = cfg or AnalyzeConfig()
    multiple = None if cfg.exclude_outliers in ("run", "none") else float(cfg.exclude_outliers)
    return analyze_targets(
        [I.sae_dir_target(sae_dir)], model, cfg, multiple, SAEDir(sae_dir).analyze_checkpoint_path, stop_after_tokens
    )


def analyze_targets(
    targets: list[SAERef],
    model: LoadedModel,
    cfg: AnalyzeConfig,
    multiple: float | None,
    ckpt: Path,
    stop_after_tokens: int | None = None,
) -> dict:
    """The streaming pass for ``targets`` (sharing forwards), checkpointing to ``ckpt``, then the databases."""
    I.check_targets(targets, model)
    device = I.place_saes(targets, cfg, model)
    hooks = sorted({t.hook for t in targets})
    gen = ActivationGenerator(model, hooks, exclude_special=False)
    thresholds = I.first_batch_thresholds(gen, cfg, multiple)
    stats = {t.name: FeatureStats(t.sae.cfg.d_sae, cfg, device) for t in targets}
    fp = fingerprint(targets, model, cfg, multiple)
    done = resumed = _resume(ckpt, fp, stats) if cfg.resume else 0
    T, t0, since = cfg.data.context_length, time.time(), 0
    for start, tokens in I.iter_batches(
        cfg, model.tokenizer, skip_contexts=done, desc=f"analysing {len(targets)} SAE(s)"
    ):
        _update(gen, tokens, start, targets, stats, cfg, thresholds)
        done, since = start + len(tokens), since + tokens.size
        if stop_after_tokens is not None and done * T >= stop_after_tokens:
            _save_checkpoint(ckpt, fp, done, stats)
            return {
                "status": "stopped",
                "contexts": done,
                "tokens": done * T,
                "checkpoint": str(ckpt),
                "resumed_from_contexts": resumed,
            }
        if since >= cfg.checkpoint_every_tokens:
            _save_checkpoint(ckpt, fp, done, stats)
            since = 0
    if done == 0:
        I.first_batch(cfg, model.tokenizer)  # raises a clear error: the data yields no complete context
    data = I.data_record(cfg, multiple, thresholds, done, done * T, {n: int(s.t["n_tokens"]) for n, s in stats.items()})
    vocab = R.vocabulary(model.tokenizer, int(model.bridge.W_U.shape[1]))  # decoded once for every database
    paths = {t.name: str(write_db(t, stats[t.name], model, cfg, data, vocab)) for t in targets}
    ckpt.unlink(missing_ok=True)
    return {
        "status": "done",
        "contexts": done,
        "tokens": done * T,
        "databases": paths,
        "resumed_from_contexts": resumed,
        "seconds": round(time.time() - t0, 2),
    }


@torch.inference_mode()
def _update(gen: ActivationGenerator, tokens, start: int, targets, stats, cfg: AnalyzeConfig, thresholds) -> None:
    acts = gen.forward(tokens)
    special = I.special_mask(tokens, gen.model.tokenizer, cfg)
    tok = torch.from_numpy(tokens)
    for h in gen.hooks:
        keep = keep_mask(acts[h], special, thresholds[h]).reshape(-1)
        for t in (t for t in targets if t.hook == h):
            dev = t.sae.W_dec.device
            z = t.sae.encode(acts[h].reshape(-1, acts[h].shape[-1]).to(dev))
            stats[t.name].update(z, keep.to(dev), tok, start * tokens.shape[1])


def fingerprint(targets, model: LoadedModel, cfg: AnalyzeConfig, multiple: float | None) -> str:
    """What a checkpoint must match to be resumed: SAE weights, model, data and statistic settings."""
    skip = {"checkpoint_every_tokens", "resume", "device"}
    h = hashlib.sha256(canonical_json({k: v for k, v in cfg.model_dump(mode="json").items() if k not in skip}))
    h.update(f"{model.weights_hash}|{multiple}".encode())
    for t in targets:
        h.update(t.name.encode())
        for k, v in sorted(t.sae.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _save_checkpoint(path: Path, fp: str, contexts: int, stats: dict[str, FeatureStats]) -> None:
    tensors = {f"{name}/{k}": v for name, s in stats.items() for k, v in s.state().items()}
    remove_temps(path.parent, path.name)  # left by a killed run (our own temporary names only)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"fingerprint": fp, "contexts": str(contexts)})


def _resume(path: Path, fp: str, stats: dict[str, FeatureStats]) -> int:
    """Load a matching checkpoint into ``stats``; returns the contexts already done (0: start fresh)."""
    if not path.is_file():
        return 0
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("fingerprint") != fp:
            log.warning("ignoring analysis checkpoint %s: it was made with other SAEs, model or settings", path)
            return 0
        tensors = load_file(str(path))
        for name, s in stats.items():
            s.load_state({k.split("/", 1)[1]: v for k, v in tensors.items() if k.split("/", 1)[0] == name})
    except Exception as e:  # an unreadable checkpoint only costs the work done so far
        log.warning("ignoring unreadable analysis checkpoint %s (%s); starting over", path, e)
        return 0
    log.info("resuming analysis from %s (%s contexts done)", path, meta["contexts"])
    return int(meta["contexts"])


def write_db(
    t: SAERef, stats: FeatureStats, model: LoadedModel, cfg: AnalyzeConfig, data: dict, vocab: list[str]
) -> Path:
    """Every table into t.db_path. Logit effects and decoder neighbours (matrix products that release the GIL) are
    computed on a worker thread while the statistics' rows are inserted, and their rows go in last."""
    s = stats.state()
    log.info(
        "%s: co-occurrence: %d distinct pairs (%.1f MiB)",
        t.name,
        len(s["cooc_keys"]),
        (s["cooc_keys"].nbytes + s["cooc_counts"].nbytes) / 2**20,
    )
    T = cfg.data.context_length
    dirs = residual_directions(t.sae, model)
    c = t.sae.cfg
    meta = {
        "sae": t.name,
        "hook_name": t.hook,
        "architecture": t.sae.architecture,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "k": getattr(c, "k", None),
        "model": model.describe(),
        "analysis_data": data,
        "analyze_config": cfg.model_dump(mode="json"),
        "logit_effects": "none (hook is not in the residual stream)"
        if dirs is None
        else "decoder direction (through W_O for hook_z) x final-norm gamma x W_U; 1/rms dropped",
        "vocab_size": len(vocab),
    }
    t.sae_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="directions") as pool:
        effects = pool.submit(lambda: None if dirs is None else logit_effects(dirs, model, cfg.n_logits))
        neighbours = pool.submit(decoder_neighbours, t.sae.W_dec, cfg.n_neighbours)
        tables = {
            "features": R.feature_rows(s, t.sae.W_dec),
            "examples": R.example_rows(s, cfg, T),
            "intervals": R.interval_rows(s, cfg),
            "cooccurrence": R.cooccurrence_rows(s, cfg.n_cooccurring),
            "tokens": enumerate(vocab),
            "top_tokens": R.top_token_rows(s, cfg),
            "logits": _when_done(effects, R.logit_rows),
            "neighbours": _when_done(neighbours, lambda nb: R.neighbour_rows(*nb)),
        }
        return write_feature_db(t.db_path, meta, tables)


def _when_done(future: Future, rows: Callable[..., Iterator[tuple]]) -> Iterator[tuple]:
    """The rows of ``future``'s result, waiting for it only when the first row is asked for."""
    yield from rows(future.result())
