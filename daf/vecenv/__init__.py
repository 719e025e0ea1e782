"""The trainer's vector environment: in the learner's process (`VecEnv`) or in worker processes overlapped with
inference (`EnvWorkerPool`), behind one stepping interface.

Neither imports torch: the worker processes stay small and start in well under a second.
"""

from mettagrid.config.mettagrid_config import MettaGridConfig

from daf.vecenv._blocks import BlockStepping
from daf.vecenv.inprocess import VecEnv
from daf.vecenv.pool import EnvWorkerError, EnvWorkerPool


def make_vecenv(
    missions: list[str],
    num_envs: int,
    seed: int,
    num_workers: int = 0,
    overlap: bool = True,
    weights: list[float] | None = None,
    configs: dict[str, MettaGridConfig] | None = None,
) -> BlockStepping:
    """In-process stepping for `num_workers` 0, else a pool of that many worker processes; `weights` mix the
    missions (daf.mission_mix); `configs` are the missions' games (default: each mission as daf.missions builds
    it)."""
    if num_workers == 0:
        return VecEnv(missions, num_envs, seed, weights=weights, configs=configs)
    return EnvWorkerPool(missions, num_envs, seed, num_workers, overlap, weights, configs)


__all__ = ["BlockStepping", "EnvWorkerError", "EnvWorkerPool", "VecEnv", "make_vecenv"]
