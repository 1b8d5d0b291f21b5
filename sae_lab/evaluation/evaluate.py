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

Beside these, the same pass computes SAELens's definitions (``saelens_defs.py``, metrics named ``saelens_*``):
every non-special position spliced (outliers too), every position zero-ablated, CE and KL averaged over the
non-special positions. They reuse a variant's logits when the change is the same (no outlier in the batch, or
nothing excluded); otherwise the variant runs once more, from the hook's block.
"""

from __future__ import annotations

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
from sae_lab.evaluation.saelens_defs import saelens_loss_metrics, saelens_positions, saelens_recon_metrics
from sae_lab.evaluation.suffix_forward import SharedForward
from sae_lab.models import LoadedModel
from sae_lab.rundir import RunDir
from sae_lab.saedir import SAEDir
from sae_lab.saeref import SAERef

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
        SAEDir(run.sae_dir(name)).write_eval(rec)
    first = next(iter(records.values()))
    summary = {
        "run_dir": str(run_dir),
        "model": first["model"],
        "eval_data": first["eval_data"],
        "eval_config": first["eval_config"],
        "saes": {n: r["metrics"] for n, r in records.items()},
    }
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
    target.dir.write_eval(rec)
    return rec


def evaluate_targets(
    targets: list[SAERef], model: LoadedModel, cfg: EvalConfig, multiple: float | None = None
) -> dict[str, dict]:
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
    data = I.data_record(
        cfg,
        multiple,
        thresholds,
        n_contexts,
        n_contexts * cfg.data.context_length,
        {t.name: state.recon[t.name].n for t in targets},
    )
    return {t.name: _record(t, state, cfg, data, model, time.time() - t0) for t in targets}


class _State:
    def __init__(self, targets: list[SAERef], hooks: list[str], forward: SharedForward | None):
        self.forward = forward  # the batch's forwards when CE loss is on
        self.recon = {t.name: ReconStats(t.sae.cfg.d_in, t.sae.cfg.d_sae) for t in targets}
        self.saelens_recon = {t.name: ReconStats(t.sae.cfg.d_in, t.sae.cfg.d_sae) for t in targets}
        ours = ["clean", *(t.name for t in targets), *(f"{m}:{h}" for h in hooks for m in ("zero", "mean"))]
        theirs = ["clean", *(t.name for t in targets), *(f"zero:{h}" for h in hooks)]
        self.loss = {k: LossStats() for k in ours}
        self.saelens = {k: LossStats() for k in theirs}  # SAELens's definitions (saelens_defs.py)


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
    sl = torch.from_numpy(saelens_positions(tokens, model.tokenizer)).to(model.device)  # SAELens's positions
    if cfg.ce_loss:
        logits, cache = state.forward.clean(ids, hooks)
    else:
        stop = ActivationGenerator(model, hooks, exclude_special=False).stop_at_layer
        logits, cache = model.bridge.run_with_cache(ids, names_filter=hooks, stop_at_layer=stop)
    acts = {h: cache[h].reshape(*tokens.shape, -1).float() for h in hooks}
    keep = {h: keep_mask(acts[h], special, thresholds[h]) for h in hooks}
    clean = _Clean(logits, ids, sl, state) if cfg.ce_loss else None
    for t in targets:
        dev = t.sae.W_dec.device
        x = acts[t.hook].to(dev)
        z = t.sae.encode(x)
        x_hat = t.sae.decode(z)
        m, s = keep[t.hook].to(dev), sl.to(dev)
        state.recon[t.name].update(x[m], z[m], x_hat[m])
        state.saelens_recon[t.name].update(x[s], z[s], x_hat[s])
        if cfg.ce_loss:  # SAELens splices every non-special position, outliers included
            same = torch.equal(keep[t.hook], sl)
            clean.variant(
                t.name,
                t.hook,
                replace_hooks(t.hook, x_hat, keep[t.hook]),
                None if same else replace_hooks(t.hook, x_hat, sl),
            )
    if cfg.ce_loss:
        for h in hooks:  # SAELens zero-ablates every position
            clean.variant(
                f"zero:{h}",
                h,
                ablation_hooks(h, "zero", None, keep[h]),
                None if bool(keep[h].all()) else ablation_hooks(h, "zero"),
            )
            clean.variant(f"mean:{h}", h, ablation_hooks(h, "mean", means[h], keep[h]), saelens=False)


class _Clean:
    """One batch's clean CE and log-probs, and the accumulation of each variant under both definitions."""

    def __init__(self, logits: torch.Tensor, ids: torch.Tensor, sl: torch.Tensor, state: _State):
        self.state, self.sl = state, sl
        self.logp = torch.log_softmax(logits.float(), dim=-1)  # every position: SAELens's KL includes the last
        ce = next_token_ce(logits, ids)
        state.loss["clean"].update(ce)
        state.saelens["clean"].update(ce[sl[:, :-1]])

    def variant(self, key: str, hook: str, hooks: list, saelens_hooks: list | None = None, saelens: bool = True):
        """Our definition from ``hooks``; SAELens's from the same logits when ``saelens_hooks`` is None (the same
        change), else from a forward with ``saelens_hooks``; ``saelens=False``: ours only."""
        ce, kl = self._ce_kl(hook, hooks)
        self.state.loss[key].update(ce, kl[:, :-1].contiguous())
        if not saelens:
            return
        if saelens_hooks is not None:
            ce, kl = self._ce_kl(hook, saelens_hooks)
        self.state.saelens[key].update(ce[self.sl[:, :-1]], kl[self.sl])

    def _ce_kl(self, hook: str, hooks: list) -> tuple[torch.Tensor, torch.Tensor]:
        forward = self.state.forward
        logits = forward.logits(hook, hooks)
        return next_token_ce(logits, forward.ids), kl_per_position(self.logp, logits)


def _record(t: SAERef, state: _State, cfg: EvalConfig, data: dict, model: LoadedModel, seconds: float) -> dict:
    metrics = state.recon[t.name].result(cfg.dense_threshold)
    if cfg.ce_loss:
        L = state.loss
        metrics.update(loss_metrics(L["clean"], L[t.name], L[f"zero:{t.hook}"], L[f"mean:{t.hook}"]))
    metrics.update(saelens_recon_metrics(state.saelens_recon[t.name]))
    if cfg.ce_loss:
        S = state.saelens
        metrics.update(saelens_loss_metrics(S["clean"], S[t.name], S[f"zero:{t.hook}"]))
    c = t.sae.cfg
    return {
        "sae": t.name,
        "hook_name": t.hook,
        "architecture": t.sae.architecture,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "k": getattr(c, "k", None),
        "inference_rule": "sae.encode",
        "metrics": metrics,
        "eval_data": data,
        "model": model.describe(),
        "eval_config": cfg.model_dump(mode="json"),
        "seconds": round(seconds, 2),
    }
