"""IOI prompts with their attributes (Makelov et al. 2024): the indirect object (IO), the subject (S) and the
order of the first two names (ABB: IO first, BAB: S first), on templates "When N1 and N2 went to the P, S gave a O
to" whose answer is the IO. Names, places and objects are single tokens, so every prompt of a template has the same
length and positions line up across prompts (per-position means and nodes are then well defined)."""

from __future__ import annotations

import dataclasses
import json
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

NAMES = [
    "Mary", "John", "Tom", "James", "Anna", "Sarah", "David", "Michael",
    "Paul", "Emma", "Kate", "Mark", "Lisa", "Peter", "Alice", "Bob",
]  # fmt: skip
PLACES = ["store", "park", "school", "garden", "kitchen"]
OBJECTS = ["drink", "book", "ball", "letter", "bag"]
TEMPLATES = [
    "When {N1} and {N2} went to the {P}, {S} gave a {O} to",
    "After {N1} and {N2} went to the {P}, {S} gave a {O} to",
    "Then, {N1} and {N2} had a long talk at the {P}. {S} gave a {O} to",
    "While {N1} and {N2} were working at the {P}, {S} gave a {O} to",
    "When {N1} and {N2} got a {O} at the {P}, {S} decided to give it to",
]
ORDERS = ("ABB", "BAB")
ATTRIBUTES = ("io", "s", "order")  # Makelov et al.'s three: IO name, S name, position of S among the first two


@dataclass(frozen=True)
class Prompt:
    """One IOI prompt: ``template`` index, the names ``io`` and ``s`` (without a leading space), ``order``."""

    template: int
    io: str
    s: str
    place: str
    obj: str
    order: str

    @property
    def text(self) -> str:
        n1, n2 = (self.io, self.s) if self.order == "ABB" else (self.s, self.io)
        return TEMPLATES[self.template].format(N1=n1, N2=n2, S=self.s, P=self.place, O=self.obj)

    def with_(self, **changes) -> "Prompt":
        """A copy with ``changes`` (e.g. ``io="Anna"``): an attribute edit's counterfactual prompt."""
        return dataclasses.replace(self, **changes)

    def swapped(self) -> "Prompt":
        """The names swapped (IO <-> S): the answer flips (Marks et al.'s counterfactual)."""
        return self.with_(io=self.s, s=self.io)


def split_of(p: Prompt) -> str:
    """``train`` or ``heldout``: a fixed fifth of all prompts (by a hash of the text) is never trained on."""
    return "heldout" if zlib.crc32(p.text.encode()) % 5 == 0 else "train"


def sample(template: int, n: int, seed: int, split: str = "heldout") -> list[Prompt]:
    """``n`` prompts of ``template`` from ``split`` with distinct IO and S, random place, object and order."""
    rng = random.Random(f"{template}:{seed}")
    out = []
    while len(out) < n:
        io, s = rng.sample(NAMES, 2)
        p = Prompt(template, io, s, rng.choice(PLACES), rng.choice(OBJECTS), rng.choice(ORDERS))
        if split_of(p) == split:
            out.append(p)
    return out


def other_value(attr: str, p: Prompt, rng: random.Random) -> str:
    """A value of ``attr`` different from ``p``'s (a name other than both of ``p``'s names; the other order)."""
    if attr == "order":
        return ORDERS[1 - ORDERS.index(p.order)]
    return rng.choice([n for n in NAMES if n not in (p.io, p.s)])


def token_ids(model, prompts: list[Prompt]) -> torch.Tensor:
    """``[n, T]`` token ids with BOS; every prompt must have the same length (one template)."""
    rows = [model.bridge.to_tokens(p.text)[0] for p in prompts]
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"IOI prompts of one batch must share a length (one template); got lengths {lengths}")
    return torch.stack(rows)


def name_id(model, name: str) -> int:
    """The single token of ``" " + name``."""
    ids = model.tokenizer.encode(" " + name, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"' {name}' is {len(ids)} tokens for this model; IOI names must be single tokens")
    return ids[0]


def name_ids(model, prompts: list[Prompt]) -> tuple[torch.Tensor, torch.Tensor]:
    """The IO and S answer tokens, ``[n]`` each."""
    return torch.tensor([name_id(model, p.io) for p in prompts]), torch.tensor([name_id(model, p.s) for p in prompts])


def logit_diff(logits: torch.Tensor, io: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Per prompt: logit(IO) - logit(S) at the last position, ``[n]``."""
    last = logits[:, -1].float()
    return last.gather(1, io[:, None].to(last.device))[:, 0] - last.gather(1, s[:, None].to(last.device))[:, 0]


def write_training_text(path: Path, templates: list[int], n: int, seed: int) -> Path:
    """JSONL of ``n`` completed IOI sentences (prompt + " IO."; train split only), templates in turn: the SAEs'
    training text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    per = [sample(t, n // len(templates) + 1, seed=10_000 + seed, split="train") for t in templates]
    rows = [per[i % len(templates)][i // len(templates)] for i in range(n)]
    with path.open("w") as f:
        for p in rows:
            f.write(json.dumps({"text": f"{p.text} {p.io}."}) + "\n")
    return path
