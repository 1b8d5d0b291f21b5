"""GPU benchmark: cache activations of the embedded model, then train every architecture for a fixed number of
steps in float32 and bfloat16, and report tokens/s per architecture (next to eai-sparsify's TopK when it is
installed, on the same activations in the same process).

    python experiments/bench_gpu.py [--model embedded|PATH.gguf|HF_DIR] [--hook blocks.7.hook_resid_post]
        [--device auto] [--steps N] [--batch B] [--d-sae D] [--k K] [--cache-tokens T] [--out DIR]

On CUDA the defaults are the production shape (16,384 latents, k = 32, batch 4,096, 200 timed steps); on a CPU
they shrink (512 latents, batch 256, 3 steps) so that CI runs the script end to end (tests/test_bench_gpu.py).
The whole run is meant to take under 5 minutes on one GPU.

What is timed:
  1. caching: ``sae_lab.activations.build_cache`` (the code path of ``sae-lab cache``: forward passes cut after
     the hook, normalisation, outlier mask, float16 shards with checksums) -> cached tokens/s;
  2. per architecture and dtype: ``sae_lab.training.train_step`` (forward, loss, backward, parallel-gradient
     removal, clip, fused Adam, decoder renorm, lr schedule: the trainer's step) on batches drawn from the cached
     rows already on the device; ``--warmup`` untimed steps first; the clock is read after a device synchronise.
     The trainer's bookkeeping around the step (dead-latent counts, logging, checkpoints) is outside, as it is
     for the peers in experiments/bench_train.py;
  3. eai-sparsify's TopK (experiments/peers/train_sparsify.py's recipe: its Trainer's step, SignSGD
     schedule-free, fused/Triton kernels on CUDA) on the same batches, under bf16 autocast for the bf16 row, as its
     Trainer does.
The held-out FVU after these few steps is reported only as a sanity check (not a quality comparison).

The machine used for the numbers in BENCHMARKS.md received at most 64 MiB per call, so it got the embedded
model's first 8 blocks (experiments/gguf_first_blocks.py, 47 MiB; activations identical to the full model's)
and the hook ``blocks.7.hook_resid_post`` (the default here, for that reason).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE / "peers"))

ARCHS = {
    "topk": {"architecture": "topk"},
    "mutual_choice": {"architecture": "mutual_choice"},
    "feature_choice": {"architecture": "feature_choice"},
    "matching_pursuit": {"architecture": "matching_pursuit"},
}
GPU_SIZES = dict(d_sae=16384, k=32, batch=4096, steps=200, warmup=10, cache_tokens=262144, max_seconds=20.0)
CPU_SIZES = dict(d_sae=512, k=8, batch=256, steps=3, warmup=1, cache_tokens=4096, max_seconds=20.0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cache_rows(model, hook: str, n_tokens: int, root: Path, batch_contexts: int) -> tuple[torch.Tensor, dict]:
    """Cache ``n_tokens`` of the embedded corpus at ``hook`` with sae-lab's cache writer; returns the kept,
    normalised rows (float32, CPU) and the timing."""
    from sae_lab.activations.cache_reader import ActivationCache
    from sae_lab.activations.cache_writer import build_cache
    from sae_lab.activations.config import ActivationConfig, CacheConfig
    from sae_lab.data.config import DataConfig

    cfg = CacheConfig(
        output=str(root),
        data=DataConfig(max_tokens=n_tokens),
        activations=ActivationConfig(hooks=[hook], batch_size=batch_contexts, exclude_outliers=10.0),
    )
    sync(model.device)
    t0 = time.perf_counter()
    manifest = build_cache(cfg, model=model, progress=False)
    sync(model.device)
    seconds = time.perf_counter() - t0
    cache = ActivationCache(root)
    scale = float(cache.hook_info(hook)["stats"]["norm_scale"])
    rows = [cache.acts(i, hook)[torch.from_numpy(cache.keep(i, hook).copy())] for i in range(len(cache.shards))]
    tokens = int(manifest["totals"]["tokens"])
    timing = {"cache_tokens": tokens, "cache_seconds": seconds, "cache_tokens_per_s": tokens / seconds}
    return torch.cat(rows) * scale, timing


def batches_of(rows: torch.Tensor, batch: int, seed: int):
    """Endless batches: a seeded permutation of the rows, reshuffled after each pass (on the rows' device)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    while True:
        order = torch.randperm(rows.shape[0], generator=g).to(rows.device)
        for i in range(rows.shape[0] // batch):
            yield rows[order[i * batch : (i + 1) * batch]]


def timed_steps(step, batches, steps: int, warmup: int, max_seconds: float, device) -> dict:
    """Run ``warmup`` untimed steps, then up to ``steps`` timed ones (stopping early past ``max_seconds``)."""
    for _ in range(warmup):
        step(next(batches))
    sync(device)
    t0, done = time.perf_counter(), 0
    while done < steps:
        step(next(batches))
        done += 1
        if done % 10 == 0:
            sync(device)
            if time.perf_counter() - t0 > max_seconds:
                break
    sync(device)
    return {"steps": done, "seconds": time.perf_counter() - t0}


def heldout_fvu(recon, heldout: torch.Tensor, chunk: int = 4096) -> float:
    with torch.no_grad():
        err = sum(float((x - recon(x)).double().pow(2).sum()) for x in heldout.split(chunk))
    return err / float((heldout.double() - heldout.double().mean(0)).pow(2).sum())


def run_ours(arch: str, dtype: str, train: torch.Tensor, heldout: torch.Tensor, a) -> dict:
    from sae_lab.saes import build_sae
    from sae_lab.training import TrainConfig, train_step
    from sae_lab.training.schedule import make_scheduler
    from sae_lab.training.step import make_optimizer

    total = (a.steps + a.warmup) * a.batch
    cfg = TrainConfig(
        batch_size=a.batch, total_tokens=total, seed=0, device=str(train.device), progress=False, dtype=dtype
    )
    torch.manual_seed(0)
    sae = build_sae({**ARCHS[arch], "d_in": int(train.shape[1]), "d_sae": a.d_sae, "k": a.k}).to(train.device)
    opt = make_optimizer(sae, cfg.lr_for(a.d_sae), cfg.betas, cfg.eps)
    sched = make_scheduler(opt, cfg)
    sae.train()
    with torch.no_grad():
        sae.init_b_dec(train[: cfg.b_dec_init_tokens], method=cfg.b_dec_init)

    def step(x):
        train_step(
            sae, opt, sched, x, recon_loss=cfg.recon_loss, grad_clip=cfg.grad_clip, compute_dtype=cfg.compute_dtype()
        )

    if train.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(train.device)
    t = timed_steps(step, batches_of(train, a.batch, 0), a.steps, a.warmup, a.max_seconds, train.device)
    memory = _memory(train.device)
    profile_steps(f"sae-lab {arch} {dtype}", step, batches_of(train, a.batch, 1), a)
    sae.eval()
    if sae.has_thresholds:  # the choice SAEs' inference thresholds, as the trainer sets them after training
        calibrator, batches = sae.threshold_calibrator(a.batch, 8), batches_of(train, a.batch, 2)
        with torch.no_grad():
            for _ in range(8):
                calibrator.add(next(batches))
            calibrator.finish()
    fvu = heldout_fvu(lambda x: sae.decode(sae.encode(x)), heldout)
    return {"library": "sae-lab", "arch": arch, "dtype": dtype, **t, "fvu_sanity": fvu, **memory}


def run_sparsify(dtype: str, train: torch.Tensor, heldout: torch.Tensor, a) -> dict | None:
    try:
        import sparsify  # noqa: F401
        from train_sparsify import sparsify_trainer
    except ImportError as e:
        print(f"[eai-sparsify] not installed ({e}); skipped")
        return None
    torch.manual_seed(0)
    sae, opt, _, step_fn = sparsify_trainer(int(train.shape[1]), a.d_sae, a.k, device=train.device)
    first = [True]
    autocast = dtype == "bfloat16"

    def step(x):
        with torch.autocast(train.device.type, dtype=torch.bfloat16, enabled=autocast):
            step_fn(x, first[0])
        first[0] = False

    if train.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(train.device)
    t = timed_steps(step, batches_of(train, a.batch, 0), a.steps, a.warmup, a.max_seconds, train.device)
    memory = _memory(train.device)
    profile_steps(f"eai-sparsify topk {dtype}", step, batches_of(train, a.batch, 1), a)
    opt.eval()
    fvu = heldout_fvu(lambda x: sae.decode(*sae.encode(x)[:2]), heldout)
    return {
        "library": "eai-sparsify " + sparsify.__version__,
        "arch": "topk",
        "dtype": dtype,
        **t,
        "fvu_sanity": fvu,
        **memory,
    }


def profile_steps(name: str, step, batches, a) -> None:
    """With ``--profile N``: torch.profiler over N more steps, the top operators by device (else CPU) time appended
    to OUT/profiles.txt."""
    if not a.profile:
        return
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(a.profile):
            step(next(batches))
        if cuda:
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=22, max_name_column_width=50)
    a.out.mkdir(parents=True, exist_ok=True)
    with open(a.out / "profiles.txt", "a") as f:
        f.write(f"=== {name}: {a.profile} steps ===\n{table}\n")


def _memory(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    return {"peak_gib": torch.cuda.max_memory_allocated(device) / 2**30}


def environment(device: torch.device) -> dict:
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def markdown(result: dict) -> str:
    a, c = result["args"], result["cache"]
    lines = [
        f"Shape: d_in {result['d_in']}, d_sae {a['d_sae']}, k {a['k']}, batch {a['batch']}, "
        f"{a['steps']} timed steps after {a['warmup']} warm-up; {result['env']}",
        f"Caching ({a['hook']}, model {a['model']}): {c['cache_tokens']:,} tokens in {c['cache_seconds']:.1f} s "
        f"= {c['cache_tokens_per_s']:,.0f} tokens/s",
        "",
        "| library | architecture | dtype | steps | tokens/s | vs sae-lab TopK (same dtype) | peak GiB "
        "| FVU (sanity) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ref = {r["dtype"]: r["tokens_per_s"] for r in result["runs"] if r["library"] == "sae-lab" and r["arch"] == "topk"}
    for r in result["runs"]:
        ratio = r["tokens_per_s"] / ref[r["dtype"]] if r["dtype"] in ref else math.nan
        lines.append(
            f"| {r['library']} | {r['arch']} | {r['dtype']} | {r['steps']} | {r['tokens_per_s']:,.0f} | "
            f"{ratio:.2f} | {r.get('peak_gib', math.nan):.2f} | {r['fvu_sanity']:.3f} |"
        )
    lines.append(f"\nWhole script: {result['wall_seconds']:.0f} s.")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded", help="'embedded', a .gguf file, or a local HF model directory")
    ap.add_argument("--hook", default="blocks.7.hook_resid_post")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--archs", default=",".join(ARCHS))
    for key in GPU_SIZES:
        ap.add_argument(
            "--" + key.replace("_", "-"),
            type=type(GPU_SIZES[key]),
            default=None,
            help=f"default {GPU_SIZES[key]} on CUDA, {CPU_SIZES[key]} on CPU",
        )
    ap.add_argument("--profile", type=int, default=0, help="also profile this many steps of each run (profiles.txt)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_gpu")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    from sae_lab.devices import resolve_device
    from sae_lab.models import load_model

    t_start = time.perf_counter()
    device = resolve_device(a.device)
    for key, value in (GPU_SIZES if device.type == "cuda" else CPU_SIZES).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    (a.out / "profiles.txt").unlink(missing_ok=True)
    model = load_model(a.model, device)
    with tempfile.TemporaryDirectory() as tmp:
        rows, cache = cache_rows(model, a.hook, a.cache_tokens, Path(tmp) / "cache", 64 if device.type == "cuda" else 8)
    del model
    n_held = min(4096, rows.shape[0] // 8)
    heldout, train = rows[:n_held].to(device), rows[n_held:].to(device)
    print(
        f"cached {cache['cache_tokens']:,} tokens ({cache['cache_tokens_per_s']:,.0f}/s); {train.shape[0]:,} "
        f"training rows on {device}",
        flush=True,
    )
    runs = []
    for dtype in a.dtypes.split(","):
        for arch in a.archs.split(","):
            runs.append(run_ours(arch, dtype, train, heldout, a))
            print(
                f"[sae-lab {arch} {dtype}] {runs[-1]['steps'] * a.batch / runs[-1]['seconds']:,.0f} tokens/s",
                flush=True,
            )
        peer = run_sparsify(dtype, train, heldout, a)
        if peer is not None:
            runs.append(peer)
            print(f"[sparsify topk {dtype}] {peer['steps'] * a.batch / peer['seconds']:,.0f} tokens/s", flush=True)
    for r in runs:
        r["tokens_per_s"] = r["steps"] * a.batch / r["seconds"]
    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "d_in": int(train.shape[1]),
        "env": environment(device),
        "cache": cache,
        "runs": runs,
        "wall_seconds": time.perf_counter() - t_start,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_gpu.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (a.out / "bench_gpu.md").write_text(table + "\n")
    print(table)
    return result


if __name__ == "__main__":
    main()
