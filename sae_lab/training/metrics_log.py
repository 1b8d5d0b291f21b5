"""Metric sinks: metrics.jsonl always; wandb and tensorboard optional, imported only when asked for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from sae_lab.configbase import ConfigError
from sae_lab.fileio import atomic_write_text
from sae_lab.rundir import RunDir
from sae_lab.training.config import TrainConfig


class MetricSink(Protocol):
    def log(self, record: dict) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends one JSON object per line and flushes, so a killed run loses at most the line being written."""

    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "a", encoding="utf-8")

    def log(self, record: dict) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class WandbSink:
    """Logs each SAE's metrics under ``<sae name>/<metric>``, with tokens as the x-axis.

    One wandb run per run directory: its id is kept in run.json (``wandb_id``), so a resumed training
    continues the same wandb run, and records up to ``logged_tokens`` (what wandb already got before the
    interruption) are not sent again."""

    def __init__(self, cfg: TrainConfig, run: RunDir, run_config: dict, logged_tokens: int = 0):
        import wandb  # checked by require_optional_loggers

        w = cfg.wandb
        run_id = run.read_status().get("wandb_id") or _wandb_id(run.path)
        run.write_status(wandb_id=run_id)
        self._skip_through = logged_tokens
        self._run = wandb.init(
            project=w.project,
            entity=w.entity,
            name=w.run_name or run.path.name,
            mode=w.mode,
            dir=str(run.path),
            config=run_config,
            resume="allow",
            id=run_id,
        )

    def log(self, record: dict) -> None:
        if record["tokens"] <= self._skip_through:  # wandb has it from before the interruption
            return
        name = record["sae"]
        values = {f"{name}/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "tokens"}
        self._run.log({"tokens": record["tokens"], **values})

    def close(self) -> None:
        self._run.finish()


def _wandb_id(run_dir: Path) -> str:
    import hashlib

    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]


class TensorboardSink:
    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter  # checked by require_optional_loggers

        self._w = SummaryWriter(log_dir=str(log_dir))

    def log(self, record: dict) -> None:
        for k, v in record.items():
            if isinstance(v, (int, float)) and k not in ("tokens", "step"):
                self._w.add_scalar(f"{record['sae']}/{k}", v, global_step=record["tokens"])

    def close(self) -> None:
        self._w.close()


def require_optional_loggers(cfg: TrainConfig) -> None:
    """Fail before training if a requested optional logger's package is missing."""
    if cfg.wandb is not None:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError(
                "train.wandb is set but the 'wandb' package is not installed: `pip install wandb` "
                "(or `pip install sae-lab[logging]`), or remove train.wandb"
            ) from None
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise ConfigError(
                "train.tensorboard is true but the 'tensorboard' package is not installed: "
                "`pip install tensorboard` (or `pip install sae-lab[logging]`), or set train.tensorboard: false"
            ) from None


class MetricsLogger:
    """Fans records out to every sink. Inactive (writes nothing) on non-main ranks."""

    def __init__(self, run: RunDir, cfg: TrainConfig, run_config: dict, active: bool = True, logged_tokens: int = 0):
        self.sinks: list[MetricSink] = []
        if not active:
            return
        self.sinks.append(JsonlSink(run.metrics_path))  # first: a record in metrics.jsonl was also sent on
        if cfg.wandb is not None:
            self.sinks.append(WandbSink(cfg, run, run_config, logged_tokens))
        if cfg.tensorboard:
            self.sinks.append(TensorboardSink(run.tensorboard_dir))

    def log(self, record: dict) -> None:
        for sink in self.sinks:
            sink.log(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def truncate_metrics(run: RunDir, max_tokens: int) -> int:
    """On resume: drop records logged after the checkpoint (tokens > max_tokens), atomically. Returns the
    tokens of the last record there was (what the other sinks already got; 0 if none)."""
    records = run.metrics()
    if not records:
        return 0
    keep = [r for r in records if r.get("tokens", 0) <= max_tokens]
    atomic_write_text(run.metrics_path, "".join(json.dumps(r) + "\n" for r in keep))
    return max(r.get("tokens", 0) for r in records)
