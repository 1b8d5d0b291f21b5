"""Activations streamed straight from the model, with no cache, behind the ActivationSource interface."""

from __future__ import annotations

import functools
import itertools
import math
from typing import Iterator, Sequence

import numpy as np
import torch

from sae_lab.activations.batch import split_batch
from sae_lab.activations.config import ActivationConfig
from sae_lab.activations.generate import ActivationGenerator, HookStats, estimate_hook_stats
from sae_lab.activations.masks import keep_mask
from sae_lab.activations.source import MultiHookMixin, side_by_side
from sae_lab.data.config import DataConfig
from sae_lab.data.packing import iter_contexts
from sae_lab.data.sources import describe_source
from sae_lab.models import LoadedModel

DEFAULT_BUFFER_TOKENS = 1 << 16


def _continue(read: list, stream: Iterator, device) -> Iterator:
    """The batches ``read`` already, then the rest of ``stream``, on ``device``."""
    for b in itertools.chain(read, stream):
        yield b.to(device)


class StreamingSource(MultiHookMixin):
    """Runs the model on the data stream and yields shuffled batches from a bounded buffer.

    The buffer fills with ``buffer_tokens`` kept rows, is permuted with a seeded generator and cut
    into batches; leftovers carry over. Skipping batches (for resume) replays the stream, which is
    exact but costs the forward passes again: use a cache for long runs.

    Several hooks (``hook`` a list): one forward pass captures them all, and each row holds one token position's
    activations at every hook side by side (``hook_parts``), from the positions every hook keeps.
    """

    def __init__(
        self,
        model: LoadedModel,
        data: DataConfig,
        acts: ActivationConfig,
        hook: str | Sequence[str] | None = None,
        buffer_tokens: int = DEFAULT_BUFFER_TOKENS,
    ):
        hooks = [hook] if isinstance(hook, str) else list(hook or acts.hooks[:1])
        self.model, self.data, self.acts_cfg = model, data, acts
        self.gen = ActivationGenerator(model, hooks, data.exclude_special)
        hooks = self.gen.hooks  # globs expanded
        estimated = estimate_hook_stats(self.gen, data, acts)
        self.hook_stats = {h: estimated[h][0] for h in hooks}
        self.hook_parts = side_by_side([(h, estimated[h][1], estimated[h][0].norm_scale) for h in hooks])
        self.buffer_tokens = buffer_tokens
        self._started = None  # (batch size and seed, batches read, their stream): see head()

    @property
    def stats(self) -> HookStats:
        """The statistics of the source's one hook (several hooks: ``hook_stats``)."""
        (stats,) = self.hook_stats.values()
        return stats

    def describe(self) -> dict:
        parts = self.hook_parts
        hooks = (
            {"hook": self.hook_name, "norm_scale": self.norm_scale}
            if len(parts) == 1
            else {"hooks": {h: {"d_in": p.d_in, "norm_scale": p.norm_scale} for h, p in parts.items()}}
        )
        return {
            "kind": "stream",
            "model": self.model.describe(),
            "data": describe_source(self.data),
            **hooks,
        }

    def _rows(self, rank: int = 0, world: int = 1) -> Iterator[np.ndarray]:
        """Kept, normalised rows of consecutive forward batches, forever (epoch after epoch); with ``world`` > 1,
        of every world-th context starting at ``rank``."""
        while True:
            contexts = itertools.islice(iter_contexts(self.data, self.model.tokenizer), rank, None, world)
            produced = False
            while chunk := list(itertools.islice(contexts, self.acts_cfg.batch_size)):
                tokens = np.stack(chunk)
                acts = self.gen.forward(tokens)
                special = self.gen.special_mask(tokens)
                keep = functools.reduce(
                    torch.logical_and,
                    [keep_mask(acts[h], special, self.hook_stats[h].outlier_threshold) for h in self.hook_parts],
                )
                produced = True
                rows = [acts[h][keep] * p.norm_scale for h, p in self.hook_parts.items()]
                yield (rows[0] if len(rows) == 1 else torch.cat(rows, dim=-1)).numpy()
            if not produced:
                raise ValueError(f"data source '{self.data.source}' produced no contexts")

    def iter_batches(
        self, batch_size: int, seed: int = 0, skip_batches: int = 0, device: str | torch.device = "cpu"
    ) -> Iterator[torch.Tensor]:
        """Endless shuffled batches [batch_size, d_in]; see ActivationSource. Right after :meth:`head` with the same
        batch size and seed, the stream from its start continues the one ``head`` read (no second buffer fill)."""
        started, self._started = self._started, None
        if started is not None and started[0] == (batch_size, seed) and skip_batches == 0:
            return _continue(started[1], started[2], device)
        return self._batches(batch_size, seed, skip_batches, device, 0, 1)

    def head(self, n: int, batch_size: int, seed: int = 0) -> torch.Tensor:
        """The first ``n`` rows :meth:`iter_batches` yields (on the CPU). The stream they came from is kept, so that
        the next ``iter_batches(batch_size, seed)`` (training after b_dec's initialisation) goes on from it instead
        of running the model over a whole shuffle buffer again."""
        stream = self._batches(batch_size, seed, 0, "cpu", 0, 1)
        read = [next(stream) for _ in range(math.ceil(n / batch_size))]
        self._started = ((batch_size, seed), read, stream)
        return torch.cat([split_batch(b)[0] for b in read])[:n]

    def iter_rank_batches(
        self,
        batch_size: int,
        rank: int,
        world: int,
        seed: int = 0,
        skip_batches: int = 0,
        device: str | torch.device = "cpu",
    ) -> Iterator[torch.Tensor]:
        """Data-parallel training: each rank runs the model on its own contexts (every world-th) and yields
        batches of batch_size / world rows of them, shuffled in its own buffer. Together the ranks see each
        context once per epoch, but not the same batches as one process would."""
        self._started = None
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
                    yield torch.from_numpy(data[perm[b * batch_size : (b + 1) * batch_size]]).to(device)
                produced += 1
            pool = [data[perm[n_batches * batch_size :]]]
            pool_rows, w = len(pool[0]), w + 1
