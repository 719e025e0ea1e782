"""Seeded evaluation of one policy on one mission, every agent driven by the policy under test.

Episode i of (seed, mission) always uses the same map seed, so every policy meets the same maps. Policies
with `step_batch` step all agents of several concurrent episodes in one call; DAF policies reseed their
per-row streams at each episode start, so results do not depend on how many episodes run at once.
Others fall back to mettagrid's per-agent `AgentPolicy.step`.

`run_episodes` is DAF's one episode loop for a policy under test: `evaluate` and `evaluate_policy` run
through it, and so does the smoke episode of bundle validation (daf.packaging.sandbox), which watches the
policy's actions with an `ActionTally`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
from mettagrid.config.mettagrid_config import MettaGridConfig
from mettagrid.policy.policy import MultiAgentPolicy, PolicySpec
from mettagrid.simulator import Action
from mettagrid.simulator.simulator import Simulation

from daf.events import EpisodesProgress, ProgressFn
from daf.interrupts import raise_if_stop_requested, stop_at_safe_points
from daf.missions import get_mission, with_map_seed
from daf.policies.base import DAFPolicy
from daf.policies.registry import check_spec, load_policy
from daf.policies.rng import row_seeds
from daf.simulation import EpisodeOutcome, SimBatch, env_interface, episode_seed


@dataclass
class EvaluationResult:
    policy_name: str
    class_path: str
    data_path: str | None
    mission: str
    seed: int
    episodes: list[EpisodeOutcome]
    wall_time_s: float
    agent_steps: int
    # Actions the policy chose that are no action id of the mission (mettagrid steps on without a word): a policy
    # emitting them is broken, whatever its reward says.
    invalid_actions: int = 0

    @property
    def rewards(self) -> list[float]:
        """Per-episode total reward (sum over agents)."""
        return [e.total_reward for e in self.episodes]

    @property
    def agent_steps_per_second(self) -> float:
        return self.agent_steps / self.wall_time_s if self.wall_time_s > 0 else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "rewards": self.rewards}

    @classmethod
    def from_dict(cls, data: dict) -> EvaluationResult:
        data = {k: v for k, v in data.items() if k != "rewards"}
        data["episodes"] = [EpisodeOutcome(**e) for e in data["episodes"]]
        return cls(**data)


def has_batch_path(policy: MultiAgentPolicy) -> bool:
    return type(policy).step_batch is not MultiAgentPolicy.step_batch


@dataclass
class ActionTally:
    """What a policy chose over the episodes it was watched in: how many actions, how many of them noops or not an
    action of the mission at all (an id out of range, a name it does not have), and its slowest decision (one
    `step_batch` call, or one agent's `step`). Evidence that a policy acts at all, and acts validly."""

    action_names: list[str]
    actions: int = 0
    noops: int = 0
    invalid: int = 0
    slowest_step_s: float = 0.0
    _noop_index: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._noop_index = self.action_names.index("noop") if "noop" in self.action_names else -1

    def batch_step(self, seconds: float, actions: np.ndarray) -> None:
        """One `step_batch` call that chose `actions` (action indices) for the agents of running episodes."""
        self.slowest_step_s = max(self.slowest_step_s, seconds)
        self.actions += len(actions)
        self.noops += int(np.sum(actions == self._noop_index))
        self.invalid += int(np.sum((actions < 0) | (actions >= len(self.action_names))))

    def agent_step(self, seconds: float, action: Action) -> None:
        """One agent's `step` that chose `action`."""
        self.slowest_step_s = max(self.slowest_step_s, seconds)
        self.actions += 1
        self.noops += action.name == "noop"
        self.invalid += action.name not in self.action_names


def evaluate(
    policy_spec: PolicySpec,
    mission: str,
    episodes: int,
    seed: int = 42,
    *,
    policy_name: str | None = None,
    device: str = "cpu",
    concurrent_episodes: int = 8,
    progress: ProgressFn | None = None,
) -> EvaluationResult:
    """Load the policy `policy_spec` names (checked first: class importable, data file present) and evaluate it
    as `evaluate_policy` does; the result is labelled with the spec's name, class path and data path."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if concurrent_episodes < 1:
        raise ValueError(f"concurrent_episodes must be >= 1, got {concurrent_episodes}")
    check_spec(policy_spec)
    config = get_mission(mission)
    policy = load_policy(policy_spec, env_interface([config]), device=device)
    result = evaluate_policy(
        policy, mission, episodes, seed, concurrent_episodes=concurrent_episodes, progress=progress
    )
    result.policy_name = policy_name or policy_spec.name
    result.class_path = policy_spec.class_path
    result.data_path = policy_spec.data_path
    return result


def evaluate_policy(
    policy: MultiAgentPolicy,
    mission: str,
    episodes: int,
    seed: int = 42,
    *,
    concurrent_episodes: int = 8,
    progress: ProgressFn | None = None,
) -> EvaluationResult:
    """Run `episodes` seeded episodes of `mission` with every agent driven by `policy`, an instance already loaded
    (e.g. a network mid-training); nothing is checked or loaded here. The result is labelled with the instance's
    class, and has no data path."""
    config = get_mission(mission)
    seeds = [episode_seed(seed, mission, i) for i in range(episodes)]
    tally = ActionTally(env_interface([config]).all_action_names)
    start = time.perf_counter()
    outcomes = run_episodes(
        policy, config, seeds, concurrent_episodes=concurrent_episodes, progress=progress, tally=tally
    )
    wall = time.perf_counter() - start
    cls = type(policy)
    return EvaluationResult(
        policy_name=cls.__name__,
        class_path=f"{cls.__module__}.{cls.__qualname__}",
        data_path=None,
        mission=mission,
        seed=seed,
        episodes=outcomes,
        wall_time_s=wall,
        agent_steps=sum(o.steps * len(o.agent_rewards) for o in outcomes),
        invalid_actions=tally.invalid,
    )


def run_episodes(
    policy: MultiAgentPolicy,
    config: MettaGridConfig,
    seeds: list[int],
    *,
    max_steps: int | None = None,
    concurrent_episodes: int = 8,
    progress: ProgressFn | None = None,
    tally: ActionTally | None = None,
) -> list[EpisodeOutcome]:
    """One episode of `config` per seed (its map and the policy's streams seeded by it), every agent driven by the
    already-loaded `policy`; outcomes in seed order. `max_steps` ends each episode early (on a copy of `config`);
    `tally`, when given, counts the actions the policy chose and times its decisions."""
    if max_steps is not None:
        config = config.model_copy(deep=True)
        config.game.max_steps = max_steps
    with stop_at_safe_points():  # a stop signal ends the episodes at their next step (daf/interrupts.py)
        if has_batch_path(policy):
            return _run_batched(policy, config, seeds, concurrent_episodes, progress, tally)
        return _run_per_agent(policy, config, seeds, progress, tally)


def _run_batched(
    policy: MultiAgentPolicy,
    config: MettaGridConfig,
    seeds: list[int],
    concurrent: int,
    progress: ProgressFn | None,
    tally: ActionTally | None,
) -> list[EpisodeOutcome]:
    num_slots = min(concurrent, len(seeds))
    batch = SimBatch([config] * num_slots)
    outcomes: dict[int, EpisodeOutcome] = {}
    slot_episode: dict[int, int] = {}
    next_episode = 0

    def start(slot: int) -> None:
        nonlocal next_episode
        ep = next_episode
        next_episode += 1
        slot_episode[slot] = ep
        batch.start(slot, seeds[ep])
        if isinstance(policy, DAFPolicy):
            rows = np.arange(batch.rows[slot].start, batch.rows[slot].stop)
            policy.reset_rows(rows, row_seeds(seeds[ep], len(rows)))

    try:
        for slot in range(num_slots):
            start(slot)
        while slot_episode:
            raise_if_stop_requested()
            started = time.perf_counter()
            policy.step_batch(batch.observations, batch.actions)
            if tally is not None:  # the rows of finished slots hold actions nobody takes: not counted
                chosen = np.concatenate([batch.actions[batch.rows[slot]] for slot in slot_episode])
                tally.batch_step(time.perf_counter() - started, chosen)
            active = list(slot_episode)
            batch.step(active)
            for slot in active:
                if batch.is_done(slot):
                    outcomes[slot_episode.pop(slot)] = batch.outcome(slot)
                    if progress:
                        progress(EpisodesProgress(len(outcomes), len(seeds)))
                    if next_episode < len(seeds):
                        start(slot)
                    else:
                        batch.close_slot(slot)
    finally:
        batch.close()
    return [outcomes[i] for i in range(len(seeds))]


def _run_per_agent(
    policy: MultiAgentPolicy,
    config: MettaGridConfig,
    seeds: list[int],
    progress: ProgressFn | None,
    tally: ActionTally | None,
) -> list[EpisodeOutcome]:
    outcomes = []
    agents = [policy.agent_policy(i) for i in range(config.game.num_agents)]
    for i, ep_seed in enumerate(seeds):
        sim = Simulation(with_map_seed(config, ep_seed), seed=ep_seed)
        for agent in agents:
            agent.reset()
        try:
            while not sim.is_done():
                raise_if_stop_requested()
                for agent_id, obs in enumerate(sim.observations()):
                    started = time.perf_counter()
                    action = agents[agent_id].step(obs)
                    if tally is not None:
                        tally.agent_step(time.perf_counter() - started, action)
                    sim.agent(agent_id).set_action(action)
                sim.step()
            outcomes.append(EpisodeOutcome.from_simulation(sim, ep_seed))
        finally:
            sim.close()
        if progress:
            progress(EpisodesProgress(i + 1, len(seeds)))
    return outcomes
