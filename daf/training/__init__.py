"""DAF's trainer: PPO over a batched mettagrid vector environment, with resumable checkpoints.

- ppo: `train()`, the loop, one named step per line (CleanRL's layout)
- rollout: rollout storage, collecting a rollout, advantages (GAE)
- update: the PPO update (losses, minibatches, optimizer)
- validation: what refuses a training request, and when
- process_state: the process-wide settings a run changes, scoped to it; the run's own random streams
- checkpoints, metrics, curves, tensorboard: run directories and checkpoints, metrics.jsonl, the learning-curve
  PNG, the same records as TensorBoard events
The vector environment it steps (in process or in env worker processes) is daf.vecenv.
"""

from daf.training.ppo import StopTraining, TrainingResult, train
from daf.training.validation import TrainingError, validate_training_config

__all__ = ["StopTraining", "TrainingError", "TrainingResult", "train", "validate_training_config"]
