"""Policies without learning: seeded random, noop, and the scripted `baseline`."""

from __future__ import annotations

from typing import Any

import numpy as np
from mettagrid.policy.policy_env_interface import PolicyEnvInterface

from daf.policies.base import DAFPolicy
from daf.policies.tokens import EMPTY_LOCATION, GLOBAL_LOCATION, MOVES, unpack_locations


class RandomPolicy(DAFPolicy):
    """Uniform over noop and the four moves, from the row's seeded stream (mettagrid's random is unseeded)."""

    def __init__(self, policy_env_info: PolicyEnvInterface, device: str = "cpu", seed: int = 0, **kwargs: Any):
        super().__init__(policy_env_info, device=device, seed=seed)
        names = ["noop", *MOVES]
        self._choices = np.array([self.layout.action_index(n) for n in names if n in self.layout.action_names])

    def act(self, rows: np.ndarray, observations: np.ndarray) -> np.ndarray:
        return self._choices[self.rng.integers(rows, len(self._choices))]


class NoopPolicy(DAFPolicy):
    def act(self, rows: np.ndarray, observations: np.ndarray) -> np.ndarray:
        return np.full(len(rows), self.layout.action_index("noop"), dtype=np.int64)


class BaselinePolicy(DAFPolicy):
    """Walks to the nearest visible object it needs next in the mission's chain (see daf.missions).

    Needs: a heart goes to a `chest` when the mission has one; holding every extractor resource goes to the
    `assembler`; otherwise the nearest `heart_source` or extractor of a missing resource. With nothing in
    view it explores, keeping a heading until blocked. A little seeded noise breaks oscillations behind walls.
    """

    explore_turn_p = 0.1
    noise_p = 0.1

    def __init__(self, policy_env_info: PolicyEnvInterface, device: str = "cpu", seed: int = 0, **kwargs: Any):
        super().__init__(policy_env_info, device=device, seed=seed)
        layout = self.layout
        self._type_of = layout.type_names
        self._resources = sorted(
            n.removesuffix("_extractor") for n in self._type_of.values() if n.endswith("_extractor")
        )
        self._has_chest = "chest" in self._type_of.values()
        self._move_names = [m for m in MOVES if m in layout.action_names]
        self._move_ids = np.array([layout.action_index(m) for m in self._move_names])
        self._move_deltas = np.array([MOVES[m] for m in self._move_names])
        self._heading = np.zeros(0, dtype=np.int64)

    def reset_rows(self, rows: np.ndarray, seeds: np.ndarray) -> None:
        super().reset_rows(rows, seeds)
        self._ensure(rows)
        self._heading[rows] = self.rng.integers(rows, len(self._move_ids))

    def _ensure(self, rows: np.ndarray) -> None:
        need = int(rows.max()) + 1 if len(rows) else 0
        if need > len(self._heading):
            self._heading = np.concatenate([self._heading, np.zeros(need - len(self._heading), dtype=np.int64)])

    def _targets(self, inventory: dict[str, int]) -> set[str]:
        if self._has_chest and inventory.get("heart", 0) > 0:
            return {"chest"}
        if self._resources and all(inventory.get(r, 0) > 0 for r in self._resources):
            return {"assembler"}
        return {"heart_source"} | {f"{r}_extractor" for r in self._resources if inventory.get(r, 0) == 0}

    def act(self, rows: np.ndarray, observations: np.ndarray) -> np.ndarray:
        self._ensure(rows)
        noise = self.rng.uniform(rows)
        turn = self.rng.uniform(rows)
        random_move = self.rng.integers(rows, len(self._move_ids))
        actions = np.empty(len(rows), dtype=np.int64)
        for i, row in enumerate(rows):
            actions[i] = self._act_one(int(row), observations[i], noise[i], turn[i], int(random_move[i]))
        return actions

    def _act_one(self, row: int, obs: np.ndarray, noise: float, turn: float, random_move: int) -> int:
        layout = self.layout
        loc = obs[:, 0]
        spatial = (loc != EMPTY_LOCATION) & (loc != GLOBAL_LOCATION)
        r, c = unpack_locations(loc.astype(np.int64))
        cr, cc = layout.center
        at_self = spatial & (r == cr) & (c == cc)
        inventory = {
            res: int(obs[at_self & (obs[:, 1] == fid), 2].sum()) for res, fid in layout.inventory_features.items()
        }
        is_tag = spatial & (obs[:, 1] == layout.tag_feature) & ~at_self
        objects = [
            (int(rr), int(cc_), self._type_of.get(int(v), ""))
            for rr, cc_, v in zip(r[is_tag], c[is_tag], obs[is_tag, 2])
        ]
        occupied = {(rr - cr, cc_ - cc) for rr, cc_, _ in objects}
        free = [k for k, (dr, dc) in enumerate(self._move_deltas) if (dr, dc) not in occupied]

        targets = self._targets(inventory)
        goals = [(rr - cr, cc_ - cc) for rr, cc_, name in objects if name in targets]
        if goals and noise >= self.noise_p:
            gr, gc = min(goals, key=lambda g: (abs(g[0]) + abs(g[1]), g))
            best, best_dist = None, None
            for k, (dr, dc) in enumerate(self._move_deltas):
                nr, nc = dr, dc
                dist = abs(gr - nr) + abs(gc - nc)
                if (nr, nc) == (gr, gc):
                    return int(self._move_ids[k])  # step into the target: that uses it
                if k in free and (best_dist is None or dist < best_dist):
                    best, best_dist = k, dist
            if best is not None and best_dist < abs(gr) + abs(gc):
                return int(self._move_ids[best])
        # Explore: keep heading while the way is free, otherwise (or now and then) turn.
        heading = int(self._heading[row])
        if heading not in free or turn < self.explore_turn_p or noise < self.noise_p:
            heading = free[random_move % len(free)] if free else random_move
            self._heading[row] = heading
        return int(self._move_ids[heading])
