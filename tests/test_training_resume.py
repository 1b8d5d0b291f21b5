"""Exact resume after a simulated kill, graceful stop/resume, and the checkpoint format."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _train_helpers import BATCH, architectures, planted_source, sae_cfg, train_cfg
from sae_lab.fileio import is_temp_name
from sae_lab.rundir import RunDir
from sae_lab.training import train_sweep
from sae_lab.training.checkpoint import list_checkpoints


class SimulatedKill(Exception):
    pass


def kill_at(tokens: int):
    def callback(info):
        if info.tokens == tokens:
            raise SimulatedKill

    return callback


def comparable_metrics(run_dir) -> list[dict]:
    """metrics.jsonl without the wall-clock field."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in RunDir(run_dir).metrics()]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        sa, sb = a[name].state_dict(), b[name].state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.allclose(sa[key].float(), sb[key].float(), atol=1e-6, rtol=1e-5), f"{name}.{key} differs"


@pytest.mark.parametrize("arch", architectures())
def test_resume_after_kill_is_exact(tmp_path, arch):
    cfgs = [sae_cfg(arch, name="a"), sae_cfg(arch, name="b", k=2) if arch != "standard" else sae_cfg(arch, name="b")]
    cfg = train_cfg()
    straight = train_sweep(cfgs, planted_source(), cfg, tmp_path / "A")

    with pytest.raises(SimulatedKill):  # killed at step 12; the last checkpoint is at step 10
        train_sweep(cfgs, planted_source(), cfg, tmp_path / "B", callbacks=[kill_at(12 * BATCH)])
    assert [p.name for p in list_checkpoints(tmp_path / "B" / "checkpoints")][0] == "ckpt_00000000000640.pt"
    assert max(r["tokens"] for r in RunDir(tmp_path / "B").metrics()) == 12 * BATCH
    resumed = train_sweep(cfgs, planted_source(), cfg, tmp_path / "B", resume="must")

    assert straight.tokens_seen == resumed.tokens_seen == 20 * BATCH
    assert straight.steps == resumed.steps == 20
    assert_same_state(straight.saes, resumed.saes)
    # the metrics log of the resumed run is the uninterrupted one: no duplicated or missing lines
    assert comparable_metrics(tmp_path / "A") == comparable_metrics(tmp_path / "B")
    assert json.loads((tmp_path / "B" / "run.json").read_text())["tokens_seen"] == 20 * BATCH


TRAINER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    from _train_helpers import planted_source, sae_cfg, train_cfg
    from sae_lab.training import train_sweep
    kill_tokens, kill_in_checkpoint = {kill_tokens}, {kill_in_checkpoint}
    if kill_in_checkpoint:  # die with the checkpoint's temp file written but not yet renamed into place
        real_replace = os.replace
        def dying_replace(src, dst):
            if str(dst).endswith("ckpt_%014d.pt" % kill_tokens):
                os.kill(os.getpid(), 9)
            return real_replace(src, dst)
        os.replace = dying_replace
    def die(info):
        if info.tokens == kill_tokens and not kill_in_checkpoint:
            os.kill(os.getpid(), 9)
    cfgs = [sae_cfg("topk", name="a"), sae_cfg("matching_pursuit", name="b")]
    train_sweep(cfgs, planted_source(), train_cfg(), {run!r}, callbacks=[die])
""")


@pytest.mark.parametrize("kill_tokens, in_checkpoint", [(12 * BATCH, False), (10 * BATCH, True)])
def test_kill_9_of_a_training_process_then_resume_is_exact(tmp_path, kill_tokens, in_checkpoint):
    """A real SIGKILL (between checkpoints, or inside a checkpoint write); rerunning gives the uninterrupted run."""

    def run(where, kill):
        script = TRAINER.format(
            tests=str(Path(__file__).parent), kill_tokens=kill, kill_in_checkpoint=in_checkpoint, run=str(where)
        )
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)

    assert run(tmp_path / "A", -1).returncode == 0
    killed = run(tmp_path / "B", kill_tokens)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "B" / "saes").exists()
    resumed = run(tmp_path / "B", -1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for name in ("a", "b"):
        straight, again = (load_file(str(tmp_path / r / "saes" / name / "sae_weights.safetensors")) for r in "AB")
        assert straight.keys() == again.keys()
        assert all(torch.allclose(straight[k], again[k], atol=1e-6, rtol=1e-5) for k in straight)
    assert comparable_metrics(tmp_path / "A") == comparable_metrics(tmp_path / "B")
    assert not [p for p in (tmp_path / "B" / "checkpoints").iterdir() if is_temp_name(p.name)]


def test_stop_after_tokens_then_resume_is_exact(tmp_path):
    cfgs = [sae_cfg("topk")]
    cfg = train_cfg(checkpoint_every_tokens=None)  # only the stop and the end write checkpoints
    straight = train_sweep(cfgs, planted_source(), cfg, tmp_path / "A")
    paused = train_sweep(cfgs, planted_source(), cfg, tmp_path / "B", stop_after_tokens=7 * BATCH)
    assert paused.status == "stopped" and paused.tokens_seen == 7 * BATCH
    assert json.loads((tmp_path / "B" / "run.json").read_text())["status"] == "stopped"
    assert not (tmp_path / "B" / "saes").exists()
    resumed = train_sweep(cfgs, planted_source(), cfg, tmp_path / "B")
    assert resumed.status == "done" and resumed.tokens_seen == 20 * BATCH
    assert_same_state(straight.saes, resumed.saes)
    assert comparable_metrics(tmp_path / "A") == comparable_metrics(tmp_path / "B")


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    cfgs = [sae_cfg("topk")]
    first = train_sweep(cfgs, planted_source(), train_cfg(), tmp_path / "run")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text()
    again = train_sweep(cfgs, planted_source(), train_cfg(), tmp_path / "run")
    assert again.steps == first.steps == 20
    assert_same_state(first.saes, again.saes)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == lines


def test_checkpoint_loads_with_weights_only_and_holds_everything(tmp_path):
    cfg = train_cfg()
    train_sweep([sae_cfg("topk")], planted_source(), cfg, tmp_path / "run")
    ckpts = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in ckpts] == ["ckpt_00000000001280.pt", "ckpt_00000000000960.pt"]  # latest + previous
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))
    state = torch.load(ckpts[0], weights_only=True)
    assert state["tokens_seen"] == 20 * BATCH and state["batches_consumed"] == 20 and state["step"] == 20
    assert isinstance(state["config_hash"], str) and len(state["config_hash"]) == 16
    assert set(state["rng"]) >= {"torch", "python", "numpy"}
    sae_state = state["saes"]["topk_k4"]
    assert {"W_enc", "W_dec", "b_enc", "b_dec", "tokens_since_fired"} <= set(sae_state["model"])
    assert sae_state["optimizer"]["state"], "Adam moments are saved"
    assert sae_state["scheduler"]["last_epoch"] == 20


def test_rng_states_round_trip():
    import random

    import numpy as np

    from sae_lab.training.checkpoint import capture_rng, restore_rng

    state = capture_rng()
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.rand(5), random.random(), np.random.rand()
    restore_rng(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]
