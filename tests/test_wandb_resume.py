"""wandb on resume (offline mode, the real wandb): the resumed run logs to the same wandb run id, and the steps
wandb already has from before the interruption (also those after the last checkpoint) are not logged again.

The first run dies by an exception after the checkpoint (the process exits; wandb flushes what it got).
After a kill -9, offline wandb loses what its writer had not flushed yet; those steps are not re-sent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _train_helpers import BATCH
from sae_lab.rundir import RunDir
from wandb_files import history

pytest.importorskip("wandb", reason="wandb is part of the dev extra")

TRAINER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    from _train_helpers import BATCH, planted_source, sae_cfg, train_cfg
    from sae_lab.training import train_sweep
    def die(info):
        if info.tokens == {kill_tokens}:
            raise SystemExit(3)
    cfg = train_cfg(total_tokens=16 * BATCH, checkpoint_every_tokens=8 * BATCH, log_every_steps=2,
                    wandb={{"project": "sae-lab-test", "mode": "offline"}})
    train_sweep([sae_cfg("topk", name="a")], planted_source(), cfg, {run!r}, callbacks=[die])
""")


def run(run_dir: Path, kill_tokens: int) -> subprocess.CompletedProcess:
    script = TRAINER.format(tests=str(Path(__file__).parent), kill_tokens=kill_tokens, run=str(run_dir))
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)


def test_a_resumed_run_continues_the_same_wandb_run_without_duplicate_steps(tmp_path):
    killed = run(tmp_path / "r", 12 * BATCH)  # logged at steps 2..12; the checkpoint is at step 8
    assert killed.returncode == 3, killed.stderr[-2000:]
    before = history(tmp_path / "r")
    (run_id,) = before
    assert [row["tokens"] for row in before[run_id]] == [s * BATCH for s in (2, 4, 6, 8, 10, 12)]

    resumed = run(tmp_path / "r", -1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = history(tmp_path / "r")
    assert set(after) == {run_id} == {RunDir(tmp_path / "r").read_status()["wandb_id"]}
    logged = [row["tokens"] for row in after[run_id]]
    assert logged == [s * BATCH for s in range(2, 17, 2)]  # steps 10 and 12 (after the checkpoint) once each
    assert len(list((tmp_path / "r" / "wandb").glob("offline-run-*"))) == 2  # two sessions, one wandb run
    assert [r["tokens"] for r in RunDir(tmp_path / "r").metrics("a")] == logged
    assert after[run_id][-1]["a/fvu"] == RunDir(tmp_path / "r").metrics("a")[-1]["fvu"]
