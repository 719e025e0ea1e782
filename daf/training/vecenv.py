"""A vector environment for training: slots spread over missions, automatic resets, seeded episodes."""

from __future__ import annotations

import numpy as np

from daf.evaluation import episode_seed
from daf.missions import get_mission
from daf.simulation import EpisodeOutcome, SimBatch, env_interface


class VecEnv:
    """`num_envs` simulations (missions assigned round-robin) over one set of shared buffers."""

    def __init__(self, missions: list[str], num_envs: int, seed: int):
        configs = {m: get_mission(m) for m in missions}
        self.env_info = env_interface(list(configs.values()))
        self.slot_missions = [missions[i % len(missions)] for i in range(num_envs)]
        self.batch = SimBatch([configs[m] for m in self.slot_missions])
        self.seed = seed
        self._episode_counter = [0] * num_envs
        self.dones = np.zeros(self.batch.num_rows, dtype=np.float32)
        self.finished: list[tuple[str, EpisodeOutcome]] = []
        self._all_slots = list(range(num_envs))
        for slot in range(num_envs):
            self._start(slot)

    @property
    def num_rows(self) -> int:
        return self.batch.num_rows

    @property
    def observations(self) -> np.ndarray:
        return self.batch.observations

    def _start(self, slot: int) -> None:
        # Training maps are drawn from a stream disjoint from evaluation's (the slot index is in the key).
        seed = episode_seed(self.seed, f"train/{self.slot_missions[slot]}/{slot}", self._episode_counter[slot])
        self._episode_counter[slot] += 1
        self.batch.start(slot, seed)

    def step(self, actions: np.ndarray) -> np.ndarray:
        """Apply actions; returns this step's rewards. `dones` marks rows whose next observation starts anew."""
        self.batch.actions[:] = actions
        self.batch.step(self._all_slots)
        rewards = self.batch.rewards.copy()
        self.dones[:] = 0.0
        for slot in self.batch.done_slots().tolist():
            self.finished.append((self.slot_missions[slot], self.batch.outcome(slot)))
            self._start(slot)
            self.dones[self.batch.rows[slot]] = 1.0
        return rewards

    def pop_finished(self) -> list[tuple[str, EpisodeOutcome]]:
        done, self.finished = self.finished, []
        return done

    def close(self) -> None:
        self.batch.close()
