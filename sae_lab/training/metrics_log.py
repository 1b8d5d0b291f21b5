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
    """Logs each SAE's metrics under ``<sae name>/<metric>``, with tokens as the x-axis."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, run_config: dict):
        import wandb  # checked by require_optional_loggers

        w = cfg.wandb
        self._run = wandb.init(
            project=w.project, entity=w.entity, name=w.run_name or run_dir.name, mode=w.mode,
            dir=str(run_dir), config=run_config, resume="allow", id=_wandb_id(run_dir),
        )

    def log(self, record: dict) -> None:
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
                "(or `pip install sae-lab[wandb]`), or remove train.wandb"
            ) from None
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise ConfigError(
                "train.tensorboard is true but the 'tensorboard' package is not installed: "
                "`pip install tensorboard` (or `pip install sae-lab[tensorboard]`), or set train.tensorboard: false"
            ) from None


class MetricsLogger:
    """Fans records out to every sink. Inactive (writes nothing) on non-main ranks."""

    def __init__(self, run: RunDir, cfg: TrainConfig, run_config: dict, active: bool = True):
        self.sinks: list[MetricSink] = []
        if not active:
            return
        self.sinks.append(JsonlSink(run.metrics_path))
        if cfg.wandb is not None:
            self.sinks.append(WandbSink(cfg, run.path, run_config))
        if cfg.tensorboard:
            self.sinks.append(TensorboardSink(run.tensorboard_dir))

    def log(self, record: dict) -> None:
        for sink in self.sinks:
            sink.log(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def truncate_metrics(run: RunDir, max_tokens: int) -> None:
    """On resume: drop records logged after the checkpoint (tokens > max_tokens), atomically."""
    if not run.metrics_path.exists():
        return
    keep = [r for r in run.metrics() if r.get("tokens", 0) <= max_tokens]
    atomic_write_text(run.metrics_path, "".join(json.dumps(r) + "\n" for r in keep))
