"""The sparse co-occurrence table against the dense int32 matrix it replaces (counts and the ranked rows)."""

import numpy as np
import pytest
import torch

from sae_lab.evaluation.pair_counts import PairCounts, top_pairs


def _random_sets(g: torch.Generator, F: int, n_tokens: int, k: int) -> torch.Tensor:
    """[n_tokens, k] ascending latent ids per token from a skewed (Zipf-like) law; some tokens have fewer than k
    (F fills their unused slots) or none."""
    weights = 1.0 / torch.arange(1, F + 1, dtype=torch.float64)
    idx = torch.multinomial(weights.expand(n_tokens, F), k, generator=g)
    size = torch.randint(0, k + 1, (n_tokens, 1), generator=g)
    return torch.where(torch.arange(k) < size, idx, F).sort(dim=1).values


@pytest.mark.parametrize("F", [50, 700])  # topk takes different code paths below/above 64 * n columns
def test_sparse_counts_and_top_partners_equal_the_dense_matrix(F):
    g = torch.Generator().manual_seed(F)
    pairs = PairCounts(F, flush_min=300)  # many flushes: merges into a non-empty table
    dense = torch.zeros(F + 1, F + 1, dtype=torch.int32)  # row/column F: unused slots
    for _ in range(12):
        sets = _random_sets(g, F, n_tokens=int(torch.randint(1, 40, (1,), generator=g)), k=6)
        pairs.add_sets(sets.numpy())
        onehot = torch.zeros(len(sets), F + 1, dtype=torch.int32).scatter_(1, sets, 1)
        dense += onehot.t() @ onehot  # every pair of latents the token holds (the old dense matrix, symmetric)
    keys, counts = pairs.table()
    assert (np.diff(keys) > 0).all() and (counts > 0).all()
    sym = dense[:F, :F].fill_diagonal_(0)
    assert torch.equal(pairs.dense(), sym)
    assert len(keys) == int((sym > 0).sum()) // 2
    want_counts, want_ids = sym.topk(10, dim=1)  # the old read-out: ties among small counts are frequent
    assert (want_counts[:, :-1] == want_counts[:, 1:]).any()
    for block_elems in (F, 7 * F, 1 << 25):  # one row, several rows, the whole matrix per block
        got_counts, got_ids = top_pairs(keys, counts, F, 10, block_elems=block_elems)
        assert torch.equal(got_counts, want_counts) and torch.equal(got_ids, want_ids)


def test_state_round_trip_and_bad_checkpoint():
    pairs = PairCounts(20, flush_min=1)
    pairs.add(np.array([1, 21, 1, 399]))
    again = PairCounts(20)
    again.load_state(pairs.state())
    assert torch.equal(again.dense(), pairs.dense()) and int(again.dense()[0, 1]) == 2
    with pytest.raises(ValueError, match="does not fit 10 latents"):
        PairCounts(10).load_state(pairs.state())
