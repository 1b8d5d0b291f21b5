"""``sae-lab eval``: faithfulness metrics of every SAE of a run (or one SAE directory) on held-out tokens.

Per batch the clean model runs once (logits + every needed hook); each SAE encodes its hook's activations
with its inference rule (``sae.encode``) and then one spliced forward per SAE gives its CE loss and KL;
zero- and mean-ablation forwards run once per hook. The forward up to a hook is the same in all of these: the
clean forward records the input of the hook's block, and every variant runs only the blocks from there on
(``suffix_forward.SharedForward``; bit-identical logits). Without CE loss, only activations are needed: the
forward stops after the deepest hook. Splicing and ablation touch only the kept positions
(BOS/EOS/pad and outliers keep their clean activations), the positions the reconstruction metrics use.
The mean for mean-ablation is the exact mean over the eval set's kept positions (a cheap first pass that
stops after the hook's layer).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from sae_lab.activations.generate import ActivationGenerator
from sae_lab.activations.masks import keep_mask
from sae_lab.circuits.forward_hooks import ablation_hooks, replace_hooks
from sae_lab.evaluation import inputs as I
from sae_lab.evaluation.config import EvalConfig
from sae_lab.evaluation.metrics import LossStats, ReconStats, kl_per_position, loss_metrics, next_token_ce
from sae_lab.evaluation.suffix_forward import SharedForward
from sae_lab.fileio import atomic_write_text
from sae_lab.models import LoadedModel
from sae_lab.rundir import RunDir

log = logging.getLogger(__name__)


def evaluate_run(run_dir: str | Path, cfg: EvalConfig | None = None, model: LoadedModel | None = None) -> dict:
    """Evaluate every SAE of a run; writes saes/<name>/eval.json and the run's eval.json (the summary)."""
    run = RunDir(run_dir)
    run_cfg = run.read_config()
    cfg = cfg or EvalConfig.model_validate(run_cfg.get("eval") or {})
    model = I.model_for(run_cfg, model)
    records = evaluate_targets(I.run_targets(run), model, cfg, I.outlier_multiple(cfg, run_cfg))
    trained = run.read_status().get("results") or {}
    for name, rec in records.items():
        _add_training_l0(rec["metrics"], trained.get(name) or {})
        run.write_sae_eval(name, rec)
    first = next(iter(records.values()))
    summary = {"run_dir": str(run_dir), "model": first["model"], "eval_data": first["eval_data"],
               "eval_config": first["eval_config"], "saes": {n: r["metrics"] for n, r in records.items()}}
    run.write_eval_summary(summary)
    return summary


def _add_training_l0(metrics: dict, trained: dict) -> None:
    """Training L0 (training rule, last logging window) beside the held-out L0 (inference rule): they differ when
    an inference rule misses the training budget (e.g. choice SAEs' thresholds)."""
    if isinstance(trained.get("l0"), (int, float)):
        metrics["train_l0"] = trained["l0"]
        metrics["l0_heldout_over_train"] = metrics["l0_mean"] / trained["l0"] if trained["l0"] else None


def evaluate_sae_dir(sae_dir: str | Path, model: LoadedModel, cfg: EvalConfig | None = None) -> dict:
    """Evaluate one SAE directory (ours or SAELens format, hook from cfg.json); writes sae_dir/eval.json."""
    cfg = cfg or EvalConfig()
    target = I.sae_dir_target(sae_dir)
    multiple = None if cfg.exclude_outliers in ("run", "none") else float(cfg.exclude_outliers)
    rec = evaluate_targets([target], model, cfg, multiple)[target.name]
    atomic_write_text(target.eval_path, json.dumps(rec, indent=2))
    return rec


def evaluate_targets(targets: list[I.Target], model: LoadedModel, cfg: EvalConfig,
                     multiple: float | None = None) -> dict[str, dict]:
    """Metrics of each target on ``cfg``'s held-out tokens, sharing the model forwards; no files written."""
    I.check_targets(targets, model)
    I.place_saes(targets, cfg, model)
    t0 = time.time()
    hooks = sorted({t.hook for t in targets})
    gen = ActivationGenerator(model, hooks, exclude_special=False)
    thresholds = I.first_batch_thresholds(gen, cfg, multiple)
    means = hook_means(gen, cfg, thresholds) if cfg.ce_loss else {}
    state = _State(targets, hooks, SharedForward(model.bridge, hooks) if cfg.ce_loss else None)
    n_contexts = 0
    for _, tokens in I.iter_batches(cfg, model.tokenizer, desc=f"evaluating {len(targets)} SAE(s)"):
        _eval_batch(model, tokens, targets, cfg, thresholds, means, state)
        n_contexts += len(tokens)
    if state.forward is not None:
        log.info("eval: variant forwards from the hook's block %(from_block)d, full %(full)d", state.forward.counts)
    if n_contexts == 0:
        I.first_batch(cfg, model.tokenizer)  # raises a clear error: the data yields no complete context
    data = I.data_record(cfg, multiple, thresholds, n_contexts, n_contexts * cfg.data.context_length,
                         {t.name: state.recon[t.name].n for t in targets})
    return {t.name: _record(t, state, cfg, data, model, time.time() - t0) for t in targets}


class _State:
    def __init__(self, targets: list[I.Target], hooks: list[str], forward: SharedForward | None):
        self.forward = forward  # the batch's forwards when CE loss is on
        self.recon = {t.name: ReconStats(t.sae.cfg.d_in, t.sae.cfg.d_sae) for t in targets}
        self.loss = {k: LossStats() for k in ["clean", *(t.name for t in targets),
                                              *(f"{m}:{h}" for h in hooks for m in ("zero", "mean"))]}


@torch.inference_mode()
def hook_means(gen: ActivationGenerator, cfg: EvalConfig, thresholds: dict) -> dict[str, torch.Tensor]:
    """Exact mean activation [d_in] per hook over the kept positions of the eval set."""
    sums = {h: 0.0 for h in gen.hooks}
    counts = {h: 0 for h in gen.hooks}
    for _, tokens in I.iter_batches(cfg, gen.model.tokenizer, desc="mean activations (for mean-ablation)"):
        special = I.special_mask(tokens, gen.model.tokenizer, cfg)
        for h, a in gen.forward(tokens).items():
            keep = keep_mask(a, special, thresholds[h])
            sums[h] = sums[h] + a[keep].double().sum(0)
            counts[h] += int(keep.sum())
    return {h: (sums[h] / max(counts[h], 1)).float() for h in gen.hooks}


@torch.inference_mode()
def _eval_batch(model: LoadedModel, tokens: np.ndarray, targets, cfg: EvalConfig, thresholds, means, state) -> None:
    ids = torch.as_tensor(tokens, dtype=torch.long, device=model.device)
    hooks = sorted({t.hook for t in targets})
    special = I.special_mask(tokens, model.tokenizer, cfg)
    if cfg.ce_loss:
        logits, cache = state.forward.clean(ids, hooks)
    else:
        stop = ActivationGenerator(model, hooks, exclude_special=False).stop_at_layer
        logits, cache = model.bridge.run_with_cache(ids, names_filter=hooks, stop_at_layer=stop)
    acts = {h: cache[h].reshape(*tokens.shape, -1).float() for h in hooks}
    keep = {h: keep_mask(acts[h], special, thresholds[h]) for h in hooks}
    clean_logp = None
    if cfg.ce_loss:
        state.loss["clean"].update(next_token_ce(logits, ids))
        clean_logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    for t in targets:
        dev = t.sae.W_dec.device
        x = acts[t.hook].to(dev)
        z = t.sae.encode(x)
        x_hat = t.sae.decode(z)
        m = keep[t.hook].to(dev)
        state.recon[t.name].update(x[m], z[m], x_hat[m])
        if cfg.ce_loss:
            _spliced(state.forward, t.hook, replace_hooks(t.hook, x_hat, keep[t.hook]), clean_logp, state.loss[t.name])
    if cfg.ce_loss:
        for h in hooks:
            _spliced(state.forward, h, ablation_hooks(h, "zero", None, keep[h]), clean_logp, state.loss[f"zero:{h}"])
            _spliced(state.forward, h, ablation_hooks(h, "mean", means[h], keep[h]), clean_logp,
                     state.loss[f"mean:{h}"])


def _spliced(forward: SharedForward, hook: str, hooks, clean_logp: torch.Tensor, acc: LossStats) -> None:
    logits = forward.logits(hook, hooks)
    acc.update(next_token_ce(logits, forward.ids), kl_per_position(clean_logp, logits))


def _record(t: I.Target, state: _State, cfg: EvalConfig, data: dict, model: LoadedModel, seconds: float) -> dict:
    metrics = state.recon[t.name].result(cfg.dense_threshold)
    if cfg.ce_loss:
        L = state.loss
        metrics.update(loss_metrics(L["clean"], L[t.name], L[f"zero:{t.hook}"], L[f"mean:{t.hook}"]))
    c = t.sae.cfg
    return {"sae": t.name, "hook_name": t.hook, "architecture": t.sae.architecture, "d_in": c.d_in, "d_sae": c.d_sae,
            "k": getattr(c, "k", None), "inference_rule": "sae.encode", "metrics": metrics, "eval_data": data,
            "model": model.describe(), "eval_config": cfg.model_dump(mode="json"), "seconds": round(seconds, 2)}
