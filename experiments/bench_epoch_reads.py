"""Reading a cache for several epochs: the windowed reader (re-reads each window every epoch) against the
resident one (a cache within one window is read once), on the same cache, alternated.

    python experiments/bench_epoch_reads.py CACHE_DIR [--batch 1024] [--epochs 3] [--rounds 2]

Prints, per reader and round, the total time spent in ``next()`` over ``epochs`` passes of batches (what the
trainer waits for), its median per batch and the time of the slow batches (window loads). Both readers yield the
same batches (tests/test_cache.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

from sae_lab.activations.cache_reader import ActivationCache


def time_reads(batches, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        next(batches)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    src = ActivationCache(args.cache, verify="none").source()
    n = args.epochs * src.n_tokens // args.batch
    print(
        f"{src.n_tokens:,} tokens, {len(src.cache.shards)} shards, {src.shards_per_window} per window; "
        f"{n} batches of {args.batch}"
    )
    readers = {
        "windowed": lambda: src._window_batches(args.batch, 0, 0, "cpu"),
        "resident (iter_batches)": lambda: src.iter_batches(args.batch, seed=0),
    }
    for r in range(args.rounds):
        for name, make in readers.items():
            ts = time_reads(make(), n)
            slow = [t for t in ts if t > 0.01]
            print(
                f"round {r} {name:24s} total {sum(ts):.3f} s, median {1e3 * statistics.median(ts):.2f} ms/batch, "
                f"{len(slow)} batches > 10 ms: {sum(slow):.3f} s"
            )


if __name__ == "__main__":
    main()
