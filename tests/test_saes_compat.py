"""SAE directories written by earlier sae-lab code (tests/fixtures/saes/, see write_sae_fixtures.py) still load,
compute the same codes and reconstructions, and save back to the same SAELens cfg.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sae_lab
from sae_lab.saedir import SAEDir

FIXTURES = Path(__file__).parent / "fixtures" / "saes"
NAMES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def expected():
    return load_file(str(FIXTURES / "expected.safetensors"))


def test_every_architecture_has_a_fixture():
    from sae_lab.saes import registered_names

    saved = {json.loads((FIXTURES / n / "sae_lab.json").read_text())["architecture"] for n in NAMES}
    assert saved == {"topk", "mutual_choice", "feature_choice", "matching_pursuit", "standard"}
    assert saved <= set(registered_names())


@pytest.mark.parametrize("name", NAMES)
def test_old_directories_load_to_the_same_outputs(name, expected):
    sae = sae_lab.load_sae(FIXTURES / name).eval()
    old = json.loads((FIXTURES / name / "sae_lab.json").read_text())
    assert sae.architecture == old["architecture"] and sae.cfg.d_in == 8 and sae.cfg.d_sae == 16
    with torch.no_grad():
        z = sae.encode(expected["x"])
        x_hat = sae.decode(z)
    assert (z != 0).any(dim=-1).float().mean() > 0.8  # tokens are coded: the comparison below is not vacuous
    torch.testing.assert_close(z, expected[f"{name}/z"], rtol=0, atol=1e-6)
    torch.testing.assert_close(x_hat, expected[f"{name}/x_hat"], rtol=0, atol=1e-5)


ADDED_SINCE_FIXTURES = {"max_density", "selection", "grad_beta", "dead_floor"}  # FC cap, MC floor (18), g-SAE (20)


@pytest.mark.parametrize("name", NAMES)
def test_saving_again_writes_compatible_files(name, tmp_path):
    sae = sae_lab.load_sae(FIXTURES / name)
    SAEDir(tmp_path / name).save(sae, metadata={"model_name": "fixture"})
    old_cfg = json.loads((FIXTURES / name / "cfg.json").read_text())
    assert json.loads((tmp_path / name / "cfg.json").read_text()) == old_cfg
    old, new = (json.loads((d / name / "sae_lab.json").read_text()) for d in (FIXTURES, tmp_path))
    assert new["architecture"] == old["architecture"] and new["saelens_architecture"] == old["saelens_architecture"]
    added = set(new["config"]) - set(old["config"])
    assert added <= ADDED_SINCE_FIXTURES, added  # only options added later (an older sae-lab refuses those)
    for key, value in new["config"].items():  # otherwise the same field names and values
        if key not in added:
            assert old["config"][key] == value, key
    for f in ("sae_weights.safetensors", "sae_lab_state.safetensors"):
        a, b = load_file(str(FIXTURES / name / f)), load_file(str(tmp_path / name / f))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
