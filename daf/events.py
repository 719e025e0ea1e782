"""Progress events: what long work reports while it runs, as data rather than as text to be parsed.

The core (training, evaluation, sweeps) calls a `ProgressFn` with these. The task and flow layers forward each one
as a log record: its message is the event's `message()` (what the Prefect UI and log files show) and the event
itself rides along in the record's `daf_event` attribute, which is all the CLI's progress display reads. Rewording
a message therefore changes no progress bar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The attribute of a logging.LogRecord that carries the event (set through `extra=`).
LOG_RECORD_FIELD = "daf_event"


@dataclass(frozen=True)
class TrainingProgress:
    """After a PPO update: agent-steps done of the run's total, throughput, the mean reward of recent episodes."""

    step: int
    total_steps: int
    agent_steps_per_second: float
    episode_reward: float | None

    @property
    def reward_text(self) -> str:
        """The reward as shown: 4 significant digits, `n/a` before any episode ended."""
        return "n/a" if self.episode_reward is None else f"{self.episode_reward:.4g}"

    def message(self) -> str:
        return (
            f"step {self.step}/{self.total_steps}  {self.agent_steps_per_second:.0f} agent-steps/s  "
            f"episode reward {self.reward_text}"
        )


@dataclass(frozen=True)
class EpisodesProgress:
    """Within one evaluation: episodes finished of those asked for."""

    done: int
    total: int

    def message(self) -> str:
        return f"{self.done}/{self.total} episodes"


@dataclass(frozen=True)
class TrialFinished:
    """A sweep trial reached a final state; `completed` counts the study's complete trials, of `total` wanted."""

    number: int
    state: str
    value: float | None
    completed: int
    total: int
    params: dict[str, Any] = field(default_factory=dict)

    def message(self) -> str:
        return f"trial {self.number} {self.state} value={self.value} ({self.completed}/{self.total})"


@dataclass(frozen=True)
class EvaluationFinished:
    """One (policy, mission) evaluation of a pipeline ended: `completed` of `total`, each of `episodes` episodes;
    `reused` when its result came from the cache of an earlier run."""

    policy: str
    mission: str
    episodes: int
    completed: int
    total: int
    reused: bool = False

    def message(self) -> str:
        how = " (cached result reused)" if self.reused else ""
        return f"evaluation {self.completed}/{self.total} done: {self.policy} on {self.mission}{how}"


@dataclass(frozen=True)
class StageNote:
    """A one-line fact about the run worth showing beside the bars (a flow run started, a cached result reused)."""

    text: str

    def message(self) -> str:
        return self.text


ProgressEvent = TrainingProgress | EpisodesProgress | TrialFinished | EvaluationFinished | StageNote
ProgressFn = Callable[[ProgressEvent], None]
