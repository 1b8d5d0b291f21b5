"""A newcomer's architecture: a copy of saes/relu.py defined here, registered by its decorator, and picked up
by the contract tests (imported below) with no other edit anywhere."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from pydantic import Field

from sae_lab.configbase import ConfigError, build_config
from sae_lab.saedir import SAEDir
from sae_lab.saes import BaseSAE, SAEConfig, TrainOutput, build_sae, register, registered_names
from test_saes_contract import *  # noqa: F401,F403  (the every-architecture contract tests)

CONTRACT_ARCHS = ["toy_relu"]  # run the contract tests above on the toy only (the real ones run in their module)


class ToyConfig(SAEConfig):
    """Options of the toy: a ReLU SAE with an L1 penalty, like 'standard'."""

    architecture: Literal["toy_relu"] = "toy_relu"
    toy_l1: float = Field(1.0, ge=0, description="L1 weight on z_i * ||d_i||")


@register("toy_relu")
class ToySAE(BaseSAE):
    """Dense ReLU encoder; sparsity from the L1 term."""

    config_class = ToyConfig

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_acts(x))

    def training_forward(self, x: torch.Tensor) -> TrainOutput:
        z = self.encode(x)
        x_hat = self.decode(z)
        l1 = self.cfg.toy_l1 * (z * self.W_dec.norm(dim=1)).sum(-1).mean()
        with torch.no_grad():
            fired = (z > 0).sum(0)
            self.update_stats(fired, x.shape[0])
        return TrainOutput(x_hat, {"l1": l1}, fired, float(fired.sum()) / x.shape[0])


def test_the_toy_is_a_registered_architecture_with_its_own_options():
    assert "toy_relu" in registered_names()
    cfg = SAEConfig(architecture="toy_relu", d_in=8, expansion_factor=2, toy_l1=0.5)
    assert type(cfg) is ToyConfig and cfg.d_sae == 16 and cfg.name == "toy_relu"
    assert type(build_sae(dict(architecture="toy_relu", d_in=8, d_sae=16))) is ToySAE
    with pytest.raises(ConfigError, match="'toy_l1' is an option of architecture toy_relu, not of 'topk'"):
        build_config(SAEConfig, dict(architecture="topk", d_in=8, d_sae=16, k=2, toy_l1=1.0))
    with pytest.raises(ConfigError, match="'k' is an option of architecture .*topk.*not of 'toy_relu'"):
        build_config(SAEConfig, dict(architecture="toy_relu", d_in=8, d_sae=16, k=2))


def test_the_toy_saves_as_an_sae_lab_only_directory(tmp_path):
    import json

    sae = build_sae(dict(architecture="toy_relu", d_in=8, d_sae=16))
    SAEDir(tmp_path / "t").save(sae)
    assert json.loads((tmp_path / "t" / "cfg.json").read_text())["architecture"] == "sae_lab_toy_relu"
    assert type(SAEDir(tmp_path / "t").load()) is ToySAE
