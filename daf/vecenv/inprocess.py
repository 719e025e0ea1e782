"""The vector environment stepped in the learner's process: slots spread over missions, automatic resets, seeded
episodes.

It is also what each env worker process runs over its own slots (daf.vecenv.pool), which is why it can own a
subset of a run's slots (`slots`, numbered as in the whole run, so that every slot's maps come from the same seeds
wherever it is stepped) and write into buffers it is given (`allocate`).
"""

from __future__ import annotations

import numpy as np
from mettagrid.config.mettagrid_config import MettaGridConfig

from daf.mission_mix import assign_missions
from daf.missions import get_mission
from daf.simulation import EpisodeOutcome, SimBatch, allocate_zeros, env_interface, episode_seed
from daf.vecenv._blocks import BlockStepping


class VecEnv(BlockStepping):
    """`num_envs` simulations (missions assigned by daf.mission_mix) over one set of buffers, stepped here.

    The stepping interface the trainer uses is the same as the worker pool's: rows come in `blocks` (one here);
    `send(block, actions)` steps a block, `wait(block)` returns once it has stepped (at once here)."""

    def __init__(
        self,
        missions: list[str],
        num_envs: int,
        seed: int,
        *,
        weights: list[float] | None = None,
        slots: range | None = None,
        configs: dict[str, MettaGridConfig] | None = None,
        allocate=allocate_zeros,
    ):
        configs = configs or {m: get_mission(m) for m in missions}
        self.env_info = env_interface(list(configs.values()))
        self.slots = slots if slots is not None else range(num_envs)
        mix = assign_missions(missions, weights, num_envs)
        self.slot_missions = [mix[i] for i in self.slots]
        self.batch = SimBatch([configs[m] for m in self.slot_missions], allocate)
        self.seed = seed
        self._episode_counter = [0] * len(self.slots)
        self.dones = allocate("dones", (self.batch.num_rows,), np.float32)
        self.rewards = allocate("step_rewards", (self.batch.num_rows,), np.float32)
        self.finished: list[tuple[str, EpisodeOutcome]] = []
        self.blocks = [slice(0, self.batch.num_rows)]
        for slot in range(len(self.slots)):
            self._start(slot)

    @property
    def num_rows(self) -> int:
        return self.batch.num_rows

    @property
    def observations(self) -> np.ndarray:
        return self.batch.observations

    def _start(self, slot: int) -> None:
        # Training maps are drawn from a stream disjoint from evaluation's (the slot index is in the key).
        global_slot = self.slots[slot]
        seed = episode_seed(self.seed, f"train/{self.slot_missions[slot]}/{global_slot}", self._episode_counter[slot])
        self._episode_counter[slot] += 1
        self.batch.start(slot, seed)

    def step_slots(self, first: int, stop: int) -> None:
        """Step slots first..stop-1 (this object's numbering) with the actions in their rows; their rows' `rewards`
        and `dones` then hold this step's (`dones` marks rows whose next observation starts a new episode)."""
        rows = slice(self.batch.rows[first].start, self.batch.rows[stop - 1].stop)
        self.batch.step(range(first, stop))
        self.rewards[rows] = self.batch.rewards[rows]  # before a restart reuses the buffer
        self.dones[rows] = 0.0
        for slot in self.batch.done_slots().tolist():  # only stepped slots can have ended
            self.finished.append((self.slot_missions[slot], self.batch.outcome(slot)))
            self._start(slot)
            self.dones[self.batch.rows[slot]] = 1.0

    def send(self, block: int, actions: np.ndarray) -> None:
        self.batch.actions[self.blocks[block]] = actions
        self.step_slots(0, len(self.slots))

    def wait(self, block: int) -> None:
        """Stepped already (in `send`)."""

    def close(self) -> None:
        self.batch.close()
