"""Reading mettagrid's token observations: (packed location, feature id, value) triples, 0xFF = empty."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.simulator import AgentObservation

EMPTY_LOCATION = 0xFF
GLOBAL_LOCATION = 0xFE

# Move action names and the (row, col) step they take.
MOVES: dict[str, tuple[int, int]] = {
    "move_north": (-1, 0),
    "move_south": (1, 0),
    "move_west": (0, -1),
    "move_east": (0, 1),
}


@dataclass(frozen=True)
class ObsLayout:
    """Feature ids and geometry of one environment's observations."""

    num_tokens: int
    token_dim: int
    height: int
    width: int
    num_features: int
    tag_feature: int
    feature_names: dict[int, str]  # feature id -> name ("tag", "inv:heart", ...)
    type_names: dict[int, str]  # tag value -> object type name ("wall", "heart_source", ...)
    inventory_features: dict[str, int]  # resource -> feature id of "inv:<resource>"
    action_names: tuple[str, ...]

    @classmethod
    def from_env(cls, pei: PolicyEnvInterface) -> ObsLayout:
        by_name = {f.name: f.id for f in pei.obs_features}
        types = {
            tid: name.removeprefix("type:") for tid, name in pei.tag_id_to_name.items() if name.startswith("type:")
        }
        inventory = {name[4:]: fid for name, fid in by_name.items() if name.startswith("inv:") and name.count(":") == 1}
        return cls(
            num_tokens=pei.observation_shape[0],
            token_dim=pei.observation_shape[1],
            height=pei.obs_height,
            width=pei.obs_width,
            num_features=max(by_name.values()) + 1,
            tag_feature=by_name["tag"],
            feature_names={fid: name for name, fid in by_name.items()},
            type_names=types,
            inventory_features=inventory,
            action_names=tuple(pei.all_action_names),
        )

    @property
    def center(self) -> tuple[int, int]:
        return self.height // 2, self.width // 2

    def action_index(self, name: str) -> int:
        return self.action_names.index(name)


def agent_observation_array(obs: AgentObservation, num_tokens: int) -> np.ndarray:
    """The raw (num_tokens, 3) uint8 array behind a per-agent observation object."""
    arr = np.full((num_tokens, 3), EMPTY_LOCATION, dtype=np.uint8)
    for i, token in enumerate(obs.tokens[:num_tokens]):
        arr[i] = token.raw_token
    return arr


def unpack_locations(loc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of packed location bytes (high nibble row, low nibble column)."""
    return loc >> 4, loc & 0x0F


# Networks see features and object types by *name*, so one network serves every mission whatever ids a
# mission assigns. The lists are append-only: a checkpoint records VOCABULARY_VERSION and is refused by a
# network built with another. Names not listed share a few hashed buckets (crc32 is stable across runs).
FEATURE_VOCABULARY: tuple[str, ...] = (
    "agent:group",
    "agent_id",
    "episode_completion_pct",
    "goal",
    "last_action",
    "last_reward",
    "tag",
    "vibe",
    "lp:east",
    "lp:north",
    "lp:south",
    "lp:west",
    "inv:heart",
    "inv:heart:p1",
    "inv:ore",
    "inv:ore:p1",
    "inv:crystal",
    "inv:crystal:p1",
    "protocol_input:heart",
    "protocol_input:ore",
    "protocol_input:crystal",
    "protocol_output:heart",
    "protocol_output:ore",
    "protocol_output:crystal",
)
TYPE_VOCABULARY: tuple[str, ...] = (
    "agent",
    "wall",
    "heart_source",
    "assembler",
    "chest",
    "ore_extractor",
    "crystal_extractor",
)
UNKNOWN_BUCKETS = 8
VOCABULARY_VERSION = 1


def vocabulary_index(name: str, vocabulary: tuple[str, ...]) -> int:
    """Stable index of a name: its place in the vocabulary, else one of UNKNOWN_BUCKETS hashed slots."""
    if name in vocabulary:
        return vocabulary.index(name)
    return len(vocabulary) + zlib.crc32(name.encode()) % UNKNOWN_BUCKETS


def trim_padding(obs: torch.Tensor) -> torch.Tensor:
    """`obs[..., :used, :]` where `used` is the most tokens any observation of the batch holds.

    mettagrid packs an observation's tokens first and pads the rest with EMPTY_LOCATION; a training batch
    holds ~50 real tokens of 500, so everything downstream (copies, gathers, the embedding) shrinks ~10x.
    Reads the tensor (a host sync on a GPU), so callers on a GPU do it once per batch, not per step.
    """
    if not obs.numel():
        return obs
    locations = obs[..., 0].reshape(-1, obs.shape[-2])
    if obs.device.type == "cpu":  # numpy's strided compare takes half torch's time (this runs every acting step)
        used = int((locations.numpy() != EMPTY_LOCATION).any(0).sum())
    else:
        used = int((locations != EMPTY_LOCATION).any(0).sum())
    return obs[..., : max(used, 1), :]
