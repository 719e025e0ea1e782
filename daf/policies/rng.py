"""Per-row random streams, so a row's actions depend only on its own episode seed.

numpy's Generator is one stream per object; evaluation steps many episodes in one batch and must give the
same actions whether episodes run one at a time or together. A vectorised splitmix64 (a few integer ops)
gives every row its own stream at no per-row Python cost.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def row_seeds(episode_seed: int, num_rows: int) -> np.ndarray:
    """Distinct stream seeds for the agents of one episode."""
    base = np.uint64(episode_seed & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        return _mix(base * _GOLDEN + np.arange(1, num_rows + 1, dtype=np.uint64))


class RowRNG:
    """A growable set of independent uint64 streams, one per batch row."""

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._state = np.zeros(0, dtype=np.uint64)

    def ensure(self, num_rows: int) -> None:
        if num_rows > len(self._state):
            extra = row_seeds(self._seed, num_rows)[len(self._state) :]
            self._state = np.concatenate([self._state, extra])

    def reseed(self, rows: np.ndarray, seeds: np.ndarray) -> None:
        self.ensure(int(rows.max()) + 1 if len(rows) else 0)
        self._state[rows] = seeds.astype(np.uint64)

    def uniform(self, rows: np.ndarray) -> np.ndarray:
        self.ensure(int(rows.max()) + 1 if len(rows) else 0)
        with np.errstate(over="ignore"):
            self._state[rows] += _GOLDEN
            z = _mix(self._state[rows].copy())
        return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def integers(self, rows: np.ndarray, high: int) -> np.ndarray:
        return np.minimum((self.uniform(rows) * high).astype(np.int64), high - 1)
