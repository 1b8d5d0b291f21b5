"""A live activation stream whose batches also carry ∂loss/∂activation at the hook (for g-SAE training).

Each forward batch of contexts runs the whole model with the hook's activation made a leaf of the autograd graph,
then one backward pass from the loss to that leaf (nothing upstream of the hook, no parameter gradients). The loss
is the next-token cross-entropy summed over every prediction of each context, so a row's gradient is
Σ_{t' >= t} ∂CE_{t'}/∂x_t: independent of the batch size and of how many contexts share a forward (a mean would
shrink it with both). The last position of a context predicts nothing and gets a zero gradient.

Gradients are stored in the SAE's units: batches are x' = s·x (``norm_scale`` s), so ∂L/∂x' = (∂L/∂x) / s.
Rows are kept by the same keep mask as the activations' (special tokens, outliers) and shuffled with them.

Why a stream and not a cache: sae_lab/saes/README.md ("g-SAE"); its cost: BENCHMARKS.md ("g-SAE").
"""

from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np
import torch

from sae_lab.activations.batch import GradBatch
from sae_lab.activations.config import ActivationConfig
from sae_lab.activations.masks import keep_mask
from sae_lab.activations.stream import StreamingSource
from sae_lab.data.config import DataConfig
from sae_lab.data.packing import iter_contexts
from sae_lab.models import LoadedModel


def activations_and_gradients(model: LoadedModel, hook: str, tokens: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations, ∂L/∂activations), each ``[b, T, d]`` float32 on CPU (per-head hooks flattened), at ``hook``
    for ``tokens [b, T]``; L = Σ over the batch's predictions of next-token cross-entropy."""
    ids = torch.as_tensor(tokens, dtype=torch.long, device=model.device)
    leaf: dict[str, torch.Tensor] = {}

    def capture(act: torch.Tensor, hook) -> torch.Tensor:
        leaf["act"] = act.detach().requires_grad_(True)  # the graph starts here: backward stops at the hook
        return leaf["act"]

    with torch.enable_grad():
        logits = model.bridge.run_with_hooks(ids, fwd_hooks=[(hook, capture)])
        if "act" not in leaf:
            raise RuntimeError(f"hook '{hook}' did not run in the model's forward pass")
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum"
        )
        (grad,) = torch.autograd.grad(loss, leaf["act"])
    act = leaf["act"].detach()
    flat = act.shape[:2] + (-1,)
    return act.reshape(flat).float().cpu(), grad.reshape(flat).float().cpu()


class GradientStreamingSource(StreamingSource):
    """A :class:`StreamingSource` whose batches are :class:`GradBatch` (rows and their loss gradients).

    The same contexts, keep mask, normalisation, seeded shuffle buffer, exact skip and data-parallel split as the
    plain stream; it costs a full forward (not cut after the hook) and a backward through the layers after the hook.
    """

    has_gradients = True

    def __init__(self, model: LoadedModel, data: DataConfig, acts: ActivationConfig, hook=None, **kwargs):
        if not isinstance(hook, str) and hook is not None and len(hook) != 1:
            raise ValueError(
                f"a gradient stream (g-SAE) serves one hook, got {list(hook)}: train g-SAEs on one hook per run"
            )
        super().__init__(model, data, acts, hook if isinstance(hook, str) or hook is None else hook[0], **kwargs)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "kind": "grad_stream",
            "gradient": "d(sum of next-token CE over each context)/d(activation), in normalised units",
        }

    def _rows(self, rank: int = 0, world: int = 1) -> Iterator[np.ndarray]:
        """Kept rows as ``[n, 2 d]``: the normalised activation, then its gradient (the parent's shuffle buffer
        moves them together)."""
        while True:
            contexts = itertools.islice(iter_contexts(self.data, self.model.tokenizer), rank, None, world)
            produced = False
            while chunk := list(itertools.islice(contexts, self.acts_cfg.batch_size)):
                tokens = np.stack(chunk)
                acts, grads = activations_and_gradients(self.model, self.hook_name, tokens)
                keep = keep_mask(acts, self.gen.special_mask(tokens), self.stats.outlier_threshold)
                produced = True
                yield torch.cat([acts[keep] * self.norm_scale, grads[keep] / self.norm_scale], dim=-1).numpy()
            if not produced:
                raise ValueError(f"data source '{self.data.source}' produced no contexts")

    def _batches(self, batch_size: int, seed: int, skip_batches: int, device, rank: int, world: int):
        for rows in super()._batches(batch_size, seed, skip_batches, device, rank, world):
            yield GradBatch(rows[:, : self.d_in].contiguous(), rows[:, self.d_in :].contiguous())
