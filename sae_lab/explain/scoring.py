"""Detection and fuzzing scores of an explanation, as delphi computes them (Paulo et al. 2024; Bills et al. 2023).

- **Detection**: the scorer sees the explanation and unmarked contexts, half where the feature fires (held out
  from the explainer) and half random ones where it never does, and says which ones have the feature.
- **Fuzzing**: the scorer sees marked contexts: activating ones with their activating tokens marked, and
  non-activating ones with as many random tokens marked; it says which are marked correctly.

Each is the balanced accuracy ((true-positive rate + true-negative rate) / 2; 0.5 = chance) over the contexts
whose answers parsed, stored with that number of contexts; unparsable answers are counted, never guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sae_lab.explain.prompts import highlight, parse_predictions, score_messages
from sae_lab.explain.samples import Example

METHODS = ("detection", "fuzzing")


@dataclass
class Sample:
    text: str
    activating: bool


@dataclass
class Score:
    balanced_accuracy: float | None  # None when a class has no parsed context
    n_contexts: int  # contexts whose answer parsed
    n_unparsed: int


def detection_samples(held: list[Example], negatives: list[list[str]]) -> list[Sample]:
    return [Sample(highlight(e.tokens, lambda i: False), True) for e in held] + [
        Sample(highlight(w, lambda i: False), False) for w in negatives
    ]


def fuzzing_samples(
    held: list[Example], negatives: list[list[str]], threshold: float, rng: np.random.Generator
) -> list[Sample]:
    """Activating contexts marked where they fire; non-activating ones with n random tokens marked, n = the
    activating contexts' mean number of marked tokens, rounded up (delphi's ``fuzz_type='default'``)."""
    marks = [e.marked(threshold) for e in held]
    n_wrong = max(1, math.ceil(np.mean([sum(m) for m in marks]))) if marks else 1
    out = [Sample(highlight(e.tokens, m.__getitem__), True) for e, m in zip(held, marks)]
    for w in negatives:
        wrong = set(rng.choice(len(w), size=min(n_wrong, len(w)), replace=False).tolist())
        out.append(Sample(highlight(w, wrong.__contains__), False))
    return out


def prompts_for(method: str, explanation: str, samples: list[Sample], per_prompt: int) -> list[list[dict]]:
    return [
        score_messages(method, explanation, [s.text for s in samples[i : i + per_prompt]])
        for i in range(0, len(samples), per_prompt)
    ]


def score_answers(samples: list[Sample], answers: list[str], per_prompt: int) -> Score:
    """Balanced accuracy of the answers (one per prompt of ``per_prompt`` samples) over the parsed contexts."""
    truth, pred, unparsed = [], [], 0
    for k, answer in enumerate(answers):
        batch = samples[k * per_prompt : (k + 1) * per_prompt]
        p = parse_predictions(answer, len(batch))
        if p is None:
            unparsed += len(batch)
            continue
        truth += [s.activating for s in batch]
        pred += p
    return Score(balanced_accuracy(truth, pred), len(truth), unparsed)


def balanced_accuracy(truth: list[bool], pred: list[int]) -> float | None:
    t, p = np.asarray(truth, bool), np.asarray(pred, bool)
    if not t.any() or t.all():
        return None
    return float(((p & t).sum() / t.sum() + (~p & ~t).sum() / (~t).sum()) / 2)
