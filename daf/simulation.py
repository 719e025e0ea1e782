"""Many mettagrid simulations writing into one preallocated set of numpy buffers.

Both evaluation and training step a batch of episodes at once: each slot is one Simulation whose buffers
are row slices of shared arrays, so a policy sees every agent of every slot in one array without copies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from mettagrid.config.mettagrid_config import MettaGridConfig
from mettagrid.mettagrid_c import (
    dtype_actions,
    dtype_masks,
    dtype_observations,
    dtype_rewards,
    dtype_terminals,
    dtype_truncations,
)
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.simulator.simulator import Buffers, Simulation

from daf.missions import with_map_seed


@dataclass
class EpisodeOutcome:
    """What one finished episode leaves behind (no per-agent Python objects during the episode)."""

    seed: int
    agent_rewards: list[float]
    steps: int
    game_stats: dict[str, float]
    agent_stats: dict[str, float]  # mean over agents

    @property
    def total_reward(self) -> float:
        return float(sum(self.agent_rewards))

    @classmethod
    def from_simulation(cls, sim: Simulation, seed: int) -> EpisodeOutcome:
        stats = sim.episode_stats
        agents = stats["agent"]
        keys = sorted({k for a in agents for k in a})
        return cls(
            seed=seed,
            agent_rewards=[float(x) for x in sim.episode_rewards],
            steps=int(sim.current_step),
            game_stats={k: float(v) for k, v in stats["game"].items()},
            agent_stats={k: float(np.mean([a.get(k, 0.0) for a in agents])) for k in keys},
        )


# Makes a named buffer of a SimBatch or VecEnv: (name, shape, dtype) -> a zeroed array of that shape.
Allocate = Callable[[str, tuple[int, ...], np.dtype], np.ndarray]


def allocate_zeros(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


def episode_seed(seed: int, mission: str, episode: int) -> int:
    """A map/episode seed from (seed, mission, i): stable across processes and Python versions."""
    digest = hashlib.sha256(f"{seed}:{mission}:{episode}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def env_interface(configs: list[MettaGridConfig]) -> PolicyEnvInterface:
    """The shared policy interface of several missions; they must agree on observations and actions."""
    first = PolicyEnvInterface.from_mg_cfg(configs[0])
    for cfg in configs[1:]:
        other = PolicyEnvInterface.from_mg_cfg(cfg)
        if other.observation_shape != first.observation_shape or other.all_action_names != first.all_action_names:
            raise ValueError(
                f"missions {configs[0].label!r} and {cfg.label!r} differ in observation shape or actions; "
                "one policy cannot be trained on both"
            )
    return first


class SimBatch:
    """Slots of simulations over shared buffers; slot i owns rows `rows[i]`.

    `allocate(name, shape, dtype)` makes the buffers the simulations write into: zeroed numpy arrays by default;
    views of shared memory in daf.vecenv's worker processes, which step their slots into the learner's arrays."""

    def __init__(
        self,
        slot_configs: list[MettaGridConfig],
        allocate: Allocate = allocate_zeros,
    ):
        self.configs = slot_configs
        counts = [cfg.game.num_agents for cfg in slot_configs]
        starts = np.concatenate([[0], np.cumsum(counts)])
        self.rows = [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]
        n = int(starts[-1])
        obs_shape = PolicyEnvInterface.from_mg_cfg(slot_configs[0]).observation_shape
        self.observations = allocate("observations", (n, *obs_shape), dtype_observations)
        self.terminals = allocate("terminals", (n,), dtype_terminals)
        self.truncations = allocate("truncations", (n,), dtype_truncations)
        self.rewards = allocate("rewards", (n,), dtype_rewards)
        self.masks = np.ones(n, dtype=dtype_masks)
        self.actions = allocate("actions", (n,), dtype_actions)
        self._teacher = np.zeros(n, dtype=dtype_actions)
        self._vibe = np.zeros(n, dtype=dtype_actions)
        self.sims: list[Simulation | None] = [None] * len(slot_configs)
        self.seeds = [0] * len(slot_configs)
        # Per slot, the bound C++ step when Simulation.step's Python wrapper can be skipped (see `start`).
        self._fast_step: list = [None] * len(slot_configs)
        self._row_starts = starts[:-1].astype(np.intp)

    @property
    def num_rows(self) -> int:
        return len(self.actions)

    def start(self, slot: int, seed: int, config: MettaGridConfig | None = None) -> None:
        """Begin a new episode in `slot` on the map generated from `seed`."""
        if config is not None:
            self.configs[slot] = config
        self.close_slot(slot)
        r = self.rows[slot]
        buffers = Buffers(
            observations=self.observations[r],
            terminals=self.terminals[r],
            truncations=self.truncations[r],
            rewards=self.rewards[r],
            masks=self.masks[r],
            actions=self.actions[r],
            teacher_actions=self._teacher[r],
            vibe_actions=self._vibe[r],
        )
        sim = Simulation(with_map_seed(self.configs[slot], seed), seed=seed, buffers=buffers)
        self.sims[slot] = sim
        self.seeds[slot] = seed
        # Simulation.step wraps the C++ step in stopwatch timers, talk bookkeeping and event-handler calls.
        # With no handlers (none is attached unless the config sets end_episode_on_game_stats) and talk
        # disabled, all of that is a no-op, so the C++ step alone does the same work.
        fast = not sim._event_handlers and not self.configs[slot].game.talk.enabled
        self._fast_step[slot] = sim._c_sim.step if fast else None

    def step(self, slots: list[int]) -> None:
        fast, sims = self._fast_step, self.sims
        for slot in slots:
            step = fast[slot]
            if step is not None:
                step()
            else:
                sims[slot].step()

    def is_done(self, slot: int) -> bool:
        r = self.rows[slot]
        # The simulation's terminals/truncations are these buffers: same test as Simulation.is_done.
        return bool(self.truncations[r].all() or self.terminals[r].all())

    def done_slots(self) -> np.ndarray:
        """Indices of the slots whose episode is over (every agent terminal, or every agent truncated)."""
        done = np.logical_and.reduceat(self.truncations, self._row_starts) | np.logical_and.reduceat(
            self.terminals, self._row_starts
        )
        return np.flatnonzero(done)

    def outcome(self, slot: int) -> EpisodeOutcome:
        return EpisodeOutcome.from_simulation(self.sims[slot], self.seeds[slot])

    def close_slot(self, slot: int) -> None:
        if self.sims[slot] is not None:
            self.sims[slot].close()
            self.sims[slot] = None
            self._fast_step[slot] = None

    def close(self) -> None:
        for slot in range(len(self.sims)):
            self.close_slot(slot)
