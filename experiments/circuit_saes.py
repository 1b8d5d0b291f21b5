"""Train TopK SAEs at several hooks of the embedded model with the project's own pipeline (for the circuit
experiments): one activation cache holding every hook, then one run directory per hook.

    from circuit_saes import train_saes
    saes = train_saes(model, ["blocks.6.hook_resid_post", ...], out_dir, tokens=65536)
"""

from __future__ import annotations

from pathlib import Path

from sae_lab import load_sae
from sae_lab.activations.hooks import hook_slug
from sae_lab.configbase import load_config
from sae_lab.hooknames import parse_hook
from sae_lab.pipeline import RunConfig, build_cache_for, train_run
from sae_lab.rundir import RunDir


def sae_name(hook: str) -> str:
    """A short name per hook: blocks.6.hook_resid_post -> L6_resid_post, blocks.15.attn.hook_z -> L15_attn_z."""
    h = parse_hook(hook)
    return f"L{h.layer}_" + "_".join(p for p in (h.module, h.kind.removeprefix("hook_")) if p)


def run_config(
    hooks: list[str],
    hook: str,
    out_dir: Path,
    tokens: int,
    expansion: int,
    k: int,
    exclude_outliers: float | None = 10.0,
) -> RunConfig:
    """The run config for one SAE at ``hook``, reading a cache shared by all ``hooks``."""
    return load_config(
        RunConfig,
        None,
        [
            f"run_dir={out_dir / 'runs' / hook_slug(hook)}",
            "model.name=embedded",
            "data.source=embedded",
            "data.split=train",
            "data.context_length=128",
            f"data.max_tokens={tokens}",
            f"activations.hooks=[{','.join(hooks)}]",
            f"activations.exclude_outliers={'null' if exclude_outliers is None else exclude_outliers}",
            "activations.batch_size=16",
            f"cache.path={out_dir / 'cache'}",
            "cache.shard_contexts=32",
            f"hook={hook}",
            "train.batch_size=512",
            f"train.total_tokens={tokens}",
            "train.lr=0.0008",
            "train.warmup_fraction=0.02",
            "train.decay_start=0.6",
            f"train.checkpoint_every_tokens={tokens}",
            "train.log_every_steps=50",
            f"train.b_dec_init_tokens={min(8192, tokens)}",
            f"saes=[{{architecture: topk, name: {sae_name(hook)}, expansion_factor: {expansion}, k: {k}, "
            f"dead_tokens: {max(tokens // 4, 2048)}}}]",
            "eval.n_tokens=4096",
            "eval.batch_size=8",
            "analyze.n_tokens=8192",
            "analyze.batch_size=8",
            "analyze.data={source: embedded, split: train, context_length: 128}",
        ],
    )


def train_saes(
    model,
    hooks: list[str],
    out_dir: Path,
    tokens: int,
    expansion: int = 4,
    k: int = 32,
    exclude_outliers: float | None = 10.0,
) -> dict:
    """One TopK SAE per hook, trained on ``tokens`` tokens of the embedded corpus; {hook: (sae, run_dir)}."""
    out_dir = Path(out_dir)
    cfgs = {h: run_config(hooks, h, out_dir, tokens, expansion, k, exclude_outliers) for h in hooks}
    build_cache_for(next(iter(cfgs.values())), model)
    out = {}
    for h, cfg in cfgs.items():
        train_run(cfg, model=model)
        run_dir = RunDir(cfg.run_dir)
        out[h] = (load_sae(run_dir.sae_dir(sae_name(h))).eval(), run_dir.path)
    return out


def main(run, name: str) -> None:
    """The command line of a circuit experiment: ``--out`` (results), ``--work`` (caches, runs), ``--reduced``."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(f"experiments/results/{name}"))
    ap.add_argument("--reduced", action="store_true", help="a small version (CI)")
    ap.add_argument("--work", type=Path, default=Path(f"runs/experiments/{name}"), help="caches and SAE runs")
    a = ap.parse_args()
    run(a.out, a.reduced, work=a.work)
    print((a.out / "results.md").read_text())
