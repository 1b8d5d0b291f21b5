"""Held-out L0 of trained choice SAEs, topic by topic, on the embedded corpus (training and validation topics).

    python experiments/l0_by_topic.py RUN_DIR [--cache CACHE_DIR] [--train-topics 20] [--out result.json]

Each pydoc topic is tokenised on its own, cut into contexts of the cache's length (BOS first), run through the
embedded model to the SAEs' hook, and its kept positions (no special tokens, no outliers above the cache's
threshold) encoded by every SAE of RUN_DIR with its inference rule. Prints each SAE's L0 per topic and its
spread, for the validation topics (never trained on) and a seeded sample of training topics (trained on,
except the contexts the calibration held out). What it answers: whether a held-out L0 above k on the
validation split comes from a few topics or from all of them.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

import numpy as np
import torch

from sae_lab.activations.cache_reader import ActivationCache
from sae_lab.activations.generate import ActivationGenerator
from sae_lab.activations.masks import keep_mask, special_positions
from sae_lab.data.packing import pack_token_stream, special_ids
from sae_lab.data.sources import embedded_split_of
from sae_lab.models import load_model
from sae_lab.saeref import resolve_saes


def topic_contexts(text: str, tokenizer, length: int) -> np.ndarray:
    """The topic's tokens as contexts of ``length`` (BOS, then length - 1 tokens; the last one padded, and its
    padding excluded as a special token)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    special = special_ids(tokenizer)  # as the cache's packing: BOS, or EOS for a tokenizer without one
    pad = special["pad"] if special["pad"] is not None else special["eos"]
    padded = ids + [pad] * (-len(ids) % (length - 1))  # the packing drops a partial last context: fill it
    return np.stack(list(pack_token_stream([padded], length, special["bos"], None)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--cache", default=None, help="the run's cache (for its outlier threshold); default from config")
    ap.add_argument("--train-topics", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    run = Path(args.run_dir)
    saes = {r.name: r.sae for r in resolve_saes(run)}
    hook = next(iter(saes.values())).cfg.hook_name
    cache = ActivationCache(args.cache, verify="none")
    threshold = cache.hook_info(hook)["stats"]["outlier_threshold"]
    model = load_model("embedded")
    gen = ActivationGenerator(model, [hook])
    from pydoc_data.topics import topics

    names = {"validation": [n for n in sorted(topics) if embedded_split_of(n) == "validation"]}
    train = [n for n in sorted(topics) if embedded_split_of(n) == "train"]
    names["train (sample)"] = sorted(random.Random(0).sample(train, min(args.train_topics, len(train))))
    result = {}
    for split, chosen in names.items():
        for name in chosen:
            tokens = topic_contexts(topics[name], model.tokenizer, cache.context_length)
            x = gen.forward(tokens)[hook]
            x = x[keep_mask(x, special_positions(tokens, model.tokenizer), threshold)]
            with torch.no_grad():
                l0 = {s: float((sae.encode(x) > 0).sum(1).float().mean()) for s, sae in saes.items()}
            result.setdefault(split, {})[name] = {"tokens": int(x.shape[0]), **l0}
    lines = []
    for split, rows in result.items():
        total = sum(r["tokens"] for r in rows.values())
        lines.append(f"{split}: {len(rows)} topics, {total:,} tokens")
        for s in saes:
            per = [r[s] for r in rows.values()]
            pooled = sum(r[s] * r["tokens"] for r in rows.values()) / total
            lines.append(
                f"  {s:24s} pooled L0 {pooled:6.2f}; per topic median {statistics.median(per):6.2f}, "
                f"min {min(per):6.2f}, max {max(per):6.2f}, sd {statistics.pstdev(per):5.2f}"
            )
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps({"argv": vars(args), "per_topic": result, "report": lines}, indent=2))


if __name__ == "__main__":
    main()
