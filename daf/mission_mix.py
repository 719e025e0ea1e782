"""Which mission each training environment runs: the training mix, a weighted list of missions.

Environments are assigned by smooth weighted round-robin (the nginx upstream algorithm): every mission's credit
grows by its weight at each slot and the slot goes to the mission with the most, which then pays the total. Over
any stretch of slots each mission's share stays within one slot of its weight's, and missions are interleaved
rather than grouped, so each env worker's contiguous share of slots (daf.vecenv.pool) holds the mix as well.
Equal weights give plain round-robin: slot i runs missions[i % len(missions)].
"""

from __future__ import annotations

from collections.abc import Sequence


def assign_missions(missions: Sequence[str], weights: Sequence[float] | None, num_envs: int) -> list[str]:
    """The mission of each of `num_envs` slots; `weights` (one per mission, > 0) default to equal."""
    weights = list(weights) if weights is not None else [1.0] * len(missions)
    if len(weights) != len(missions):
        raise ValueError(
            f"mission_weights has {len(weights)} weights for {len(missions)} missions: give one per mission, in the "
            "order of missions"
        )
    total = sum(weights)
    credit = [0.0] * len(missions)
    slots = []
    for _ in range(num_envs):
        credit = [c + w for c, w in zip(credit, weights)]
        pick = max(range(len(missions)), key=credit.__getitem__)  # the first of equals: round-robin order
        credit[pick] -= total
        slots.append(missions[pick])
    return slots
