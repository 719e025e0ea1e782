"""TensorBoard event files next to metrics.jsonl: `<run_dir>/tensorboard/`, the same per-update records.

`tensorboard --logdir <checkpoint_dir>` shows every run under it as its own run (a sweep's trials are runs under
`<sweep>/checkpoints/`). Tags follow CleanRL's (`charts/...`, `losses/...`), so curves read as researchers are used
to. A run that resumes from a checkpoint purges the events written after it, as truncate_metrics does for the
JSON log; a run that starts over removes its old events. torch's SummaryWriter is the writer (it needs the
`tensorboard` package); it is imported when a run starts, not when DAF is.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"
# metrics.jsonl key -> TensorBoard tag
TAGS = {
    "episode_reward": "charts/episode_reward",
    "shaped_episode_reward": "charts/shaped_episode_reward",
    "sps": "charts/SPS",
    "lr": "charts/learning_rate",
    "ent_coef": "charts/ent_coef",
    "policy_loss": "losses/policy_loss",
    "value_loss": "losses/value_loss",
    "entropy": "losses/entropy",
    "approx_kl": "losses/approx_kl",
    "clipfrac": "losses/clipfrac",
    "explained_variance": "losses/explained_variance",
}
FLUSH_S = 10  # SummaryWriter's default is 120 s: a live `tensorboard` would lag two minutes behind training


class TensorBoardLog:
    """Writes each update's record as scalars at its agent-step; `resumed_from` is the checkpoint's step, or None
    for a run that starts from scratch."""

    def __init__(self, run_dir: Path, resumed_from: int | None):
        from torch.utils.tensorboard import SummaryWriter

        log_dir = run_dir / TENSORBOARD_DIR
        if resumed_from is None:
            shutil.rmtree(log_dir, ignore_errors=True)
        purge = None if resumed_from is None else resumed_from + 1
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge, flush_secs=FLUSH_S)

    def write(self, record: dict[str, Any]) -> None:
        for key, tag in TAGS.items():
            value = record.get(key)
            if key.endswith("episode_reward") and not record.get("episodes"):
                continue  # no episode ended in this update: the log repeats the last mean, a curve must not
            if value is not None and math.isfinite(value):
                self._writer.add_scalar(tag, value, record["step"])

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
