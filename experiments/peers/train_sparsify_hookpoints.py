"""EleutherAI sparsify (PyPI: eai-sparsify): TopK SAEs on several hookpoints, one pass over a language model.

Run with the sparsify venv's python (see experiments/peers/README.md):

    /work/peer_envs/sparsify/bin/python experiments/peers/train_sparsify_hookpoints.py \
        --model MODEL_DIR --tokens tokens.npy --hookpoints layers.3 layers.6 layers.9 layers.12 \
        --expansion-factor 4 --k 32 --batch-contexts 8 --out result.json [--threads 2] [--save-dir DIR]

What it measures: the wall-clock time of sparsify's own ``Trainer(cfg, dataset, model).fit()`` training
one SAE per hookpoint for ONE epoch over every context of ``--tokens`` (int64 [n_contexts, ctx_len]).
Per batch of ``--batch-contexts`` contexts, sparsify runs the model forward once with a forward hook on
each hookpoint; each hook trains its SAE on that module's output inside the forward (loss_fn="fvu":
SAE forward, ``fvu + multi_topk_fvu/8`` backward, per hookpoint), then one optimiser step covers all SAEs.
``wall_s`` runs from just before ``Trainer(...)`` (SAE init, a dummy forward to read widths, optimiser
construction) to the end of ``fit()`` (which ends with sparsify's checkpoint save); model loading and
building the ``datasets.Dataset`` are outside it. ``tokens_per_s = n_contexts * ctx_len / wall_s``.

How sparsify is driven (sparsify 1.3.3 ``__main__.py`` / ``trainer.py``), as its CLI does for "fvu":
  - model: ``AutoModel.from_pretrained(dir, dtype=float32)`` (the CLI loads ``AutoModel``, i.e. no LM
    head, for loss_fn="fvu", and float32 on a machine without CUDA bf16); ``--model-class causal-lm``
    loads ``AutoModelForCausalLM`` instead, which also computes the (unused) logits every batch;
  - the model always runs ALL its layers: sparsify does not stop after the deepest hookpoint;
  - dataset: ``datasets.Dataset.from_dict({"input_ids": tokens}).with_format("torch")``, in file order
    (the CLI shuffles with seed 42 before handing it over; the Trainer itself never shuffles);
    ``DataLoader(batch_size=batch_contexts, shuffle=False)``, no drop_last, so a partial last batch
    is trained on too; ``exclude_tokens`` is empty, so every token (BOS/EOS included) is trained on;
  - hookpoints: fnmatch patterns over ``model.base_model.named_modules()``; for Llama ``layers.N`` is the
    output of decoder block N (the residual stream after it). Patterns matching nothing are an error
    here (sparsify would silently drop them);
  - ``TrainConfig`` defaults otherwise: optimizer "signum" = ``ScheduleFreeWrapper(SignSGD, momentum=0.95)``
    with lr ``5e-3 / sqrt(num_latents / 2**14)``, no schedule, auxk_alpha 0, grad_acc/micro_acc 1,
    save_every 1000 steps, log_to_wandb False; b_dec = first batch mean; decoder renormalised and its
    parallel gradient removed each step; no input normalisation (FVU uses the batch's own variance).

CPU patches: none needed with sparsify 1.3.3 / torch 2.13.0+cpu (``patches`` in the JSON lists any).
Triton is absent, so sparsify falls back to its eager ``embedding_bag`` decoder; its bf16 autocast is
for "cuda" and disabled without CUDA; ``fit()`` sets ``torch.set_float32_matmul_precision("high")``,
which does not change CPU float32 matmuls. ``save()`` is timed through a subclass that only wraps it.

After the clock stops, ``fvu_check`` gives each SAE's FVU on the first batch of training contexts with
the schedule-free averaged weights (as sparsify's checkpoints hold): a sanity check, not held-out.
``cpu_s`` (this process) and ``other_cpu_s`` (the rest of the machine, from /proc/stat) over the timed
region show whether other jobs competed for the cores: discard runs where other_cpu_s is not ~0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
import torch
from _common import dist_version, timer

PATCHES: list[str] = []  # descriptions of any monkeypatches applied (none are needed on CPU today)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="local Hugging Face model directory")
    p.add_argument("--tokens", required=True, help="int .npy of shape [n_contexts, context_length]: token ids")
    p.add_argument("--hookpoints", nargs="+", required=True, help="sparsify module names, e.g. layers.3 layers.6")
    p.add_argument("--expansion-factor", type=int, default=4, help="latents = d_in * this (unless --num-latents)")
    p.add_argument("--num-latents", type=int, default=0, help="number of latents (0: use --expansion-factor)")
    p.add_argument("--k", type=int, default=32, help="active latents per token")
    p.add_argument("--batch-contexts", type=int, default=8, help="contexts per step (sparsify's batch_size)")
    p.add_argument("--lr", type=float, default=None, help="default: sparsify's 5e-3 / sqrt(num_latents / 2**14)")
    p.add_argument("--optimizer", default="signum", choices=["signum", "adam", "muon"], help="sparsify optimizer")
    p.add_argument(
        "--model-class",
        default="base",
        choices=["base", "causal-lm"],
        help="AutoModel (as sparsify's CLI for fvu) or AutoModelForCausalLM",
    )
    p.add_argument("--seed", type=int, default=0, help="SAE init seed (TrainConfig.init_seeds)")
    p.add_argument("--max-contexts", type=int, default=None, help="use only the first N contexts")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--save-dir", default=None, help="keep sparsify's checkpoints here (default: a temp dir, deleted)")
    p.add_argument("--out", required=True, help="where to write the result JSON")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def load_tokens(path: str, max_contexts: int | None) -> np.ndarray:
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise SystemExit(f"{path}: expected an integer array [n_contexts, context_length], got {arr.dtype} {arr.shape}")
    if max_contexts is not None:
        arr = arr[:max_contexts]
    return np.ascontiguousarray(arr, dtype=np.int64)


def load_model(model_dir: str, model_class: str):
    from transformers import AutoModel, AutoModelForCausalLM

    cls = AutoModel if model_class == "base" else AutoModelForCausalLM
    model = cls.from_pretrained(model_dir, dtype=torch.float32)
    return model.to("cpu").eval()


def check_hookpoints(model, patterns: list[str]) -> None:
    names = [name for name, _ in model.base_model.named_modules()]
    missing = [pat for pat in patterns if not any(fnmatchcase(n, pat) for n in names)]
    if missing:
        raise SystemExit(f"hookpoints {missing} match no module of model.base_model (e.g. {names[3:6]})")


@torch.no_grad()
def fvu_check(trainer, model, x: torch.Tensor) -> dict[str, float]:
    """Each SAE's FVU on the module outputs for ``x`` (schedule-free averaged weights, as saved)."""
    for opt in trainer.optimizers:
        if hasattr(opt, "eval"):
            opt.eval()
    acts: dict[str, torch.Tensor] = {}
    handles = []
    for name in trainer.cfg.hookpoints:

        def hook(_mod, _inp, out, name=name):
            acts[name] = (out[0] if isinstance(out, tuple) else out).flatten(0, 1).float()

        handles.append(model.base_model.get_submodule(name).register_forward_hook(hook))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    result = {}
    for name, sae in trainer.saes.items():
        y = acts[name.partition("/")[0]]
        top_acts, top_idx, _ = sae.encode(y)
        err = (y - sae.decode(top_acts, top_idx)).double().pow(2).sum()
        result[name] = float(err / (y.double() - y.double().mean(0)).pow(2).sum())
    return result


def busy_cpu_s() -> float | None:
    """Seconds of CPU time the whole machine has spent busy since boot (Linux /proc/stat), else None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def write_json(path: str, result: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, path)


def main() -> None:
    args = parse_args()
    from datasets import Dataset
    from sparsify import SaeConfig, TrainConfig, Trainer

    class TimedTrainer(Trainer):
        """sparsify's Trainer, unchanged except that save() (checkpointing) is timed."""

        save_s = 0.0
        n_saves = 0

        def save(self):
            t0 = time.perf_counter()
            super().save()
            self.save_s += time.perf_counter() - t0
            self.n_saves += 1

    tokens = load_tokens(args.tokens, args.max_contexts)
    n_contexts, ctx_len = tokens.shape
    model = load_model(args.model, args.model_class)
    check_hookpoints(model, args.hookpoints)
    dataset = Dataset.from_dict({"input_ids": tokens}).with_format("torch")

    own_dir = args.save_dir is None
    save_dir = tempfile.mkdtemp(prefix="sparsify_hookpoints_") if own_dir else args.save_dir
    cfg = TrainConfig(
        SaeConfig(expansion_factor=args.expansion_factor, num_latents=args.num_latents, k=args.k),
        batch_size=args.batch_contexts,
        optimizer=args.optimizer,
        lr=args.lr,
        hookpoints=list(args.hookpoints),
        init_seeds=[args.seed],
        log_to_wandb=False,
        save_dir=save_dir,
        run_name="peer",
    )

    busy0, cpu0 = busy_cpu_s(), time.process_time()
    try:
        with timer() as wall:
            trainer = TimedTrainer(cfg, dataset, model)
            with timer() as fit:
                trainer.fit()
        cpu_s, busy1 = time.process_time() - cpu0, busy_cpu_s()
        first = dataset[: args.batch_contexts]["input_ids"]
        fvus = fvu_check(trainer, model, first)
    finally:
        if own_dir:
            shutil.rmtree(save_dir, ignore_errors=True)

    saes = list(trainer.saes.values())
    n_tokens = n_contexts * ctx_len
    result = {
        "library": "eai-sparsify",
        "version": dist_version("eai-sparsify"),
        "torch": torch.__version__,
        "transformers": dist_version("transformers"),
        "hookpoints": list(trainer.cfg.hookpoints),
        "model": str(args.model),
        "model_class": type(model).__name__,
        "n_contexts": n_contexts,
        "context_length": ctx_len,
        "tokens": n_tokens,
        "wall_s": wall["seconds"],
        "fit_s": fit["seconds"],
        "init_s": wall["seconds"] - fit["seconds"],
        "save_s": trainer.save_s,
        "n_saves": trainer.n_saves,
        "tokens_per_s": n_tokens / wall["seconds"],
        "steps": trainer.global_step,
        "batch_contexts": args.batch_contexts,
        "k": args.k,
        "d_in": saes[0].d_in,
        "num_latents": saes[0].num_latents,
        "optimizer": {"signum": "ScheduleFreeWrapper(SignSGD, momentum=0.95) [signum]"}.get(
            args.optimizer, args.optimizer
        ),
        "lr": sorted({g["lr"] for opt in trainer.optimizers for g in opt.param_groups}),
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        # other jobs on the machine skew wall_s: cpu_s / wall_s well below `threads` means this run was
        # starved; other_cpu_s is the CPU time everything else on the machine used meanwhile
        "cpu_s": cpu_s,
        "other_cpu_s": None if busy0 is None or busy1 is None else max(busy1 - busy0 - cpu_s, 0.0),
        "n_cpus": os.cpu_count(),
        "patches": PATCHES,
        "fvu_check": fvus,
    }
    if len(result["lr"]) == 1:
        result["lr"] = result["lr"][0]
    write_json(args.out, result)
    print(
        f"sparsify {result['version']}: {len(result['hookpoints'])} hookpoints x {result['num_latents']} latents, "
        f"{n_tokens} tokens ({n_contexts}x{ctx_len}) in {result['wall_s']:.1f}s "
        f"(fit {result['fit_s']:.1f}s, save {result['save_s']:.2f}s) = {result['tokens_per_s']:.0f} tok/s, "
        f"{result['threads']} threads"
    )


if __name__ == "__main__":
    main()
