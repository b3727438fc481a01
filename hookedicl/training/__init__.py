"""Training: typed config, the loop (with activation capture), checkpoints, run directories."""

from .config import CaptureConfig, CheckpointConfig, EvalConfig, LogConfig, ModelConfig, OptimConfig, TaskConfig, TrainConfig
from .recorder import ActivationRecorder, ActivationStore, resolve_hooks
from .run import Run, RunLockedError
from .trainer import TrainingDiverged, icl_loss, train

__all__ = [
    "ActivationRecorder", "ActivationStore", "CaptureConfig", "CheckpointConfig", "EvalConfig", "LogConfig",
    "ModelConfig", "OptimConfig", "Run", "RunLockedError", "TaskConfig", "TrainConfig", "TrainingDiverged",
    "icl_loss", "resolve_hooks", "train",
]
