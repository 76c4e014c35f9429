"""Training: the configuration, losses, the resumable (distributed) loop."""

from equipath.training.config import DataConfig, TrainConfig
from equipath.training.losses import LOSSES, build_loss
from equipath.training.trainer import TrainResult, plateau_scheduler, train

__all__ = ["TrainConfig", "DataConfig", "train", "TrainResult", "plateau_scheduler", "build_loss", "LOSSES"]
