"""DAF's trainer: PPO over a batched mettagrid vector environment, with resumable checkpoints."""

from daf.training.ppo import StopTraining, TrainingError, TrainingResult, train, validate_training_config

__all__ = ["StopTraining", "TrainingError", "TrainingResult", "train", "validate_training_config"]
