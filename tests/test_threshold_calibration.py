"""Choice SAEs' inference thresholds calibrated at the end of training (sae_lab/saes/calibration.py)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
import yaml

from _train_helpers import planted_source, sae_cfg, train_cfg
from sae_lab.activations.cache_reader import ActivationCache
from sae_lab.saes import build_sae
from sae_lab.training import train_sweep


def _sample(n_batches=3, b=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 16, generator=g) + 0.3 for _ in range(n_batches)]


def test_calibrated_thresholds_keep_exactly_the_training_budget_on_the_sample():
    """Against a dense reference: MC keeps the k·N largest entries of the whole sample, FC latent i its
    n·m_i largest; the inference rule then fires exactly that often on the calibration sample."""
    for arch, kw in (("mutual_choice", {}), ("feature_choice", {"capacity_rule": "zipf", "zipf_alpha": 1.0})):
        torch.manual_seed(0)
        sae = build_sae(dict(architecture=arch, d_in=16, d_sae=64, k=4, **kw))
        batches = _sample()
        sae.training_forward(batches[0])  # sets the EMA state (and FC's demand ranking)
        ema = sae.threshold.clone()
        cal = sae.threshold_calibrator(64, len(batches))
        for x in batches:
            cal.add(x)
        record = cal.finish()
        x = torch.cat(batches)
        pre = sae.pre_acts(x).detach().relu()
        fired = sae.encode(x) > 0
        if arch == "mutual_choice":
            top = pre.reshape(-1).topk(4 * len(x)).values
            assert int(fired.sum()) == 4 * len(x) and float(top.min()) > float(sae.threshold)
        else:
            q = sae.capacities(64) * len(batches)
            assert torch.equal(fired.sum(0), torch.minimum(q, (pre > 0).sum(0)))
            full = [i for i in range(64) if int((pre[:, i] > 0).sum()) >= int(q[i])]
            assert len(full) > 32 and all(
                float(pre[:, i].topk(int(q[i])).values.min()) > float(sae.threshold[i]) for i in full
            )
        assert record["l0_calibrated"] == pytest.approx(float(fired.sum()) / len(x)) and record["tokens"] == len(x)
        assert record["l0_ema_threshold"] == pytest.approx(float((pre > ema).sum()) / len(x))


def test_training_calibrates_once_records_it_and_resumes_identically(tmp_path):
    """The sweep calibrates after its last step (before the final checkpoint): run.json records the sample's L0
    under the EMA and the calibrated thresholds; a killed-and-resumed run ends with the same thresholds."""
    cfgs = [sae_cfg("mutual_choice", name="mc"), sae_cfg("feature_choice", name="fc")]
    full = train_sweep(cfgs, planted_source(), train_cfg(calibrate_tokens=256), tmp_path / "a")
    status = json.loads((tmp_path / "a" / "run.json").read_text())
    for name in ("mc", "fc"):
        cal = status["results"][name]["threshold_calibration"]
        assert cal["tokens"] == 256 and 3.0 <= cal["l0_calibrated"] <= 4.0 and cal["l0_ema_threshold"] > 0
    train_sweep(cfgs, planted_source(), train_cfg(calibrate_tokens=256), tmp_path / "b", stop_after_tokens=640)
    resumed = train_sweep(cfgs, planted_source(), train_cfg(calibrate_tokens=256), tmp_path / "b")
    for name in ("mc", "fc"):
        assert torch.equal(full.saes[name].threshold, resumed.saes[name].threshold)
    uncalibrated = train_sweep(cfgs, planted_source(), train_cfg(calibrate_tokens=0), tmp_path / "c")
    assert not torch.equal(full.saes["mc"].threshold, uncalibrated.saes["mc"].threshold)
    assert "threshold_calibration" not in json.loads((tmp_path / "c" / "run.json").read_text())["results"]["mc"]


def test_a_cache_holds_out_rows_spread_over_every_shard_and_disjoint_from_training(tiny_cache):
    """split_holdout gives two disjoint parts that cover the cache; the held-out rows are each shard's last ones
    (whole contexts from all of the text), in proportion to its rows, and the held-out part yields exactly them."""
    src = ActivationCache(tiny_cache).source()
    head, held = src.split_holdout(300)
    assert (head.n_tokens, held.n_tokens) == (src.n_tokens - 300, 300)
    assert len(src.n_keep) > 4 and (abs(held.n_keep - 300 * src.n_keep / src.n_tokens) <= 1).all()
    assert all(
        np.array_equal(t, full[len(full) - len(t) :]) for full, t in zip(src._keep_positions, held._keep_positions)
    )
    for full, h, t in zip(src._keep_positions, head._keep_positions, held._keep_positions):
        assert set(h.tolist()).isdisjoint(t.tolist()) and sorted([*h.tolist(), *t.tolist()]) == full.tolist()
    yielded = torch.cat(list(itertools.islice(held.iter_batches(100, seed=3), 3)))  # one epoch of the 300 rows
    expected = (
        torch.cat(
            [
                src.cache.acts(s, src.hook_name).reshape(-1, src.d_in)[torch.from_numpy(p)]
                for s, p in enumerate(held._keep_positions)
            ]
        )
        * src.norm_scale
    )
    assert sorted(map(tuple, yielded.tolist())) == sorted(map(tuple, expected.tolist()))
    assert head.describe()["rows"] != held.describe()["rows"]


def test_the_sweep_trains_on_all_but_the_calibration_sample_only_when_it_calibrates(tmp_path):
    """With a choice SAE the sweep (TopK too) trains on the source minus the held-out calibration tokens; without
    one, or with calibrate_tokens=0, on all of it. A small source gives at most a quarter, with a warning."""

    def trained_on(saes, **kw):
        where = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        result = train_sweep(saes, planted_source(), train_cfg(total_tokens=1024, lr=1e-2, **kw), where)
        calibrated = [
            r.get("threshold_calibration", {}).get("tokens")
            for r in json.loads((where / "run.json").read_text())["results"].values()
        ]
        return yaml.safe_load((where / "config.yaml").read_text())["source"]["n_tokens"], calibrated, result

    assert trained_on([sae_cfg("topk", name="t"), sae_cfg("mutual_choice", name="mc")])[:2] == (2048 - 256, [None, 256])
    assert trained_on([sae_cfg("topk", name="t")])[:2] == (2048, [None])
    assert trained_on([sae_cfg("feature_choice", name="fc")], calibrate_tokens=0)[:2] == (2048, [None])
    with pytest.warns(UserWarning, match="calibrate_tokens=1100 is more than a quarter .* holding out 512"):
        assert trained_on([sae_cfg("feature_choice", name="fc")], calibrate_tokens=1100)[:2] == (2048 - 512, [512])
