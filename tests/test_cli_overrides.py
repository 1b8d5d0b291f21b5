"""Command-line overrides of a run config: set, add and append list items, with errors that name the fix."""

import re

import pytest
import yaml

from sae_lab.cli import main as cli_main

CONFIG = "experiments/configs/embedded_sweep.yaml"


def resolved(capsys, *overrides: str) -> dict:
    assert cli_main(["train", CONFIG, *overrides, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_an_sae_is_appended_or_added_by_index_and_a_list_is_extended(capsys):
    base = resolved(capsys)
    assert len(base["saes"]) == 4
    appended = resolved(capsys, "saes+={architecture: topk, name: topk_k64, expansion_factor: 4, k: 64}")
    assert [s["name"] for s in appended["saes"]] == [*(s["name"] for s in base["saes"]), "topk_k64"]
    assert appended["saes"][-1]["k"] == 64 and appended["saes"][-1]["architecture"] == "topk"
    added = resolved(capsys, "saes.4={architecture: topk, k: 16, expansion_factor: 4}", "saes.-1.k=8")
    assert added["saes"][4]["architecture"] == "topk" and added["saes"][4]["k"] == 8  # saes.-1: the one just added
    hooks = resolved(capsys, "activations.hooks+=[blocks.3.hook_resid_post, blocks.6.hook_resid_post]")
    assert hooks["activations"]["hooks"] == [
        "blocks.15.hook_resid_post",
        "blocks.3.hook_resid_post",
        "blocks.6.hook_resid_post",
    ]


@pytest.mark.parametrize(
    "override, message",
    [
        ("saes.9={architecture: topk, k: 8}", r"'9' is not a valid index into a list of 4 \(0 to 4, the last adds"),
        ("train.batch_size+=1", r"'batch_size' holds int 1024, not a list; '\+=' appends to a list"),
        ("sae+={architecture: topk, k: 8}", "unknown key 'sae'.*Did you mean 'saes'"),
        ("saes+={architecture: topk, kk: 8, expansion_factor: 4}", r"unknown key\(s\) kk \(did you mean k\?\)"),
    ],
)
def test_bad_list_overrides_name_the_problem(capsys, override, message):
    assert cli_main(["train", CONFIG, override, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
