"""Where the trainer's rollouts come from: collected when asked for (CleanRL's loop), or one update ahead.

With `ahead` (DAFTrainingConfig.overlap_update), the next rollout is collected in a background thread while the
caller runs the PPO update on the one it was just given: acting overlaps the update instead of waiting for it,
and so does stepping in env workers (mettagrid holds Python's GIL while it steps, so stepping in the learner's
process does not overlap). The background rollout acts with a copy of the weights from before
that update, so every rollout but the first is one update stale (the policy lag of asynchronous PPO); the
update corrects for it (daf.training.update: decoupled PPO). Two buffers alternate; the second starts where the
first's rollout ended (each row's done flag and recurrent state).

Results do not depend on timing: the thread acts with its own weights and its own random stream, and the caller's
update draws from another, so the same seed gives the same weights every run.
"""

from __future__ import annotations

import copy
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import nn

from daf.training.rollout import RolloutBuffer
from daf.vecenv import BlockStepping


class Collector:
    """The run's rollout buffers (two with `ahead`) and, with `ahead`, the thread that fills the next one."""

    def __init__(
        self,
        envs: BlockStepping,
        net: nn.Module,
        num_steps: int,
        bptt_horizon: int,
        device: torch.device,
        generator: torch.Generator,
        ahead: bool,
    ):
        self.envs, self.generator, self.ahead = envs, generator, ahead
        self.buffers = [RolloutBuffer(envs, net, num_steps, bptt_horizon, device) for _ in range(2 if ahead else 1)]
        self.batch_size = self.buffers[0].batch_size
        # The weights the background rollout acts with: the update changes `net` in place meanwhile.
        self._acting = copy.deepcopy(net) if ahead else None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="daf-rollout") if ahead else None
        self._pending: tuple[RolloutBuffer, Future[torch.Tensor]] | None = None  # the buffer being filled
        self._stop = threading.Event()
        self._turn = 0

    def next(self, net: nn.Module, more: bool) -> tuple[RolloutBuffer, torch.Tensor]:
        """The next rollout and the value its advantages bootstrap from. With `ahead` and `more` (another rollout
        will be asked for), the one after it starts collecting now with `net`'s current weights; the caller may
        then update `net` while it runs."""
        if self._pending is None:
            buffer = self.buffers[self._turn]
            value = buffer.collect(self.envs, net, self.generator)
        else:
            (buffer, future), self._pending = self._pending, None
            value = future.result()
        if self.ahead and more:
            self._turn = 1 - self._turn
            following = self.buffers[self._turn]
            following.continue_from(buffer)
            following.stale = True
            self._acting.load_state_dict(net.state_dict())
            future = self._thread.submit(following.collect, self.envs, self._acting, self.generator, self._stop)
            self._pending = (following, future)
        return buffer, value

    def close(self) -> None:
        """Stop a background rollout (within one step) and wait for it, so the environments can close; any error
        of a rollout nobody will read is dropped with it."""
        if self._thread is None:
            return
        self._stop.set()
        if self._pending is not None:
            try:
                self._pending[1].result()
            except Exception:  # noqa: BLE001 - CollectionStopped, or an error nobody reads: the run ends on its own
                pass
            self._pending = None
        self._thread.shutdown(wait=True)
