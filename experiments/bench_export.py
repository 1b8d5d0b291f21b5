"""Time, peak memory and output size of `sae-lab export` in each format on a 16k-feature feature database.

The database is the synthetic one of the query benchmarks (tests/synthetic_db.py: the real schema, every feature with
20 top examples and 8x4 interval samples of 17 tokens, 10 logits each way, 10 neighbours, 10 co-occurring), or any
features.sqlite given with --db. Each format runs in its own process, so its peak RSS (VmHWM) is its own.

    python experiments/bench_export.py --work /tmp/bench_export [--db PATH] [--features 16384]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, it does not carry the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(db: str, fmt: str, out: str) -> None:
    from sae_lab.export import export

    before = peak_rss_mib()  # after the imports
    t0 = time.perf_counter()
    export(db, fmt, out)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mib()
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, "rss_after_imports_mib": before}))


def size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--db", type=Path, help="an existing features.sqlite (default: a synthetic one)")
    p.add_argument("--features", type=int, default=16_384, help="features of the synthetic database")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(*args.child)
    args.work.mkdir(parents=True, exist_ok=True)
    db = args.db
    if db is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from synthetic_db import write_synthetic_db

        db = args.work / "synthetic" / "features.sqlite"
        if not db.exists():
            t0 = time.perf_counter()
            write_synthetic_db(db, n_features=args.features)
            print(
                f"synthetic database: {args.features} features, {db.stat().st_size / 2**20:.0f} MiB, "
                f"{time.perf_counter() - t0:.0f} s to write"
            )
    print(f"database {db} ({db.stat().st_size / 2**20:.0f} MiB)")
    print("| format | seconds | peak RSS (MiB) | RSS after imports (MiB) | output (MiB) |\n|---|---|---|---|---|")
    for fmt in ("neuronpedia", "saedashboard", "parquet"):
        out = args.work / f"out_{fmt}"
        shutil.rmtree(out, ignore_errors=True)
        res = subprocess.run(
            [sys.executable, __file__, "--work", str(args.work), "--child", str(db), fmt, str(out)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"| {fmt} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | {r['rss_after_imports_mib']:.0f} | "
            f"{size_mib(out):.0f} |"
        )


if __name__ == "__main__":
    main()
