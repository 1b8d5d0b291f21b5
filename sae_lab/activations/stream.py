"""Activations streamed straight from the model, with no cache, behind the ActivationSource interface."""

from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np
import torch

from sae_lab.activations.config import ActivationConfig
from sae_lab.activations.generate import ActivationGenerator, estimate_hook_stats
from sae_lab.activations.masks import keep_mask
from sae_lab.data.config import DataConfig
from sae_lab.data.packing import iter_contexts
from sae_lab.data.sources import describe_source
from sae_lab.models import LoadedModel

DEFAULT_BUFFER_TOKENS = 1 << 16


class StreamingSource:
    """Runs the model on the data stream and yields shuffled batches from a bounded buffer.

    The buffer fills with ``buffer_tokens`` kept rows, is permuted with a seeded generator and cut
    into batches; leftovers carry over. Skipping batches (for resume) replays the stream, which is
    exact but costs the forward passes again: use a cache for long runs.
    """

    def __init__(self, model: LoadedModel, data: DataConfig, acts: ActivationConfig, hook: str | None = None,
                 buffer_tokens: int = DEFAULT_BUFFER_TOKENS):
        self.hook_name = hook or acts.hooks[0]
        self.model, self.data, self.acts_cfg = model, data, acts
        self.gen = ActivationGenerator(model, [self.hook_name], data.exclude_special)
        stats, self.d_in = estimate_hook_stats(self.gen, data, acts)[self.hook_name]
        self.stats = stats
        self.norm_scale = stats.norm_scale
        self.buffer_tokens = buffer_tokens

    def describe(self) -> dict:
        return {"kind": "stream", "hook": self.hook_name, "model": self.model.describe(),
                "data": describe_source(self.data), "norm_scale": self.norm_scale}

    def _rows(self, rank: int = 0, world: int = 1) -> Iterator[np.ndarray]:
        """Kept, normalised rows of consecutive forward batches, forever (epoch after epoch); with ``world`` > 1,
        of every world-th context starting at ``rank``."""
        while True:
            contexts = itertools.islice(iter_contexts(self.data, self.model.tokenizer), rank, None, world)
            produced = False
            while chunk := list(itertools.islice(contexts, self.acts_cfg.batch_size)):
                tokens = np.stack(chunk)
                acts = self.gen.forward(tokens)[self.hook_name]
                keep = keep_mask(acts, self.gen.special_mask(tokens), self.stats.outlier_threshold)
                produced = True
                yield (acts[keep] * self.norm_scale).numpy()
            if not produced:
                raise ValueError(f"data source '{self.data.source}' produced no contexts")

    def iter_batches(self, batch_size: int, seed: int = 0, skip_batches: int = 0,
                     device: str | torch.device = "cpu") -> Iterator[torch.Tensor]:
        """Endless shuffled batches [batch_size, d_in]; see ActivationSource."""
        return self._batches(batch_size, seed, skip_batches, device, 0, 1)

    def iter_rank_batches(self, batch_size: int, rank: int, world: int, seed: int = 0, skip_batches: int = 0,
                          device: str | torch.device = "cpu") -> Iterator[torch.Tensor]:
        """Data-parallel training: each rank runs the model on its own contexts (every world-th) and yields
        batches of batch_size / world rows of them, shuffled in its own buffer. Together the ranks see each
        context once per epoch, but not the same batches as one process would."""
        return self._batches(batch_size // world, seed, skip_batches, device, rank, world)

    def _batches(self, batch_size: int, seed: int, skip_batches: int, device, rank: int, world: int):
        if batch_size > self.buffer_tokens:
            raise ValueError(f"batch_size {batch_size} exceeds the stream's buffer of {self.buffer_tokens} tokens")
        pool, produced, w = [], 0, 0
        pool_rows = 0
        for rows in self._rows(rank, world):
            pool.append(rows)
            pool_rows += len(rows)
            if pool_rows < self.buffer_tokens:
                continue
            data = np.concatenate(pool)
            perm = np.random.default_rng([seed, w] if world == 1 else [seed, w, rank]).permutation(len(data))
            n_batches = len(data) // batch_size
            for b in range(n_batches):
                if produced >= skip_batches:
                    yield torch.from_numpy(data[perm[b * batch_size:(b + 1) * batch_size]]).to(device)
                produced += 1
            pool = [data[perm[n_batches * batch_size:]]]
            pool_rows, w = len(pool[0]), w + 1
