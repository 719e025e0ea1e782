"""The stepping interface the trainer uses, shared by the in-process VecEnv and the EnvWorkerPool.

Rows come in `blocks` (row slices). `send(block, actions)` starts stepping a block, `wait(block)` returns once it
has stepped; in between the learner may act on another block. Observations, `rewards` and `dones` are arrays
over all rows, valid for a block once it has been waited for.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from mettagrid.policy.policy_env_interface import PolicyEnvInterface

from daf.simulation import EpisodeOutcome


class BlockStepping(ABC):
    env_info: PolicyEnvInterface
    blocks: list[slice]
    observations: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray  # 1.0 where a row's next observation starts a new episode
    finished: list[tuple[str, EpisodeOutcome]]

    @property
    @abstractmethod
    def num_rows(self) -> int: ...

    @abstractmethod
    def send(self, block: int, actions: np.ndarray) -> None: ...

    @abstractmethod
    def wait(self, block: int) -> None: ...

    def step(self, actions: np.ndarray) -> np.ndarray:
        """Step every row with `actions`; returns this step's rewards."""
        for block, rows in enumerate(self.blocks):
            self.send(block, actions[rows])
        for block in range(len(self.blocks)):
            self.wait(block)
        return self.rewards.copy()

    @abstractmethod
    def close(self) -> None: ...

    def pop_finished(self) -> list[tuple[str, EpisodeOutcome]]:
        """The (mission, outcome) of every episode finished since the last call, in slot order per step."""
        done, self.finished = self.finished, []
        return done
