"""The run config and the steps that turn it into a run directory: cache → train (→ eval → analyze).

A run config is one YAML file::

    run_dir: runs/my-sweep
    model: {name: embedded}
    data: {source: embedded, context_length: 128}
    activations: {hooks: [blocks.15.hook_resid_post]}
    cache: {path: caches/my-cache}        # or `cache: null` to stream from the model
    train: {total_tokens: 500000, batch_size: 1024}
    saes: [{architecture: topk, expansion_factor: 4, k: 32}, ...]

``d_in`` and ``hook_name`` of each SAE default to those of the activation source.

Several hooks in one run (sparsify's ``--hookpoints``): ``activations.hooks`` lists them or globs them
(``[blocks.*.hook_resid_post]``, ``[blocks.[3-6].hook_resid_post]``); the run trains on all of them (or on
``hook:``, a name, list or glob among them) in one pass over the data, and each ``saes:`` entry without its own
``hook_name`` becomes one SAE per hook, named ``NAME.HOOK`` (e.g. ``topk_k32.blocks.3.hook_resid_post``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SerializeAsAny, ValidationError, model_validator

from sae_lab.activations.config import ActivationConfig, CacheConfig
from sae_lab.activations.hooks import expand_hooks, is_pattern
from sae_lab.activations.source import ActivationSource, hook_parts
from sae_lab.configbase import ConfigError, StrictModel, build_config, format_validation_error
from sae_lab.data.config import DataConfig
from sae_lab.distributed import world
from sae_lab.evaluation.config import AnalyzeConfig, EvalConfig
from sae_lab.models import LoadedModel, ModelConfig
from sae_lab.saes.config import SAEConfig
from sae_lab.training.config import TrainConfig


def _sae_entry(value: Any) -> Any:
    """A `saes:` entry validated as its architecture's config, so errors name that architecture's keys."""
    if not isinstance(value, dict):
        return value
    cls = SAEConfig.config_class_for(value)
    try:
        return cls.model_validate(value)
    except ValidationError as e:
        raise ValueError("; ".join(line[4:] for line in format_validation_error(e, cls).splitlines()[1:])) from None


# one entry of `saes:`: the config class of its `architecture` (SerializeAsAny: dumped with all its fields)
SAEEntry = Annotated[SerializeAsAny[SAEConfig], BeforeValidator(_sae_entry)]


class CacheSection(StrictModel):
    """Where the run's activation cache lives (built by `sae-lab cache` / `sae-lab run`)."""

    path: str = Field(..., description="activation cache directory")
    storage_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    shard_contexts: int = Field(128, ge=1)
    buffer_tokens: int = Field(1 << 17, ge=1, description="shuffle window of the reader, in tokens")
    verify: Literal["none", "quick", "full"] = Field("full", description="check shard SHA-256s before training")


class RunConfig(StrictModel):
    """A whole experiment: the data and model, the cache, the SAEs of the sweep and how to train them."""

    run_dir: str = Field(..., description="the run directory (resumed if it exists with the same config)")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    activations: ActivationConfig = Field(default_factory=ActivationConfig)
    cache: CacheSection | None = Field(None, description="null: stream activations from the model")
    hook: str | list[str] | None = Field(
        None,
        description="the hook(s) to train on, among activations.hooks: a name, a list or globs "
        "(default: every hook of activations.hooks); with several, each saes entry without a hook_name trains one "
        "SAE per hook, named NAME.HOOK",
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    saes: list[SAEEntry] = Field(
        ..., min_length=1, description="SAE configs (each its architecture's); d_in and hook_name default from the data"
    )
    eval: EvalConfig = Field(default_factory=EvalConfig, description="held-out evaluation (sae-lab eval)")
    analyze: AnalyzeConfig = Field(default_factory=AnalyzeConfig, description="feature database (sae-lab analyze)")

    @property
    def train_hooks(self) -> list[str]:
        """The hooks the run trains on (after :func:`resolve_hooks` has expanded any globs)."""
        if self.hook is None:
            return list(self.activations.hooks)
        return [self.hook] if isinstance(self.hook, str) else list(self.hook)

    @model_validator(mode="after")
    def _one_hook_for_gradients(self) -> "RunConfig":
        several = len(self.activations.hooks) > 1 or is_pattern(self.activations.hooks[0])
        if _needs_gradients(self) and (isinstance(self.hook, list) or (self.hook is None and several)):
            raise ValueError(
                "an SAE with selection: gradient (g-SAE) trains from a gradient stream of one hook; set hook: to "
                "one hook name (or train the g-SAEs of other hooks in runs of their own)"
            )
        return self

    @model_validator(mode="after")
    def _gradients_need_a_stream(self) -> "RunConfig":
        if self.cache is not None and _needs_gradients(self):
            raise ValueError(
                "an SAE with selection: gradient (g-SAE) trains on the LM loss's gradient at each row, "
                "which a cache does not store; set cache: null to train from a live stream with "
                "gradients (BENCHMARKS.md, section 'g-SAE', gives its cost)"
            )
        return self

    def cache_config(self) -> CacheConfig:
        """The `sae-lab cache` config implied by this run."""
        if self.cache is None:
            raise ConfigError("this run streams activations (cache: null); there is no cache to build")
        return CacheConfig(
            model=self.model,
            data=self.data,
            activations=self.activations,
            output=self.cache.path,
            storage_dtype=self.cache.storage_dtype,
            shard_contexts=self.cache.shard_contexts,
        )


def resolve_hooks(cfg: RunConfig, available: list[str]) -> RunConfig:
    """``cfg`` with the globs of ``activations.hooks`` expanded against ``available`` (the model's hook names, or a
    cache's hooks) and ``hook`` set to the list of hooks to train on: globs match among ``activations.hooks``; a
    name must be one of them, or, in a run on a cache, one of ``available``."""
    acts = cfg.activations.expanded(available)
    hooks = expand_hooks(cfg.train_hooks if cfg.hook is not None else acts.hooks, acts.hooks, "hook")
    allowed = set(acts.hooks) | (set(available) if cfg.cache is not None else set())
    missing = [h for h in hooks if h not in allowed]
    if missing:
        where = f"the run's activations.hooks ({', '.join(acts.hooks)})"
        if cfg.cache is not None:
            where += f" nor the hooks of the cache ({', '.join(available)})"
        raise ConfigError(
            f"hook: '{', '.join(missing)}' is not among {where}; add it to activations.hooks or train on one of those"
        )
    return cfg.model_copy(update={"activations": acts, "hook": hooks})


def sae_configs(cfg: RunConfig, widths: int | dict[str, int]) -> list[SAEConfig]:
    """The sweep's SAE configs with d_in and hook_name filled in where left open. ``widths``: d_in of each hook of
    the source (or one d_in for all). With several hooks, an entry without a hook_name becomes one SAE per hook,
    named NAME.HOOK."""
    hooks = cfg.train_hooks
    out = []
    for i, sae in enumerate(cfg.saes):
        own = [sae.hook_name] if sae.hook_name else hooks
        for hook in own:
            # a hook the source lacks: any width; training's checks name the hook
            d_in = widths if isinstance(widths, int) else widths.get(hook, next(iter(widths.values())))
            entry = sae if len(own) == 1 else sae.model_copy(update={"name": f"{sae.name}.{hook}"})
            try:
                out.append(entry.bind(d_in, hook))
            except ValidationError as e:
                raise ConfigError(format_validation_error(e, type(sae), f"saes.{i}")) from None
    return out


def open_source(cfg: RunConfig, model: LoadedModel | None = None) -> ActivationSource:
    """The run's ActivationSource for its hooks (resolved: :func:`resolve_hooks`): the cache (which must exist and
    be sound) or a live stream. Several hooks come side by side in each batch (``hook_parts``)."""
    hooks = cfg.train_hooks
    hook = hooks[0] if len(hooks) == 1 else hooks
    if cfg.cache is not None:
        from sae_lab.activations.cache_reader import ActivationCache

        cache = ActivationCache(cfg.cache.path, verify=cfg.cache.verify)
        return cache.source(hook, buffer_tokens=cfg.cache.buffer_tokens)
    from sae_lab.activations.grad_stream import GradientStreamingSource
    from sae_lab.activations.stream import StreamingSource

    model = model or cfg.model.load()
    stream = GradientStreamingSource if _needs_gradients(cfg) else StreamingSource  # g-SAE: also dL/dx
    return stream(model, cfg.data, cfg.activations, hook)


def _needs_gradients(cfg: RunConfig) -> bool:
    """Whether an SAE of the sweep selects latents with the LM loss's gradient (TopK's ``selection: gradient``)."""
    return any(getattr(s, "selection", None) == "gradient" for s in cfg.saes)


_IDENTITY_PATHS = {
    "model_name": ("model", "name"),
    "model_dtype": ("model", "dtype"),
    "storage_dtype": ("cache", "storage_dtype"),
    "shard_contexts": ("cache", "shard_contexts"),
    "normalize": ("activations", "normalize"),
    "norm_sample_contexts": ("activations", "norm_sample_contexts"),
    "exclude_outliers": ("activations", "exclude_outliers"),
}


def _config_path(identity_key: str) -> tuple[str, ...] | None:
    """Where an identity field lives in a RunConfig (None for derived fields such as data.files)."""
    if identity_key.startswith("data."):
        field = identity_key.split(".")[1]
        return ("data", field) if field in DataConfig.model_fields else None
    return _IDENTITY_PATHS.get(identity_key)


def _explicit(cfg: RunConfig, path: tuple[str, ...]) -> bool:
    node = cfg
    for part in path:
        if node is None or part not in node.model_fields_set:
            return False
        node = getattr(node, part)
    return True


def align_with_cache(cfg: RunConfig, manifest: dict) -> RunConfig:
    """The run config with the cache's settings filled in; the cache's manifest is the source of truth.

    A setting the run config leaves at its default takes the cache's value (so config.yaml records what was
    used); one it sets explicitly to something else is refused, naming the field. The model's weights hash is
    checked when the cache is built; the hooks only need to include the run's hook (checked when it opens).
    """
    from sae_lab.activations.cache_writer import cache_identity, identity_differences

    recorded = manifest.get("identity") or {}
    expected = cache_identity(cfg.cache_config(), None)
    diff = identity_differences(expected, recorded, skip=("hooks", "model_weights_sha256"))
    keys = [d.split(":")[0] for d in diff]
    conflicts = [d for d, k in zip(diff, keys) if _config_path(k) is None or _explicit(cfg, _config_path(k))]
    if conflicts:
        raise ConfigError(
            f"the run config does not match the activation cache '{cfg.cache.path}':\n  "
            + "\n  ".join(conflicts[:12])
            + "\nMake the run config say what the cache was made with (or leave those keys out), or "
            "point cache.path at a new directory to build a matching cache (`sae-lab run` builds it)."
        )
    if not keys:
        return cfg
    data = cfg.model_dump(mode="json", exclude_unset=True)
    flat = _flatten_identity(recorded)
    for k in keys:
        section, field = _config_path(k)
        data.setdefault(section, {})[field] = flat[k] if k in flat else None
    if "model_name" in keys and "model" in data:  # the cache records a resolved path for local models
        data["model"]["name"] = recorded.get("model_name", data["model"].get("name"))
    return build_config(RunConfig, data, where="the run config aligned with its cache")


def _flatten_identity(identity: dict) -> dict:
    out = {}
    for k, v in identity.items():
        if isinstance(v, dict):
            out.update({f"{k}.{k2}": v2 for k2, v2 in v.items()})
        else:
            out[k] = v
    return out


def build_cache_for(cfg: RunConfig, model: LoadedModel | None = None) -> dict | None:
    """Create or resume the run's cache (no-op for a streaming run)."""
    if cfg.cache is None:
        return None
    from sae_lab.activations.cache_writer import build_cache

    return build_cache(cfg.cache_config(), model=model)


def train_run(
    cfg: RunConfig,
    resume: str = "auto",
    overwrite: bool = False,
    model: LoadedModel | None = None,
    config_path: str | Path | None = None,
    callbacks=(),
):
    """Train the sweep of ``cfg`` into ``cfg.run_dir``; returns the trainer's SweepResult. ``config_path`` (the
    user's config file) is protected from ``overwrite``; ``callbacks`` are train_sweep's (called after each step)."""
    from sae_lab.training import train_sweep

    if cfg.cache is not None:
        from sae_lab.activations.cache_format import read_manifest

        manifest = read_manifest(Path(cfg.cache.path))
        cfg = resolve_hooks(align_with_cache(cfg, manifest), list(manifest["hooks"]))
    else:
        model = model or cfg.model.load()
        cfg = resolve_hooks(cfg, model.hook_names)
    source = open_source(cfg, model)
    saes = sae_configs(cfg, {h: p.d_in for h, p in hook_parts(source).items()})
    extra = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in ("train", "saes", "run_dir")}
    return train_sweep(
        saes,
        source,
        cfg.train,
        Path(cfg.run_dir),
        resume=resume,
        overwrite=overwrite,
        extra_config=extra,
        config_path=config_path,
        callbacks=callbacks,
    )


def run_all(cfg: RunConfig, resume: str = "auto", overwrite: bool = False, report=print, config_path=None) -> dict:
    """The main job: build/resume the cache, train the sweep, then evaluate and analyse every SAE."""
    from sae_lab.evaluation import analyze_run, evaluate_run

    model = cfg.model.load()
    cfg = resolve_hooks(cfg, model.hook_names)  # globs -> the model's hook names
    report(f"[1/4] activations of {', '.join(cfg.train_hooks)}: {_where(cfg)}")
    build_cache_for(cfg, model)
    n_saes = sum(1 if s.hook_name else len(cfg.train_hooks) for s in cfg.saes)
    report(f"[2/4] training {n_saes} SAE(s) into {cfg.run_dir}")
    result = train_run(cfg, resume=resume, overwrite=overwrite, model=model, config_path=config_path)
    if world()[0] != 0:  # under torchrun: the ranks cached and trained together; rank 0 evaluates and analyses
        return {"train": result}
    report(f"[3/4] evaluating on {cfg.eval.n_tokens} held-out tokens")
    summary = evaluate_run(cfg.run_dir, cfg.eval, model)
    report(format_eval_table(summary))
    report(f"[4/4] analysing features on {cfg.analyze.n_tokens} tokens into feature databases")
    analysis = analyze_run(cfg.run_dir, cfg.analyze, model)
    for name, path in analysis.get("databases", {}).items():
        report(f"  {name:>24}: {path}")
    report(f"done. Browse, compare, ablate and steer these features in the dashboard:\n  {dashboard_hint(cfg.run_dir)}")
    return {"train": result, "eval": summary, "analyze": analysis}


def _where(cfg: RunConfig) -> str:
    return f"cache {cfg.cache.path}" if cfg.cache else "streaming from the model"


def dashboard_hint(run_dir: str | Path) -> str:
    """The command that opens the dashboard on ``run_dir`` (shell-quoted)."""
    import shlex

    return f"sae-lab dashboard {shlex.quote(str(run_dir))}"


def format_eval_table(summary: dict) -> str:
    """A plain-text table of the headline metrics of every SAE in an eval summary, both eval definitions."""
    cols = [
        ("fvu", "FVU", ".4f"),
        ("l0_mean", "L0", ".1f"),
        ("train_l0", "train L0", ".1f"),
        ("dead_fraction", "dead", ".3f"),
        ("loss_recovered_zero", "CE rec(0)", ".3f"),
        ("loss_recovered_mean", "CE rec(mean)", ".3f"),
        ("kl_sae", "KL", ".4f"),
        ("saelens_ce_loss_score", "SL CE score", ".3f"),
        ("saelens_kl_div_score", "SL KL score", ".3f"),
        ("saelens_kl_div_with_sae", "SL KL", ".4f"),
    ]
    lines = ["  " + f"{'sae':>24} " + " ".join(f"{h:>12}" for _, h, _ in cols)]
    for name, m in summary["saes"].items():
        cells = [format(m[k], f) if isinstance(m.get(k), (int, float)) else "-" for k, _, f in cols]
        lines.append("  " + f"{name:>24} " + " ".join(f"{c:>12}" for c in cells))
    if any("saelens_ce_loss_score" in m for m in summary["saes"].values()):
        lines.append(EVAL_TABLE_NOTE)
    return "\n".join(lines)


EVAL_TABLE_NOTE = (
    "  CE rec(0), CE rec(mean), KL: sae-lab's definitions: the SAE spliced and the hook ablated only at the kept\n"
    "    positions (not BOS/EOS/pad, not norm outliers), CE and KL averaged over every next-token prediction.\n"
    "  SL *: SAELens's (sae_lens.evals ce_loss_score, kl_div_score, kl_div_with_sae): the SAE spliced at every\n"
    "    non-special position (outliers too), the hook zeroed at every position, averages over non-special positions."
)
