"""`sae-lab train` for the data-parallel tests, run under torchrun:

    torchrun --nproc_per_node 2 tests/ddp_worker.py CONFIG.yaml [key=value ...] [--kill-rank R --kill-step S]

Trains exactly as `sae-lab train CONFIG.yaml` does (pipeline.train_run), plus two test instruments:
- ranks other than 0 may not write under the run directory: an audit hook raises PermissionError on any open
  for writing, rename, removal or mkdir there (a real check that only rank 0 writes);
- with --kill-rank/--kill-step, rank R sends itself SIGKILL (kill -9) after step S, once: a marker file next to
  the run directory arms it only for the first launch, so rerunning the identical command resumes.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from sae_lab.configbase import load_config
from sae_lab.distributed import world
from sae_lab.pipeline import RunConfig, train_run

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def forbid_writes_under(root: Path) -> None:
    root = str(root.resolve())

    def inside(path) -> bool:
        try:
            p = os.path.abspath(os.fsdecode(path))
            return p == root or p.startswith(root + os.sep)
        except TypeError:  # a file descriptor
            return False

    def hook(event: str, args: tuple) -> None:
        if event == "open" and len(args) >= 3 and isinstance(args[2], int) and args[2] & WRITE_FLAGS:
            bad = inside(args[0])
        elif event == "open" and len(args) >= 2 and isinstance(args[1], str) and set(args[1]) & set("wax+"):
            bad = inside(args[0])
        elif event in ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate"):
            bad = inside(args[0])
        else:
            return
        if bad:
            raise PermissionError(f"rank {world()[0]} tried to write under the run directory: {event} {args[:2]}")

    sys.addaudithook(hook)


def killer(rank: int, step: int, marker: Path):
    def cb(info) -> None:
        if world()[0] == rank and info.step == step and not marker.exists():
            marker.write_text("killed once")
            os.kill(os.getpid(), signal.SIGKILL)

    return cb


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--kill-rank", type=int)
    ap.add_argument("--kill-step", type=int)
    args = ap.parse_args()
    cfg = load_config(RunConfig, args.config, args.overrides)
    run_dir = Path(cfg.run_dir)
    if world()[0] != 0:
        forbid_writes_under(run_dir)
    callbacks = []
    if args.kill_rank is not None:
        callbacks.append(killer(args.kill_rank, args.kill_step, run_dir.parent / f"{run_dir.name}.killed"))
    train_run(cfg, callbacks=callbacks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
