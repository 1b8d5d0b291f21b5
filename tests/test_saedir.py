"""sae_lab.saedir and sae_lab.saeref: one module spells the SAE directory's files, one test says what an SAE
directory is, one resolver turns a path into its SAEs; and the file helpers they share (JSON hashes, checksum
files, temporary names)."""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sae_lab import load_sae
from sae_lab.activations.cache_writer import identity_digest
from sae_lab.cli import main as cli
from sae_lab.configbase import ConfigError
from sae_lab.fileio import (
    checksum_path,
    json_sha256,
    read_checksum,
    remove_temps,
    temp_name,
    temp_target,
    write_checksum,
)
from sae_lab.ownership import MARKER, OwnershipError
from sae_lab.rundir import RunDir, RunDirError
from sae_lab.saedir import ANALYZE_CHECKPOINT, CFG, EVAL, FEATURE_DB, INFO, STATE, WEIGHTS, SAEDir
from sae_lab.saeref import TargetError, resolve_one, resolve_saes, target_kind
from sae_lab.saes import SAEConfig, build_sae
from sae_lab.training.config import config_hash
from sae_lab.workspace import Workspace, WorkspaceError

ROOT = Path(__file__).resolve().parents[1]


def tiny_sae(name: str = "s", seed: int = 0):
    torch.manual_seed(seed)
    return build_sae(
        SAEConfig(architecture="topk", d_in=16, d_sae=32, k=4, hook_name="blocks.0.hook_resid_post", name=name)
    )


@pytest.fixture
def dirs(tmp_path):
    """An SAE directory of ours, the same as SAELens writes it (cfg.json + weights), a directory holding only
    cfg.json, and a run directory with SAEs 'b' and 'a' and a stray folder under saes/."""
    ours = tmp_path / "ours"
    SAEDir(ours).save(tiny_sae())
    saelens, cfg_only = tmp_path / "saelens", tmp_path / "cfg_only"
    for d, files in ((saelens, (CFG, WEIGHTS)), (cfg_only, (CFG,))):
        d.mkdir()
        for f in files:
            shutil.copy(ours / f, d / f)
    run = RunDir(tmp_path / "run")
    for i, name in enumerate("ba"):
        SAEDir(run.sae_dir(name)).save(tiny_sae(name, seed=i))
    run.sae_dir("stray").mkdir()
    run.write_config({"saes": []})
    return {"ours": ours, "saelens": saelens, "cfg_only": cfg_only, "run": run.path, "missing": tmp_path / "nope"}


def _exact_strings(path: Path) -> set[str]:
    return {
        n.value
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def test_one_module_spells_the_file_names_of_an_sae_directory():
    names = (CFG, WEIGHTS, STATE, INFO, FEATURE_DB, ANALYZE_CHECKPOINT)
    files = {p: _exact_strings(p) for p in (ROOT / "sae_lab").rglob("*.py")}
    where = {
        n: sorted(str(p.relative_to(ROOT)) for p, strings in files.items() if n in strings)
        for n in (*names, checksum_path(FEATURE_DB).name, ".sha256")
    }
    assert where == {
        **{n: ["sae_lab/saedir.py"] for n in names},
        "features.sqlite.sha256": [],
        ".sha256": ["sae_lab/fileio.py"],
    }  # checksum files are named by fileio.checksum_path only


def test_one_test_decides_what_an_sae_directory_is(dirs, capsys):
    assert {k: target_kind(p) for k, p in dirs.items()} == {
        "ours": "sae_dir",
        "saelens": "sae_dir",
        "cfg_only": None,
        "run": "run",
        "missing": None,
    }
    # every consumer agrees: the workspace, the CLI and the loader refuse a directory holding only cfg.json
    with pytest.raises(WorkspaceError, match="neither a run directory"):
        Workspace([dirs["cfg_only"]])
    assert cli(["eval", str(dirs["cfg_only"]), "--model", "embedded"]) != 0
    assert "neither a run directory" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="holds no sae_weights.safetensors"):
        load_sae(dirs["cfg_only"])
    assert torch.equal(load_sae(dirs["saelens"]).W_dec, load_sae(dirs["ours"]).W_dec)


def test_the_resolver_lists_the_saes_a_path_names(dirs):
    refs = resolve_saes(dirs["run"], "label")
    assert [(r.name, r.sae_dir, r.run_dir, r.key) for r in refs] == [
        ("a", dirs["run"] / "saes" / "a", dirs["run"], "label/a"),
        ("b", dirs["run"] / "saes" / "b", dirs["run"], "label/b"),
    ]  # sorted; the stray folder is no SAE
    assert refs[1].hook == "blocks.0.hook_resid_post" and torch.equal(refs[1].sae.W_dec, tiny_sae("b", 0).W_dec)
    [one] = resolve_saes(dirs["ours"])
    assert (one.name, one.run, one.run_dir, one.eval_record()) == ("ours", "ours", None, None)
    with pytest.raises(TargetError, match="does not exist; pass a run directory"):
        resolve_saes(dirs["missing"])
    with pytest.raises(RunDirError, match=r"holds SAEs \['a', 'b'\]; pass .*saes/<name>"):
        resolve_one(dirs["run"])
    assert resolve_one(dirs["ours"]).sae_dir == dirs["ours"]
    ws = Workspace([dirs["run"], dirs["ours"]])
    assert [e.key for e in ws.entries()] == ["run/a", "run/b", "ours/ours"]


def test_replace_writes_a_whole_directory_and_never_deletes_foreign_files(tmp_path):
    d = SAEDir(tmp_path / "s")
    d.replace(tiny_sae())
    d.write_eval({"metrics": {"fvu": 0.5}})
    assert d.read_eval() == {"metrics": {"fvu": 0.5}}
    assert sorted(p.name for p in d.path.iterdir()) == sorted([MARKER, CFG, WEIGHTS, STATE, INFO, EVAL])
    d.replace(tiny_sae(seed=1))
    assert d.read_eval() is None and torch.equal(d.load().W_dec, tiny_sae(seed=1).W_dec)
    (d.path / "notes.txt").write_text("mine")
    with pytest.raises(OwnershipError, match="notes.txt"):
        d.replace(tiny_sae())
    assert (d.path / "notes.txt").read_text() == "mine"


def test_json_hashes_keep_the_values_that_existing_runs_and_caches_record():
    value = {"b": [1, 2.5, None], "a": {"z": "é", "y": True}}
    assert config_hash(value) == "6077fe4a88aba112"  # run.json's config_hash: resume compares it
    assert (
        identity_digest(value)
        == json_sha256(value)
        == ("e160182953d61573fd075b91a1b80e5c3c9f742c6e2a863bb52b40dc36483a8a")
    )  # a cache's identity_sha256
    assert json_sha256({"a": 1, "b": 2}) == json_sha256({"b": 2, "a": 1}) != json_sha256({"a": 1, "b": 3})


def test_checksum_files_and_temporary_names(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert read_checksum(f) is None
    write_checksum(f)
    assert read_checksum(f) == (hashlib.sha256(b"abc").hexdigest(), None) and checksum_path(f).name == "x.bin.sha256"
    write_checksum(f, "0" * 64, '{"size": 3}')
    assert read_checksum(f) == ("0" * 64, '{"size": 3}')
    assert temp_target(temp_name(f).name) == "x.bin" and temp_target("x.bin.tmp-1") == "x.bin"
    assert temp_target("x.bin") is None and temp_target(".hidden") is None
    for name in (temp_name(f).name, "x.bin.tmp7", temp_name(tmp_path / "y").name):
        (tmp_path / name).write_text("")
    remove_temps(tmp_path, "x.bin")
    left = sorted(["x.bin", "x.bin.sha256", temp_name(tmp_path / "y").name])
    assert sorted(p.name for p in tmp_path.iterdir()) == left


def test_reading_layouts_stays_light():
    """The CLI and `sae-lab dashboard` inspect directories before torch is needed: rundir, saedir, saeref and the
    workspace import neither torch nor the SAE layer."""
    code = (
        "import sys, sae_lab.rundir, sae_lab.saedir, sae_lab.saeref, sae_lab.workspace; "
        "print(sorted(m for m in ('torch', 'sae_lab.saes') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip() == "[]"
