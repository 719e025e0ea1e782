"""A training run and the process it runs in: the process-wide torch settings it changes, scoped to the run, and
the run's own random streams, so that it neither moves nor reads torch's, numpy's or Python's global RNGs.

Prefect's default task runner runs tasks in threads of one process, and a notebook or test that calls `train()`
keeps its process afterwards: both must find the process as they left it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def process_settings_scope(device: torch.device, gpu_memory_fraction: float) -> Iterator[None]:
    """Leave torch's intra-op thread count (changed by each rollout and update) and, on CUDA, the process's GPU
    memory cap (set to `gpu_memory_fraction` for the run) as they were."""
    threads = torch.get_num_threads()
    memory_cap = torch.cuda.get_per_process_memory_fraction(device) if device.type == "cuda" else None
    try:
        if memory_cap is not None:
            torch.cuda.set_per_process_memory_fraction(gpu_memory_fraction, device)
        yield
    finally:
        torch.set_num_threads(threads)
        if memory_cap is not None:
            torch.cuda.set_per_process_memory_fraction(memory_cap, device)


def thread_counts(device: torch.device, torch_threads: int | None, overlap_update: bool) -> tuple[int, int]:
    """Torch threads for (the rollout, the update).

    The rollout acts on a few dozen rows per step: one thread (more only add fork/join cost and fight the
    environment stepping for cores). The update's minibatches are large enough to use every core: on 2 cores
    2 threads made the update 1.3x (MLP) to 1.4x (LSTM) faster than 1 (bench/training_throughput.py). With
    `overlap_update` the rollout runs during the update and keeps a core busy (acting, and stepping in process):
    the update gets the others, and the two counts are one (torch's setting is process-wide)."""
    cores = len(os.sched_getaffinity(0))
    if overlap_update:
        threads = torch_threads or max(1, cores - 1)
        return threads, threads
    rollout = 1 if device.type == "cpu" else torch.get_num_threads()
    return rollout, torch_threads or cores


class RunGenerators:
    """The run's random streams, seeded from the config's seed: action sampling and minibatch order draw from
    `sampling`, never from torch's global generator, which every other run in this process shares.

    `cpu` is the stream a checkpoint saves (trainer_state.pt's `torch_rng`) and a resume restores. On CPU it is
    the sampling stream; on CUDA sampling draws from a CUDA stream that, as in the checkpoints DAF has always
    written, starts from the seed again on resume. Seeded alike, a generator gives exactly the numbers the global
    one gave after `torch.manual_seed(seed)`, which is how DAF seeded runs before: results are unchanged. Nothing
    in a run draws from numpy's or Python's global RNG (maps and episodes are seeded by
    daf.evaluation.episode_seed, initial weights by the policy's seed), so those are not seeded either.
    """

    def __init__(self, seed: int, device: torch.device, separate_acting: bool = False):
        self.seed = seed
        self.cpu = torch.Generator().manual_seed(seed)
        self.sampling = self.cpu if device.type == "cpu" else torch.Generator(device).manual_seed(seed)
        # With overlap_update a background thread samples actions while the update draws minibatch orders: two
        # streams, so neither's draws depend on the threads' timing.
        self.acting = torch.Generator(device).manual_seed(self._acting_seed(0)) if separate_acting else self.sampling

    def resume(self, torch_rng: torch.Tensor, update: int) -> None:
        """Continue from a checkpoint taken after `update`: its saved stream, and a separate acting stream drawn
        afresh from the seed and the update (its position when the checkpoint was taken depends on how far the
        background rollout had got)."""
        self.cpu.set_state(torch_rng)
        if self.acting is not self.sampling:
            self.acting.manual_seed(self._acting_seed(update))

    def _acting_seed(self, update: int) -> int:
        return int(np.random.SeedSequence([self.seed, 1, update]).generate_state(1)[0])
