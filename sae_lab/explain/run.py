"""``sae-lab explain``: explain the chosen features of each SAE, then score the explanations, into its feature
database. Each explanation and each set of scores is committed as it is written, so a killed run (even kill -9)
keeps them and a rerun skips what is done (``overwrite=true`` redoes it)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from sae_lab.configbase import ConfigError
from sae_lab.evaluation import inputs as I
from sae_lab.evaluation.feature_db import FeatureDB
from sae_lab.explain import scoring as S
from sae_lab.explain.config import ExplainConfig, LLMConfig
from sae_lab.explain.llm import ChatModel, ExplainError, make_chat_model
from sae_lab.explain.prompts import PROMPT_VERSION, explain_messages, highlight, parse_explanation
from sae_lab.explain.samples import NegativePool, feature_examples, negative_pool
from sae_lab.explain.store import ExplanationStore
from sae_lab.models import LoadedModel
from sae_lab.rundir import RunDir

log = logging.getLogger(__name__)
KEPT = "the explanations and scores written so far are kept; rerun the same command to go on"


def explain_run(run_dir: str | Path, cfg: ExplainConfig | None = None, model: LoadedModel | None = None) -> dict:
    """Explain (and score) the features of every SAE of a run (``cfg.saes`` picks some); returns a summary."""
    run = RunDir(run_dir)
    run_cfg = run.read_config()
    cfg = cfg or ExplainConfig()
    targets = I.run_targets(run)
    if cfg.saes is not None:
        unknown = sorted(set(cfg.saes) - {t.name for t in targets})
        if unknown:
            raise ConfigError(f"saes: {unknown} are not SAEs of run '{run.path}'; it has {[t.name for t in targets]}")
        targets = [t for t in targets if t.name in cfg.saes]
    subject = _once(lambda: I.model_for(run_cfg, model))
    return explain_targets(targets, subject, cfg, I.outlier_multiple(cfg, run_cfg))


def explain_sae_dir(
    sae_dir: str | Path, model: LoadedModel | Callable[[], LoadedModel], cfg: ExplainConfig | None = None
) -> dict:
    """Explain (and score) the features of one SAE directory; ``model`` is the model it reads (or a loader)."""
    cfg = cfg or ExplainConfig()
    multiple = None if cfg.exclude_outliers in ("run", "none") else float(cfg.exclude_outliers)
    return explain_targets(
        [I.sae_dir_target(sae_dir)], _once(model if callable(model) else lambda: model), cfg, multiple
    )


def explain_targets(
    targets: list[I.Target], subject: Callable[[], LoadedModel], cfg: ExplainConfig, multiple: float | None
) -> dict:
    chats = _Chats()
    return {"saes": {t.name: _explain_target(t, subject, cfg, multiple, chats) for t in targets}}


class _Chats:
    """The chat models, each loaded once, when first needed (the scorer is the explainer unless configured)."""

    def __init__(self):
        self.models: dict[str, ChatModel] = {}

    def get(self, cfg: LLMConfig) -> ChatModel:
        key = cfg.model_dump_json()
        if key not in self.models:
            self.models[key] = make_chat_model(cfg)
        return self.models[key]


def _once(load: Callable[[], LoadedModel]) -> Callable[[], LoadedModel]:
    box: list[LoadedModel] = []
    return lambda: box[0] if box else (box.append(load()) or box[0])


def _explain_target(t: I.Target, subject, cfg: ExplainConfig, multiple, chats: _Chats) -> dict:
    t0 = time.time()
    with ExplanationStore(t.db_path) as store, FeatureDB(t.db_path) as db:
        features = choose_features(db, cfg)
        label = cfg.explainer.label
        done = store.explained(label)
        todo = [f for f in features if cfg.overwrite or f not in done]
        written, empty = _explain(t, db, store, todo, cfg, chats) if todo else (0, [])
        t1 = time.time()
        to_score = sorted(set(store.unscored(label)) & set(features)) if cfg.score else []
        if to_score:
            width = int(db.meta["analyze_config"]["context_left"]) + 1 + int(db.meta["analyze_config"]["context_right"])
            pool = negative_pool(t, subject(), cfg, multiple, width, db)
            _score(t, db, store, to_score, pool, cfg, chats)
        return {
            **summarise(db, store, label, features),
            "explained_now": written,
            "scored_now": len(to_score),
            "empty_answers": empty,
            "explain_seconds": round(t1 - t0, 1),
            "score_seconds": round(time.time() - t1, 1),
            "database": str(t.db_path),
        }


def choose_features(db: FeatureDB, cfg: ExplainConfig) -> list[int]:
    """The alive features, or the configured ids (range-checked; dead ones dropped), the first ``limit``."""
    alive = {r["id"] for r in db.list_features("id", descending=False, limit=db.n_features, alive_only=True)}
    if cfg.features == "alive":
        chosen = sorted(alive)
    else:
        bad = [f for f in cfg.features if not 0 <= f < db.n_features]
        if bad:
            raise ConfigError(f"features: {bad} out of range; this SAE has features 0 to {db.n_features - 1}")
        dead = [f for f in cfg.features if f not in alive]
        if dead:
            log.warning("features %s never fired in the analysed tokens: nothing to explain, skipped", dead)
        chosen = sorted(set(cfg.features) & alive)
    return chosen[: cfg.limit] if cfg.limit else chosen


def _batches(items: list[int], size: int, desc: str) -> Iterator[list[int]]:
    bar = tqdm(total=len(items), desc=desc, unit="feature", dynamic_ncols=True)
    try:
        for i in range(0, len(items), size):
            yield items[i : i + size]
            bar.update(len(items[i : i + size]))
    finally:
        bar.close()


def _explain(
    t, db: FeatureDB, store: ExplanationStore, todo: list[int], cfg: ExplainConfig, chats: _Chats
) -> tuple[int, list[int]]:
    """Write an explanation for each feature of ``todo``; returns (how many written, features with no answer)."""
    model, written, empty = chats.get(cfg.explainer), 0, []
    for batch in _batches(todo, cfg.explainer.batch_size, f"explaining {t.name}"):
        shown = [feature_examples(db, f, cfg.n_top, cfg.n_interval)[0] for f in batch]
        prompts = [
            explain_messages([highlight(e.tokens, e.marked(cfg.mark_threshold).__getitem__) for e in ex])
            for ex in shown
        ]
        answers = model.chat(prompts, cfg.explainer.max_new_tokens)
        parsed = [parse_explanation(a) for a in answers]
        if not any(parsed):
            raise ExplainError(
                f"the explainer {model.label} returned empty text for features {batch} of "
                f"'{t.name}'; check the model (or endpoint) and its max_new_tokens; {KEPT}"
            )
        for f, ex, answer, text in zip(batch, shown, answers, parsed):
            if text is None:
                empty.append(f)
                log.warning("feature %d: the explainer's answer was empty; it is retried on the next run", f)
                continue
            store.put(f, model.label, text, answer, PROMPT_VERSION, len(ex))
            written += 1
    return written, empty


def _score(
    t,
    db: FeatureDB,
    store: ExplanationStore,
    features: list[int],
    pool: NegativePool,
    cfg: ExplainConfig,
    chats: _Chats,
) -> None:
    """Detection and fuzzing scores (and those of a random other explanation) of each feature, committed."""
    label, scorer = cfg.explainer.label, chats.get(cfg.scorer_model)
    explained = store.explained(label)
    others = sorted(explained)
    per = cfg.examples_per_prompt
    for batch in _batches(features, 1, f"scoring {t.name}"):
        f = batch[0]
        rng = np.random.default_rng([cfg.seed, f])
        held = feature_examples(db, f, cfg.n_top, cfg.n_interval)[1]
        held = [held[i] for i in sorted(rng.choice(len(held), size=min(cfg.n_score, len(held)), replace=False))]
        negatives = pool.sample(f, cfg.n_score, rng)
        samples = {
            "detection": S.detection_samples(held, negatives),
            "fuzzing": S.fuzzing_samples(held, negatives, cfg.mark_threshold, rng),
        }
        for s in samples.values():
            rng.shuffle(s)
        texts = {"": explained[f]}
        if cfg.baseline and len(others) > 1:
            texts["_random"] = explained[rng.choice([g for g in others if g != f])]
        jobs = [(m + k, S.prompts_for(m, text, samples[m], per)) for k, text in texts.items() for m in S.METHODS]
        answers = scorer.chat([p for _, ps in jobs for p in ps], 2 * per + 8)
        if not any(a.strip() for a in answers):
            raise ExplainError(
                f"the scorer {scorer.label} returned empty text for every prompt of feature {f} of "
                f"'{t.name}'; check the model (or endpoint); {KEPT}"
            )
        scores, k = {}, 0
        for name, ps in jobs:
            scores[name] = S.score_answers(samples[name.removesuffix("_random")], answers[k : k + len(ps)], per)
            k += len(ps)
        store.put_scores(f, label, scorer.label, scores)


def summarise(db: FeatureDB, store: ExplanationStore, label: str, features: list[int]) -> dict:
    """Counts and mean scores of this explainer's explanations of ``features``."""
    cols = ("detection", "fuzzing", "detection_random", "fuzzing_random")
    rows = store.con.execute(
        f"SELECT feature, {', '.join(cols)}, n_unparsed, scored FROM explanations WHERE explainer = ?", (label,)
    ).fetchall()
    chosen = set(features)
    rows = [r for r in rows if r[0] in chosen]
    means = {}
    for j, c in enumerate(cols, 1):
        vals = [r[j] for r in rows if r[j] is not None]
        means[c] = round(float(np.mean(vals)), 4) if vals else None
    return {
        "explainer": label,
        "features": len(features),
        "explained": len(rows),
        "scored": sum(r[6] is not None for r in rows),
        "unparsed_contexts": sum(r[5] or 0 for r in rows),
        "mean": means,
    }
