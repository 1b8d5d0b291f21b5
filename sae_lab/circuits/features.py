"""Features of a prompt: per-token top features and the full activation of chosen features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sae_lab.circuits import checks
from sae_lab.circuits.prompts import Prompt
from sae_lab.circuits.spliced import Spliced, sae_key


@dataclass
class PromptFeatures:
    """``tokens[i]`` is token ``token_ids[i]`` decoded; ``top[i]`` its (feature, value) pairs, largest first
    (active features only); ``acts[f]`` feature f's activation at every token."""

    token_ids: list[int]
    tokens: list[str]
    top: list[list[tuple[int, float]]]
    acts: dict[int, list[float]]


def prompt_features(
    model, sae, prompt: Prompt, top_k: int = 10, features: Sequence[int] | None = None
) -> PromptFeatures:
    """Run one ``prompt`` (text, token ids, or a ``[1, T]`` tensor; a batch is refused) with ``sae`` spliced in
    (error term on, so the model behaves as clean) and read its code: the ``top_k`` largest active features per
    token (fewer if fewer are active). ``features`` (one index or a list) chooses the ``acts`` reported;
    ``None`` reports every feature that appears in ``top``."""
    sae = checks.sae(sae)
    top_k = checks.count(top_k, "top_k", minimum=0)
    if features is not None:
        features = checks.features(sae, features)
    with Spliced(model, [sae]) as s:
        ids, _ = s.ids(prompt)
        out = s.run(ids[0])
    z = out.features[sae_key(sae)].float()
    vals, idx = z.topk(min(top_k, z.shape[-1]), dim=-1)
    top = [[(int(i), float(v)) for v, i in zip(vr, ir) if v > 0] for vr, ir in zip(vals.tolist(), idx.tolist())]
    chosen = features if features is not None else sorted({f for row in top for f, _ in row})
    acts = {f: z[:, f].tolist() for f in chosen}
    return PromptFeatures(out.token_ids.tolist(), out.tokens, top, acts)
