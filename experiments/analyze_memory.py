"""Peak memory of `sae-lab analyze` on a wide SAE (default: 65,536 latents), measured on the real command.

    python experiments/analyze_memory.py [--d-sae 65536] [--tokens 65536] [--work runs/experiments/analyze_memory]

Saves a freshly initialised TopK SAE (k=32, seed 0) for the embedded model's layer-15 residual (an untrained
encoder spreads its codes over many latents: many distinct co-active pairs, the hard case for the co-occurrence
table), then runs `sae-lab -v analyze <sae dir> n_tokens=N data.split=train` in a subprocess under
``/usr/bin/time -v``. Reports the maximum resident set size of that process, its wall time, the distinct
co-occurring pairs counted (from the analysis log), the dense matrix those pairs replace (4 d_sae² bytes), and
the database's size and row counts. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import torch

from sae_lab.saedir import SAEDir
from sae_lab.saes import SAEConfig, build_sae


def make_sae(where: Path, d_sae: int, hook: str) -> Path:
    torch.manual_seed(0)
    cfg = SAEConfig(architecture="topk", d_in=576, d_sae=d_sae, k=32, hook_name=hook, name=f"topk_{d_sae}")
    shutil.rmtree(where, ignore_errors=True)
    SAEDir(where).save(build_sae(cfg))
    return where


def run_analyze(sae_dir: Path, tokens: int, extra: list[str]) -> dict:
    sae_lab = Path(sys.executable).with_name("sae-lab")
    cmd = [
        "/usr/bin/time",
        "-v",
        str(sae_lab),
        "-v",
        "analyze",
        str(sae_dir),
        f"n_tokens={tokens}",
        "data.split=train",
        *extra,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"sae-lab analyze failed ({out.returncode}):\n{out.stderr[-4000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", out.stderr).group(1)
    pairs = re.search(r"co-occurrence: (\d+) distinct pairs", out.stderr)
    return {
        "command": " ".join(cmd[2:]),
        "max_rss_gib": round(rss_kb / 2**20, 3),
        "wall": wall,
        "distinct_pairs": int(pairs.group(1)) if pairs else None,
    }


def db_summary(path: Path, d_sae: int) -> dict:
    con = sqlite3.connect(path)
    rows = {
        t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
        for t in ("features", "examples", "cooccurrence", "logits", "neighbours")
    }
    alive = con.execute("SELECT COUNT(*) FROM features WHERE n_active > 0").fetchone()[0]
    con.close()
    return {
        "db_mib": round(path.stat().st_size / 2**20, 1),
        "rows": rows,
        "features_alive": alive,
        "dense_cooccurrence_gib": round(4 * d_sae**2 / 2**30, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-sae", type=int, default=65536)
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--hook", default="blocks.15.hook_resid_post")
    ap.add_argument("--work", type=Path, default=Path("runs/experiments/analyze_memory"))
    ap.add_argument("overrides", nargs="*", help="extra `sae-lab analyze` overrides, e.g. batch_size=16")
    args = ap.parse_args()
    sae_dir = make_sae(args.work / f"topk_{args.d_sae}", args.d_sae, args.hook)
    result = {"d_sae": args.d_sae, "tokens": args.tokens, **run_analyze(sae_dir, args.tokens, args.overrides)}
    result.update(db_summary(sae_dir / "features.sqlite", args.d_sae))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
