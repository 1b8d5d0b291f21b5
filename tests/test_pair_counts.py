"""The sparse co-occurrence table against the dense int32 matrix it replaces (counts and the ranked rows)."""

import numpy as np
import pytest
import torch

from sae_lab.evaluation.pair_counts import PairCounts, top_pairs


def _random_pair_keys(g: torch.Generator, F: int, n_tokens: int, k: int) -> torch.Tensor:
    """Keys i * F + j (i < j) of all pairs among k latents per token, drawn from a skewed (Zipf-like) law."""
    weights = 1.0 / torch.arange(1, F + 1, dtype=torch.float64)
    idx = torch.multinomial(weights.expand(n_tokens, F), k, generator=g).sort(dim=1).values
    first, second = torch.triu_indices(k, k, 1)
    return (idx[:, first] * F + idx[:, second]).reshape(-1)


@pytest.mark.parametrize("F", [50, 700])  # topk takes different code paths below/above 64 * n columns
def test_sparse_counts_and_top_partners_equal_the_dense_matrix(F):
    g = torch.Generator().manual_seed(F)
    pairs = PairCounts(F, flush_min=300)  # many flushes: merges into a non-empty table
    dense = torch.zeros(F * F, dtype=torch.int32)
    for _ in range(12):
        keys = _random_pair_keys(g, F, n_tokens=int(torch.randint(1, 40, (1,), generator=g)), k=6)
        pairs.add(keys)
        dense.index_add_(0, keys, torch.ones_like(keys, dtype=torch.int32))  # the old accumulation
    keys, counts = pairs.table()
    assert (np.diff(keys) > 0).all() and (counts > 0).all()
    dense = dense.view(F, F)
    sym = dense + dense.t()
    assert torch.equal(pairs.dense(), sym)
    assert len(keys) == int((dense > 0).sum())
    want_counts, want_ids = sym.topk(10, dim=1)  # the old read-out: ties among small counts are frequent
    assert (want_counts[:, :-1] == want_counts[:, 1:]).any()
    for block_elems in (F, 7 * F, 1 << 25):  # one row, several rows, the whole matrix per block
        got_counts, got_ids = top_pairs(keys, counts, F, 10, block_elems=block_elems)
        assert torch.equal(got_counts, want_counts) and torch.equal(got_ids, want_ids)


def test_state_round_trip_and_bad_checkpoint():
    pairs = PairCounts(20, flush_min=1)
    pairs.add(torch.tensor([1, 21, 1, 399]))
    again = PairCounts(20)
    again.load_state(pairs.state())
    assert torch.equal(again.dense(), pairs.dense()) and int(again.dense()[0, 1]) == 2
    with pytest.raises(ValueError, match="does not fit 10 latents"):
        PairCounts(10).load_state(pairs.state())
