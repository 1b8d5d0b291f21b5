"""Before/after view of interventions: next-token distribution, named tokens' logits, greedy generations."""

from __future__ import annotations

from typing import Sequence

import torch

from sae_lab.circuits import checks
from sae_lab.circuits.errors import CircuitError
from sae_lab.circuits.interventions import Intervention
from sae_lab.circuits.prompts import Prompt
from sae_lab.circuits.spliced import Spliced


def compare_interventions(
    model,
    sae_or_saes,
    prompt: Prompt,
    interventions: Sequence[Intervention],
    tokens: Sequence[str] = (),
    top_n: int = 10,
    max_new_tokens: int = 20,
) -> dict:
    """``{"before": {...}, "after": {...}, "interventions": [...]}``; each side holds ``top`` (top_n
    ``(token string, probability)`` of the next token), ``logits`` (of each named single-token string),
    ``logit_diff`` (first named minus second, when two are named) and ``generation`` (greedy new text).

    ``prompt``: one prompt (text, token ids, or a ``[1, T]`` tensor; a batch is refused). ``interventions``: one
    or a list; ``tokens``: one single-token string or a list. The SAEs are spliced with the error term on, so
    "before" is the clean model exactly."""
    saes = checks.saes(sae_or_saes, "sae_or_saes")
    interventions = [interventions] if isinstance(interventions, Intervention) else list(interventions)
    for i, iv in enumerate(interventions):
        if not isinstance(iv, Intervention):
            raise CircuitError(
                f"interventions[{i}] must be an Intervention (Intervention.zero/mean/clamp/steer), "
                f"got {type(iv).__name__}"
            )
    ids = checks.tokens(model, tokens)
    vocab = int(model.bridge.cfg.d_vocab)
    top_n = checks.count(top_n, "top_n", maximum=vocab, why=f"the vocabulary has {vocab} tokens")
    max_new_tokens = checks.count(max_new_tokens, "max_new_tokens", minimum=0)
    with Spliced(model, saes, error_term=True) as s:
        prompt, _ = s.ids(prompt)
        prompt = prompt[0]
        before = _side(s, prompt, ids, top_n, max_new_tokens)
        handles = [s.intervene(iv) for iv in interventions]
        after = _side(s, prompt, ids, top_n, max_new_tokens)
        for h in handles:
            h.remove()
    return {"before": before, "after": after, "interventions": [iv.describe() for iv in interventions]}


def _side(s: Spliced, prompt: Prompt, ids: dict[str, int], top_n: int, max_new_tokens: int) -> dict:
    out = s.run(prompt)
    last = out.logits[-1].float()
    probs = torch.softmax(last, -1)
    p, i = probs.topk(top_n)
    tok = s.model.tokenizer
    side = {
        "top": [(tok.decode([int(j)]), float(q)) for q, j in zip(p, i)],
        "logits": {t: float(last[j]) for t, j in ids.items()},
        "logit_diff": None,
        "generation": s.generate(prompt, max_new_tokens=max_new_tokens).text if max_new_tokens else "",
    }
    if len(ids) == 2:
        a, b = list(ids.values())
        side["logit_diff"] = float(last[a] - last[b])
    return side
