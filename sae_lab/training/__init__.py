"""Training: config, per-step math, the sweep trainer, checkpoints, metrics and the run directory."""

from sae_lab.rundir import RunDir, RunDirError
from sae_lab.training.checkpoint import CheckpointError, load_checkpoint, load_latest
from sae_lab.training.config import TrainConfig, WandbConfig
from sae_lab.training.step import train_step
from sae_lab.training.sweep import NonFiniteError, StepInfo
from sae_lab.training.trainer import SAEResult, SweepResult, train_sweep

__all__ = [
    "CheckpointError",
    "NonFiniteError",
    "RunDir",
    "RunDirError",
    "SAEResult",
    "StepInfo",
    "SweepResult",
    "TrainConfig",
    "WandbConfig",
    "load_checkpoint",
    "load_latest",
    "train_step",
    "train_sweep",
]
