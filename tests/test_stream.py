"""Activations streamed straight from the model go through the same ActivationSource interface."""

import torch

from sae_lab.activations.config import ActivationConfig
from sae_lab.activations.source import ActivationSource
from sae_lab.activations.stream import StreamingSource
from sae_lab.data.config import DataConfig

HOOK = "blocks.2.hook_resid_post"


def make(tiny_model, buffer_tokens=512):
    data = DataConfig(context_length=32, max_tokens=1024)
    acts = ActivationConfig(hooks=[HOOK], batch_size=4, norm_sample_contexts=8)
    return StreamingSource(tiny_model, data, acts, buffer_tokens=buffer_tokens)


def test_stream_is_an_activation_source_with_normalised_deterministic_batches(tiny_model):
    src = make(tiny_model)
    assert isinstance(src, ActivationSource) and src.d_in == 64 and src.hook_name == HOOK
    a = [b for _, b in zip(range(6), src.iter_batches(100, seed=2))]
    b = [b for _, b in zip(range(6), src.iter_batches(100, seed=2))]
    c = next(src.iter_batches(100, seed=3))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c)
    assert a[0].shape == (100, 64)
    norms = torch.cat(a).norm(dim=-1)
    assert abs(norms.mean().item() - 8.0) < 1.5  # sqrt(64)


def test_stream_rows_are_the_model_activations_and_skip_is_exact(tiny_model):
    src = make(tiny_model)
    full = [b for _, b in zip(range(15), src.iter_batches(100, seed=0))]  # crosses an epoch (~990 rows)
    resumed = [b for _, b in zip(range(5), src.iter_batches(100, seed=0, skip_batches=10))]
    assert all(torch.equal(x, y) for x, y in zip(full[10:], resumed))
    import numpy as np

    from sae_lab.data.packing import iter_contexts

    tokens = np.stack(list(iter_contexts(src.data, tiny_model.tokenizer))[:4])
    direct = src.gen.forward(tokens)[HOOK].reshape(-1, 64)[1:] * src.norm_scale  # skip a BOS row
    rows = torch.cat(full[:10])
    hits = sum(bool((rows - d).abs().amax(-1).lt(1e-5).any()) for d in direct[:20])
    assert hits >= 18  # the stream yields the model's own activations (a few positions are masked)


def test_stream_ranks_split_the_contexts(tiny_model):
    """Data-parallel: rank r of 2 runs the model on contexts r, r+2, ... and yields batches of half the global
    size; the ranks' rows are disjoint, and skipping resumes exactly."""
    import numpy as np

    from sae_lab.data.packing import iter_contexts

    src = make(tiny_model, buffer_tokens=256)
    ranks = [[b for _, b in zip(range(4), src.iter_rank_batches(100, r, 2, seed=0))] for r in (0, 1)]
    assert all(b.shape == (50, 64) for r in ranks for b in r)
    tokens = np.stack(list(iter_contexts(src.data, tiny_model.tokenizer))[:2])
    direct = src.gen.forward(tokens)[HOOK][:, 2:] * src.norm_scale  # contexts 0 and 1, past BOS and the first token
    for r in (0, 1):
        own, other = torch.cat(ranks[r]), torch.cat(ranks[1 - r])
        hits = [sum(bool((rows - d).abs().amax(-1).lt(1e-5).any()) for d in direct[r]) for rows in (own, other)]
        assert hits[0] >= 10 and hits[1] == 0, hits  # context r is rank r's alone (200 of its ~250 rows drawn)
    resumed = next(src.iter_rank_batches(100, 1, 2, seed=0, skip_batches=3))
    assert torch.equal(resumed, ranks[1][3])


def test_training_after_head_goes_on_from_the_stream_head_read(tiny_model):
    """b_dec's sample (``head``) and training read one stream: the same batches as a fresh stream, and the model runs
    over the shuffle buffer once, not twice."""

    def counted(src, calls):
        forward = src.gen.forward
        src.gen.forward = lambda tokens: calls.append(len(tokens)) or forward(tokens)
        return src

    fresh = []
    reference = [b for _, b in zip(range(8), counted(make(tiny_model, 256), fresh).iter_batches(50, seed=4))]
    calls = []
    src = counted(make(tiny_model, 256), calls)
    sample = src.head(120, 50, seed=4)
    assert torch.equal(sample, torch.cat(reference[:3])[:120])
    after_head = len(calls)
    trained = [b for _, b in zip(range(8), src.iter_batches(50, seed=4))]
    assert all(torch.equal(x, y) for x, y in zip(trained, reference))
    assert after_head > 0 and calls == fresh  # the contexts of one stream, not a second buffer fill
    again = next(src.iter_batches(50, seed=4))  # the kept stream is used once; a new one starts over
    assert torch.equal(again, reference[0])
