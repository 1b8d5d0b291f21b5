"""The contexts an explainer sees and a scorer judges, from the feature database and from held-out text.

- Shown to the explainer: the ``n_top`` top examples and ``n_interval`` samples of each activation interval.
- Held out for scoring (activating): the other top examples and interval samples, never the shown ones.
- Non-activating (scoring): random windows of held-out text, of the database's example width, in which the
  feature does not fire at any token (``NegativePool``: the subject model and SAE run once per SAE).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sae_lab.evaluation import inputs as I
from sae_lab.evaluation.feature_db import FeatureDB


@dataclass
class Example:
    """A window of tokens and the feature's activation at each."""

    tokens: list[str]
    acts: list[float]

    def marked(self, threshold: float) -> list[bool]:
        """Tokens activating above ``threshold`` x this example's maximum (delphi's highlighting rule)."""
        top = max(self.acts) if self.acts else 0.0
        return [top > 0 and a >= threshold * top for a in self.acts]


def feature_examples(db: FeatureDB, feature: int, n_top: int, n_interval: int) -> tuple[list[Example], list[Example]]:
    """(shown to the explainer, held out for scoring): disjoint activating examples of ``feature``."""
    top = db.top_examples(feature)
    intervals = db.interval_examples(feature)
    shown = top[:n_top] + [e for iv in intervals for e in iv["examples"][:n_interval]]
    seen = {e["token_index"] for e in shown}
    held = [
        e
        for e in top[n_top:] + [e for iv in intervals for e in iv["examples"][n_interval:]]
        if e["token_index"] not in seen and not seen.add(e["token_index"])
    ]
    as_ex = lambda rows: [Example(e["tokens"], e["acts"]) for e in rows]  # noqa: E731
    return as_ex(shown), as_ex(held)


@dataclass
class NegativePool:
    """Windows of held-out text ([N, W] token strings) and which features fire anywhere in each ([N, d_sae])."""

    windows: list[list[str]]
    active: np.ndarray

    def sample(self, feature: int, n: int, rng: np.random.Generator) -> list[list[str]]:
        """Up to ``n`` random windows in which ``feature`` never fires."""
        quiet = np.flatnonzero(~self.active[:, feature])
        pick = rng.choice(quiet, size=min(n, len(quiet)), replace=False) if len(quiet) else []
        return [self.windows[i] for i in pick]


@torch.inference_mode()
def negative_pool(target: I.Target, model, cfg, multiple: float | None, width: int, db: FeatureDB) -> NegativePool:
    """Run the subject ``model`` and the target's SAE over ``cfg``'s held-out tokens once; cut each context into
    windows of ``width`` tokens (after BOS; windows with a masked position are dropped)."""
    from sae_lab.activations.generate import ActivationGenerator
    from sae_lab.activations.masks import keep_mask

    I.check_targets([target], model)
    device = I.place_saes([target], cfg, model)
    gen = ActivationGenerator(model, [target.hook], exclude_special=False)
    thresholds = I.first_batch_thresholds(gen, cfg, multiple)
    ids, active = [], []
    for _, tokens in I.iter_batches(cfg, model.tokenizer, desc="contexts for scoring"):
        acts = gen.forward(tokens)[target.hook]
        keep = keep_mask(acts, I.special_mask(tokens, model.tokenizer, cfg), thresholds[target.hook])
        b, T, d = acts.shape
        z = target.sae.encode(acts.reshape(-1, d).to(device)).reshape(b, T, -1).cpu()
        for s in range(1, T - width + 1, width):
            ok = keep[:, s : s + width].all(dim=1)
            ids += [tokens[i, s : s + width] for i in ok.nonzero().flatten().tolist()]
            active.append((z[ok, s : s + width] > 0).any(dim=1).numpy())
    if not ids:
        I.first_batch(cfg, model.tokenizer)  # a clear error when the data yields no context
    strings = db.token_strings(np.concatenate(ids).tolist())
    windows = [[strings.get(int(t), f"<{t}>") for t in w] for w in ids]
    return NegativePool(windows, np.concatenate(active))
