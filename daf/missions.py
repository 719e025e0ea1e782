"""Named missions: a ladder of mettagrid games from 'walk into a source' to 'craft and deposit'.

Conventions every mission follows (the `baseline` policy relies on them):
- `heart_source`: walking into it gives the agent one heart.
- `<resource>_extractor`: walking into it gives one `<resource>` (an agent carries at most one of each).
- `assembler`: walking into it while carrying one of every extractor resource turns them into one heart.
- `chest`: walking into it while carrying a heart deposits it; only deposited hearts score in chest missions.
Reward is the goal only: hearts held (or deposited, in chest missions); nothing a random walk can farm
without reaching the goal. Vibe and attack actions are off.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from mettagrid.builder import building
from mettagrid.config.filter.resource_filter import actorHas
from mettagrid.config.game_value import InventoryValue, StatValue
from mettagrid.config.handler_config import Handler
from mettagrid.config.mettagrid_config import (
    ActionsConfig,
    AgentConfig,
    ChangeVibeActionConfig,
    GameConfig,
    GridObjectConfig,
    InventoryConfig,
    MettaGridConfig,
    MoveActionConfig,
    NoopActionConfig,
    ResourceLimitsConfig,
)
from mettagrid.config.mutation.resource_mutation import updateActor
from mettagrid.config.mutation.stats_mutation import logActorAgentStat
from mettagrid.config.reward_config import reward
from mettagrid.map_builder.random_map import RandomMapBuilder
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daf.config import MAX_SEED, ConfigError, format_validation_error, read_yaml_mapping
from daf.errors import InputError
from daf.suggestions import did_you_mean

DEPOSIT_STAT = "heart.deposited"


class UnknownMissionError(InputError, ValueError):
    pass


# Bounds on any mission, named or from a file. mettagrid loops forever placing more agents and objects than a
# random map has free cells, and allocates whatever map it is given.
MAX_MAP_SIDE = 256
MAX_AGENTS = 256
MAX_EPISODE_STEPS = 100_000


class MissionOverrides(BaseModel):
    """What a `base:` mission file or `get_mission(name, **overrides)` may change, typed and bounded."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    num_agents: int = Field(default=None, ge=1, le=MAX_AGENTS)
    width: int = Field(default=None, ge=3, le=MAX_MAP_SIDE)
    height: int = Field(default=None, ge=3, le=MAX_MAP_SIDE)
    max_steps: int = Field(default=None, ge=1, le=MAX_EPISODE_STEPS)
    objects: dict[str, Annotated[int, Field(ge=0, le=MAX_MAP_SIDE**2)]] = None
    walls: int = Field(default=None, ge=0, le=MAX_MAP_SIDE**2)
    seed: int = Field(default=None, ge=0, le=MAX_SEED)


@dataclass(frozen=True)
class MissionSpec:
    """The documented rules of a mission; `build` turns them into a mettagrid config."""

    name: str
    description: str
    num_agents: int
    width: int
    height: int
    max_steps: int
    objects: dict[str, int]
    resources: tuple[str, ...] = ()  # extractor resources the assembler needs, one of each
    chest_scoring: bool = False
    walls: int = 0

    @property
    def reward_rule(self) -> str:
        if self.chest_scoring:
            return "+1 per heart deposited into a chest"
        return "+1 per heart obtained"

    def build(self, **overrides: Any) -> MettaGridConfig:
        try:
            overrides = MissionOverrides.model_validate(overrides).model_dump(exclude_unset=True)
        except ValidationError as exc:
            raise UnknownMissionError(format_validation_error(exc, f"mission {self.name}", MissionOverrides)) from None
        num_agents = overrides.get("num_agents", self.num_agents)
        objects = dict(overrides.get("objects", self.objects))
        walls = overrides.get("walls", self.walls)
        if walls:
            objects["wall"] = walls
        return _build_game(
            label=self.name,
            num_agents=num_agents,
            width=overrides.get("width", self.width),
            height=overrides.get("height", self.height),
            max_steps=overrides.get("max_steps", self.max_steps),
            map_objects=objects,
            resources=self.resources,
            chest_scoring=self.chest_scoring,
            seed=overrides.get("seed", 0),
        )


def _object_configs(resources: tuple[str, ...], chest_scoring: bool) -> dict[str, Any]:
    objects: dict[str, Any] = {"wall": building.wall}
    objects["heart_source"] = GridObjectConfig(
        name="heart_source", on_use_handler=Handler(mutations=[updateActor({"heart": 1})])
    )
    for res in resources:
        objects[f"{res}_extractor"] = GridObjectConfig(
            name=f"{res}_extractor", on_use_handler=Handler(mutations=[updateActor({res: 1})])
        )
    if resources:
        objects["assembler"] = GridObjectConfig(
            name="assembler",
            on_use_handler=Handler(
                filters=[actorHas(dict.fromkeys(resources, 1))],
                mutations=[updateActor({**{r: -1 for r in resources}, "heart": 1})],
            ),
        )
    if chest_scoring:
        objects["chest"] = GridObjectConfig(
            name="chest",
            on_use_handler=Handler(
                filters=[actorHas({"heart": 1})],
                mutations=[updateActor({"heart": -1}), logActorAgentStat(DEPOSIT_STAT)],
            ),
        )
    return objects


def _build_game(
    *,
    label: str,
    num_agents: int,
    width: int,
    height: int,
    max_steps: int,
    map_objects: dict[str, int],
    resources: tuple[str, ...],
    chest_scoring: bool,
    seed: int,
) -> MettaGridConfig:
    resource_names = ["heart", *resources]
    limits = {r: ResourceLimitsConfig(base=1, resources=[r]) for r in resources}
    if chest_scoring:
        # Carry one heart at a time so scoring needs the round trip to the chest.
        limits["heart"] = ResourceLimitsConfig(base=1, resources=["heart"])
        rewards = {"deposited": reward(StatValue(name=DEPOSIT_STAT))}
    else:
        rewards = {"heart": reward(InventoryValue(item="heart"))}
    game = GameConfig(
        num_agents=num_agents,
        max_steps=max_steps,
        resource_names=resource_names,
        objects=_object_configs(resources, chest_scoring),
        actions=ActionsConfig(
            noop=NoopActionConfig(), move=MoveActionConfig(), change_vibe=ChangeVibeActionConfig(enabled=False)
        ),
        agent=AgentConfig(rewards=rewards, inventory=InventoryConfig(default_limit=255, limits=limits)),
        map_builder=RandomMapBuilder.Config(
            width=width, height=height, agents=num_agents, objects=map_objects, border_width=1, seed=seed
        ),
    )
    return MettaGridConfig(label=label, game=game)


_LADDER: list[MissionSpec] = [
    MissionSpec(
        "training_facility_1",
        "Open room with many heart sources: walk into a source to get a heart.",
        num_agents=4,
        width=11,
        height=11,
        max_steps=120,
        objects={"heart_source": 4},
    ),
    MissionSpec(
        "training_facility_2",
        "Larger room, fewer sources and scattered walls: find a source, keep using it.",
        num_agents=4,
        width=17,
        height=17,
        max_steps=200,
        objects={"heart_source": 3},
        walls=20,
    ),
    MissionSpec(
        "assembler_1",
        "Carry ore from an extractor to the assembler, which turns it into a heart.",
        num_agents=4,
        width=13,
        height=13,
        max_steps=200,
        objects={"ore_extractor": 2, "assembler": 2},
        resources=("ore",),
    ),
    MissionSpec(
        "assembler_2",
        "Two resource types: the assembler needs one ore and one crystal for each heart.",
        num_agents=4,
        width=15,
        height=15,
        max_steps=250,
        objects={"ore_extractor": 2, "crystal_extractor": 2, "assembler": 2},
        resources=("ore", "crystal"),
    ),
    MissionSpec(
        "assembly_line_chest",
        "Bigger map, more agents: craft hearts from ore and crystal; only hearts deposited into a chest score.",
        num_agents=8,
        width=25,
        height=25,
        max_steps=400,
        objects={"ore_extractor": 3, "crystal_extractor": 3, "assembler": 3, "chest": 2},
        resources=("ore", "crystal"),
        chest_scoring=True,
        walls=40,
    ),
    MissionSpec(
        "sparse_exploration",
        "Exploration: a large map cluttered with walls and only two heart sources.",
        num_agents=2,
        width=31,
        height=31,
        max_steps=300,
        objects={"heart_source": 2},
        walls=220,
    ),
]
MISSIONS: dict[str, MissionSpec] = {m.name: m for m in _LADDER}


def list_missions() -> list[str]:
    return list(MISSIONS)


def mission_spec(name: str) -> MissionSpec:
    try:
        return MISSIONS[name]
    except KeyError:
        raise UnknownMissionError(
            f"unknown mission {name!r}.{did_you_mean(name, MISSIONS)} Known missions: {', '.join(MISSIONS)} "
            "(or a path to a mission YAML file)"
        ) from None


def get_mission(name: str, **overrides: Any) -> MettaGridConfig:
    """A fresh mettagrid config for a named mission or a mission YAML file, with optional overrides; checked to
    be within bounds and placeable before mettagrid sees it."""
    if name.endswith((".yaml", ".yml")):
        cfg = load_mission_file(name, **overrides)
    else:
        cfg = mission_spec(name).build(**overrides)
    check_mission_fits(cfg, name)
    return cfg


def check_mission_fits(cfg: MettaGridConfig, name: str) -> None:
    """Agents, map size and episode length within bounds, and a random map's agents and objects within its
    free cells (mettagrid would otherwise search for a free cell forever)."""
    game = cfg.game
    if not 1 <= game.num_agents <= MAX_AGENTS:
        raise UnknownMissionError(f"mission {name}: num_agents {game.num_agents} is outside 1..{MAX_AGENTS}")
    if not 1 <= game.max_steps <= MAX_EPISODE_STEPS:
        raise UnknownMissionError(f"mission {name}: max_steps {game.max_steps} is outside 1..{MAX_EPISODE_STEPS}")
    builder = game.map_builder
    width, height = getattr(builder, "width", None), getattr(builder, "height", None)
    for side, value in (("width", width), ("height", height)):
        if isinstance(value, int) and not 1 <= value <= MAX_MAP_SIDE:
            raise UnknownMissionError(f"mission {name}: map {side} {value} is outside 1..{MAX_MAP_SIDE}")
    if isinstance(builder, RandomMapBuilder.Config):
        border = builder.border_width
        free = max(0, width - 2 * border) * max(0, height - 2 * border)
        agents = builder.agents if isinstance(builder.agents, int) else sum(builder.agents.values())
        placed = agents + sum(builder.objects.values())
        if placed > free:
            raise UnknownMissionError(
                f"mission {name}: {agents} agents and {placed - agents} objects do not fit the {width}x{height} "
                f"map's {free} free cells (border {border})"
            )


def load_mission_file(path: str | Path, **overrides: Any) -> MettaGridConfig:
    """A YAML mission: either `base: <mission>` plus overrides, or a full mettagrid config (`game: ...`)."""
    path = Path(path)
    if not path.is_file():
        raise UnknownMissionError(f"mission file {path} not found")
    try:
        data = read_yaml_mapping(path, "mission")
    except ConfigError as exc:
        raise UnknownMissionError(f"mission file {exc}") from None
    if "base" in data:
        base = data.pop("base")
        return mission_spec(base).build(**{**data, **overrides})
    if "game" in data:
        if overrides:
            raise ValueError(f"mission file {path}: overrides apply only to `base:` missions")
        return MettaGridConfig.model_validate(_resolve_builder_types(data, f"mission file {path}"))
    raise UnknownMissionError(f"mission file {path}: needs `base: <mission name>` or a full mettagrid `game:` section")


# mettagrid's map builders and scenes take `type: <dotted name>` and import whatever it names (mettagrid's
# load_symbol, which even runs a Jupyter notebook it finds on sys.path). A mission file is data: DAF resolves each
# dotted `type` itself, only to a class defined in these packages of mettagrid, and hands mettagrid the class.
BUILDER_PACKAGES = ("mettagrid.map_builder", "mettagrid.mapgen")


def _resolve_builder_types(data: Any, where: str, at: str = "") -> Any:
    """A copy of `data` whose dotted `type:` strings are replaced by the mettagrid builder classes they name;
    raises UnknownMissionError for any other dotted name, before anything is imported for it."""
    if isinstance(data, list):
        return [_resolve_builder_types(v, where, f"{at}[{i}]") for i, v in enumerate(data)]
    if not isinstance(data, dict):
        return data
    resolved = {k: _resolve_builder_types(v, where, f"{at}.{k}" if at else str(k)) for k, v in data.items()}
    name = resolved.get("type")
    if isinstance(name, str) and "." in name:
        resolved["type"] = _builder_class(name, where, f"{at}.type" if at else "type")
    return resolved


def _builder_class(name: str, where: str, at: str) -> type:
    refused = UnknownMissionError(
        f"{where}: {at}: {name!r} is not a mettagrid map builder or scene class; a mission file may name classes "
        f"of {', '.join(p + '.*' for p in BUILDER_PACKAGES)} only"
    )
    if not name.startswith(tuple(p + "." for p in BUILDER_PACKAGES)) or "__main__" in name.split("."):
        raise refused
    # The longest prefix that is a module of mettagrid's own source tree, then attributes (`Builder.Config`).
    # find_spec imports only the parent packages, which are mettagrid's; the module itself is imported once found.
    parts = name.split(".")
    for split in range(len(parts) - 1, 1, -1):
        module_name = ".".join(parts[:split])
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            continue
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        target: Any = importlib.import_module(module_name)
        for attr in parts[split:]:
            target = getattr(target, attr, None)
        if isinstance(target, type):
            return target
        break
    raise refused


def with_map_seed(cfg: MettaGridConfig, seed: int) -> MettaGridConfig:
    """A copy whose map is generated from `seed`, so every policy meets the same maps."""
    # Shallow copies down to the map builder: a deep copy of the whole game costs more than a short episode.
    map_builder = cfg.game.map_builder.model_copy(update={"seed": seed})
    return cfg.model_copy(update={"game": cfg.game.model_copy(update={"map_builder": map_builder})})
