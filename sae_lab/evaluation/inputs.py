"""What eval and analyze share: the SAEs of a run, the model, compatibility checks, held-out batches, masks."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_lab.activations.masks import outlier_threshold, special_positions
from sae_lab.configbase import ConfigError
from sae_lab.data.packing import iter_contexts
from sae_lab.data.sources import describe_source
from sae_lab.devices import resolve_device
from sae_lab.evaluation.config import HeldOutData
from sae_lab.models import LoadedModel, ModelConfig
from sae_lab.rundir import RunDir
from sae_lab.saeref import SAERef, resolve_saes


class SAEMismatchError(ConfigError):
    """An SAE that does not fit the model (unknown hook, or d_in != the hook's activation width)."""


def run_targets(run: RunDir) -> list[SAERef]:
    """Every trained SAE of ``run``, loaded (on CPU, as saved: applies to raw activations)."""
    refs = resolve_saes(run.path)
    if not refs:
        raise ConfigError(f"run directory '{run.path}' holds no trained SAE under saes/ (has training finished?)")
    for r in refs:
        r.load()  # now: a damaged SAE is named before the model loads
    return refs


def sae_dir_target(sae_dir: str | Path) -> SAERef:
    """A single SAE directory (ours or SAELens format), loaded."""
    d = Path(sae_dir)
    ref = SAERef(d.name, sae_dir=d)
    if not ref.sae.cfg.hook_name:
        raise ConfigError(f"SAE directory '{d}' has no hook_name in cfg.json; cannot tell where it applies")
    return ref


def model_for(run_cfg: dict, model: LoadedModel | None) -> LoadedModel:
    """The explicit model, else the one named in the run's ``model`` section (default: embedded)."""
    if model is not None:
        return model
    return ModelConfig.model_validate(run_cfg.get("model") or {}).load()


def outlier_multiple(cfg: HeldOutData, run_cfg: dict | None) -> float | None:
    if cfg.exclude_outliers == "none":
        return None
    if cfg.exclude_outliers == "run":
        return ((run_cfg or {}).get("activations") or {}).get("exclude_outliers")
    return float(cfg.exclude_outliers)


def activation_widths(model: LoadedModel, hooks: list[str]) -> dict[str, int]:
    """The flattened width of each hook's activation, from a 2-token forward."""
    from sae_lab.activations.generate import ActivationGenerator

    bos = model.tokenizer.bos_token_id if model.tokenizer.bos_token_id is not None else 0
    acts = ActivationGenerator(model, hooks, exclude_special=False).forward(np.array([[bos, bos]]))
    return {h: int(a.shape[-1]) for h, a in acts.items()}


def check_targets(targets: list[SAERef], model: LoadedModel) -> None:
    """Refuse SAEs whose hook is not in the model or whose d_in differs from the hook's width, naming both."""
    known = set(model.hook_names)
    for t in targets:
        if t.hook not in known:
            from difflib import get_close_matches

            close = get_close_matches(t.hook, model.hook_names, n=3, cutoff=0.5)
            raise SAEMismatchError(
                f"SAE '{t.name}' ({t.sae_dir}) reads hook '{t.hook}', which model '{model.name}' does not have"
                f"{'; closest: ' + ', '.join(close) if close else ''}. Evaluate it with the model it was trained on."
            )
    widths = activation_widths(model, sorted({t.hook for t in targets}))
    for t in targets:
        if t.sae.cfg.d_in != widths[t.hook]:
            raise SAEMismatchError(
                f"SAE '{t.name}' ({t.sae_dir}) has d_in={t.sae.cfg.d_in} but hook '{t.hook}' of model "
                f"'{model.name}' has width {widths[t.hook]}. Evaluate it with the model it was trained on."
            )


def place_saes(targets: list[SAERef], cfg: HeldOutData, model: LoadedModel) -> torch.device:
    device = resolve_device(cfg.device, auto=model.device)
    for t in targets:
        t.sae.to(device)
    return device


def iter_batches(
    cfg: HeldOutData, tokenizer, skip_contexts: int = 0, desc: str | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(index of the first context, tokens [b, T]) over the first ``cfg.n_contexts`` held-out contexts.

    With ``desc``, a progress bar (tokens/s, ETA against the requested token count) is shown on stderr.
    """
    stream = itertools.islice(iter_contexts(cfg.data, tokenizer), skip_contexts, cfg.n_contexts)
    start = skip_contexts
    T = cfg.data.context_length
    bar = tqdm(
        total=cfg.n_contexts * T,
        initial=skip_contexts * T,
        unit="tok",
        unit_scale=True,
        desc=desc,
        disable=desc is None,
        dynamic_ncols=True,
    )
    while True:
        chunk = list(itertools.islice(stream, cfg.batch_size))
        if not chunk:
            bar.total = bar.n  # the data held fewer tokens than requested: end the bar at 100%, not short of it
            bar.close()
            return
        yield start, np.stack(chunk)
        start += len(chunk)
        bar.update(len(chunk) * T)


def first_batch(cfg: HeldOutData, tokenizer) -> np.ndarray:
    for _, tokens in iter_batches(cfg, tokenizer):
        return tokens
    raise ConfigError(
        f"data source '{cfg.data.source}' (split '{cfg.data.split}') produced no complete context "
        f"of {cfg.data.context_length} tokens; use more data or a shorter context_length"
    )


def special_mask(tokens: np.ndarray, tokenizer, cfg: HeldOutData) -> np.ndarray:
    return special_positions(tokens, tokenizer, cfg.data.exclude_special)


def outlier_thresholds(
    acts: dict[str, torch.Tensor], special: np.ndarray, multiple: float | None
) -> dict[str, float | None]:
    """Per hook: ``multiple`` x the median ||x|| of non-special positions of the first batch (None: keep all)."""
    out: dict[str, float | None] = {}
    for hook, a in acts.items():
        out[hook] = outlier_threshold(a.norm(dim=-1)[torch.from_numpy(~special)], multiple)
    return out


def first_batch_thresholds(gen, cfg: HeldOutData, multiple: float | None) -> dict[str, float | None]:
    """Outlier thresholds per hook from the first batch (no forward when outliers are kept)."""
    if multiple is None:
        return {h: None for h in gen.hooks}
    first = first_batch(cfg, gen.model.tokenizer)
    return outlier_thresholds(gen.forward(first), special_mask(first, gen.model.tokenizer, cfg), multiple)


def data_record(
    cfg: HeldOutData, multiple: float | None, thresholds: dict, n_contexts: int, n_tokens: int, n_used: dict[str, int]
) -> dict:
    """What eval.json / the DB record about the data, so numbers are comparable across runs."""
    return {
        "data": describe_source(cfg.data),
        "n_contexts": n_contexts,
        "n_tokens": n_tokens,
        "context_length": cfg.data.context_length,
        "exclude_special": cfg.data.exclude_special,
        "exclude_outliers_multiple": multiple,
        "outlier_thresholds": thresholds,
        "tokens_used": n_used,
    }
