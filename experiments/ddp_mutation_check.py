"""How far 2-rank training lands from one process when one data-parallel reduction is broken on purpose: the
evidence that tests/test_ddp_training.py's tolerance (atol 2e-4) separates float summation order from a bug.

    python experiments/ddp_mutation_check.py [--workdir /tmp/ddp_mutations]

Builds the test's tiny-model cache (4,096 tokens of the tiny random Llama, tests/tiny.py) and config (TopK,
Mutual Choice, Feature Choice with Zipf capacities, MP with AuxK; 24 steps of 64 tokens), trains it in one
process, then under `torchrun --nproc_per_node 2` correctly and with each mutation, and prints each SAE's largest
absolute weight/threshold difference from the one-process run. Mutations (one at a time):
  fvu_local_var   FVU/AuxK denominators from the rank's own rows (not the global batch variance)
  no_fired_sum    dead-latent counts / density EMA from the rank's own firing counts
  mc_local_topk   Mutual Choice keeps each rank's own top k·B/N (no global threshold)
  fc_local        Feature Choice keeps each latent's top m_i/N per rank (no global per-latent threshold)
  demand_local    Feature Choice ranks latents by the rank's own demand (capacities differ between ranks)
  grad_mean       gradients averaged over ranks instead of summed (Adam is nearly scale-invariant: smallest)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

MUTATIONS = ["fvu_local_var", "no_fired_sum", "mc_local_topk", "fc_local", "demand_local", "grad_mean"]


def mutate(name: str) -> None:
    """Apply one mutation in this (torchrun worker) process."""
    import sae_lab.distributed as D

    def local_ssd(x):
        return (x - x.mean(0, keepdim=True)).pow(2).sum().clamp_min(1e-12) / D.shards()

    if name == "fvu_local_var":
        import sae_lab.saes.aux as A
        import sae_lab.saes.matching_pursuit as M
        import sae_lab.training.step as S

        S.sum_sq_dev = A.sum_sq_dev = M.sum_sq_dev = local_ssd
    elif name == "no_fired_sum":
        import sae_lab.saes.base as B

        B.all_sum = lambda t: t
    elif name == "mc_local_topk":
        import sae_lab.saes.mutual_choice as MC

        MC._sharded_threshold = lambda flat, n, h: MC._local_threshold(flat, n // D.shards(), h)
    elif name == "fc_local":
        import sae_lab.saes.feature_choice as FC

        def local_keep(v, m):
            m2 = (m // D.shards()).clamp(1, v.shape[1])
            kth = v.gather(1, (m2 - 1).unsqueeze(1)).squeeze(1)
            return kth, (torch.arange(v.shape[1]) < m2.unsqueeze(1)) & (v > 0)

        FC._sharded_keep = local_keep
    elif name == "demand_local":
        import sae_lab.saes.feature_choice as FC

        FC.all_sum = lambda t: t * D.shards()
    elif name == "grad_mean":
        import sae_lab.training.ddp as T

        orig = T.all_reduce_grads

        def mean(sae):
            orig(sae)
            for p in sae.parameters():
                p.grad /= D.shards()

        T.all_reduce_grads = mean


def setup(work: Path) -> Path:
    """The tiny-model cache and run config of tests/test_ddp_training.py, in ``work``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_ddp_training import write_run_config
    from tiny import tiny_llama

    return write_run_config(work, tiny_llama())


def max_diffs(a: Path, b: Path) -> dict[str, float]:
    from safetensors.torch import load_file

    out = {}
    for sae in sorted(p.name for p in (a / "saes").iterdir()):
        x = load_file(a / "saes" / sae / "sae_weights.safetensors")
        y = load_file(b / "saes" / sae / "sae_weights.safetensors")
        out[sae] = max(float((x[k] - y[k]).abs().max()) for k in x)
    return out


def main() -> None:
    if "MUTATION" in os.environ:  # a torchrun worker
        from sae_lab.configbase import load_config
        from sae_lab.pipeline import RunConfig, train_run

        if os.environ["MUTATION"] != "none":
            mutate(os.environ["MUTATION"])
        train_run(load_config(RunConfig, sys.argv[1], sys.argv[2:]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/ddp_mutations")
    work = Path(ap.parse_args().workdir)
    work.mkdir(parents=True, exist_ok=True)
    cfg = setup(work)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sae_lab",
            "train",
            str(cfg),
            f"run_dir={work / 'one'}",
            "--resume",
            "never",
            "--overwrite",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    print(f"{'2 ranks, broken':>16}  " + "  ".join(f"{s:>8}" for s in max_diffs(work / "one", work / "one")))
    for mut in ["none", *MUTATIONS]:
        run = work / f"two_{mut}"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node=2",
                "--standalone",
                __file__,
                str(cfg),
                f"run_dir={run}",
            ],
            check=True,
            env={**env, "MUTATION": mut},
            capture_output=True,
        )
        d = max_diffs(work / "one", run)
        print(f"{mut:>16}  " + "  ".join(f"{v:8.1e}" for v in d.values()))
        subprocess.run(["rm", "-rf", str(run)], check=True)


if __name__ == "__main__":
    main()
