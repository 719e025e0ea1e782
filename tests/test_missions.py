"""Missions: every named mission builds, is seeded, is solvable by the scripted baseline, and rewards only the goal."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from mettagrid.config.mettagrid_config import MettaGridConfig
from mettagrid.policy.policy import PolicySpec
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.simulator.simulator import Simulation
from scipy import stats

from daf.evaluation import evaluate
from daf.missions import (
    MISSIONS,
    UnknownMissionError,
    get_mission,
    list_missions,
    load_mission_file,
    with_map_seed,
)

ALL_MISSIONS = list_missions()


def map_signature(cfg: MettaGridConfig, seed: int) -> frozenset[tuple[str, tuple[int, int]]]:
    """(type, location) of every object on the map generated from `seed`."""
    sim = Simulation(with_map_seed(cfg, seed), seed=seed)
    try:
        return frozenset((o["type_name"], tuple(o["location"])) for o in sim.grid_objects().values())
    finally:
        sim.close()


def run_noop_episode(cfg: MettaGridConfig) -> Simulation:
    sim = Simulation(cfg, seed=0)
    while not sim.is_done():
        for agent in sim.agents():
            agent.set_action("noop")
        sim.step()
    return sim


def test_ladder_is_the_documented_set():
    assert ALL_MISSIONS == [
        "training_facility_1",
        "training_facility_2",
        "assembler_1",
        "assembler_2",
        "assembly_line_chest",
        "sparse_exploration",
    ]


@pytest.mark.parametrize("mission", ALL_MISSIONS)
def test_mission_builds_runs_and_noop_scores_exactly_zero(mission):
    spec = MISSIONS[mission]
    cfg = get_mission(mission)
    assert cfg.game.num_agents == spec.num_agents
    assert cfg.game.max_steps == spec.max_steps
    # Vibe actions are off: mettagrid's policy interface sees none.
    pei = PolicyEnvInterface.from_mg_cfg(cfg)
    assert pei.vibe_action_names == []
    assert not any("vibe" in a for a in pei.all_action_names)
    assert {"noop", "move_north", "move_south", "move_west", "move_east"} <= set(pei.action_names)

    # Reward comes only from the goal: standing still for a whole episode earns exactly 0 on every map.
    result = evaluate(PolicySpec(class_path="noop"), mission, episodes=3, seed=11)
    for ep in result.episodes:
        assert ep.steps == spec.max_steps
        assert len(ep.agent_rewards) == spec.num_agents
        assert ep.agent_rewards == [0.0] * spec.num_agents


@pytest.mark.parametrize("mission", ALL_MISSIONS)
def test_map_seeding(mission):
    cfg = get_mission(mission)
    first = map_signature(cfg, 123)
    # The map holds what the mission says it holds.
    counts: dict[str, int] = {}
    for type_name, _ in first:
        counts[type_name] = counts.get(type_name, 0) + 1
    for obj, n in MISSIONS[mission].objects.items():
        assert counts.get(obj) == n, (obj, counts)
    # Same seed -> same map (also from a freshly built config); different seed -> different map.
    assert map_signature(get_mission(mission), 123) == first
    assert map_signature(cfg, 124) != first
    assert map_signature(cfg, 99_999) != first


@pytest.mark.parametrize("mission", ALL_MISSIONS)
def test_same_seed_same_rewards(mission):
    for policy in ("baseline", "random"):
        a = evaluate(PolicySpec(class_path=policy), mission, episodes=3, seed=5)
        b = evaluate(PolicySpec(class_path=policy), mission, episodes=3, seed=5)
        assert [e.agent_rewards for e in a.episodes] == [e.agent_rewards for e in b.episodes]
        assert [e.seed for e in a.episodes] == [e.seed for e in b.episodes]
        assert len({e.seed for e in a.episodes}) == 3  # each episode of a run gets its own map


@pytest.mark.parametrize("mission", ALL_MISSIONS)
def test_baseline_beats_random(mission):
    episodes = 20
    base = evaluate(PolicySpec(class_path="baseline"), mission, episodes=episodes, seed=2024)
    rand = evaluate(PolicySpec(class_path="random"), mission, episodes=episodes, seed=2024)
    assert len(base.rewards) == len(rand.rewards) == episodes
    p = stats.ttest_ind(base.rewards, rand.rewards, equal_var=False, alternative="greater").pvalue
    assert np.mean(base.rewards) > np.mean(rand.rewards)
    assert p < 0.01, (mission, np.mean(base.rewards), np.mean(rand.rewards), p)
    if mission == "training_facility_1":
        assert np.mean(rand.rewards) > 0


def test_unknown_mission_suggests_close_names():
    with pytest.raises(UnknownMissionError) as exc:
        get_mission("training_facilty_1")
    msg = str(exc.value)
    assert "'training_facilty_1'" in msg
    assert "Did you mean: training_facility_1" in msg
    assert "Known missions:" in msg and "sparse_exploration" in msg


def test_unknown_mission_without_close_match_lists_known_missions():
    with pytest.raises(UnknownMissionError, match="unknown mission 'zzzz'") as exc:
        get_mission("zzzz")
    assert "Did you mean" not in str(exc.value)
    for name in ALL_MISSIONS:
        assert name in str(exc.value)


def test_overrides_take_effect():
    cfg = get_mission("training_facility_1", num_agents=2, max_steps=30)
    assert cfg.game.num_agents == 2 and cfg.game.max_steps == 30
    sim = run_noop_episode(cfg)
    try:
        assert sim.current_step == 30
        assert len(sim.episode_rewards) == 2
    finally:
        sim.close()
    # The registry's own spec is untouched by overrides.
    assert get_mission("training_facility_1").game.num_agents == MISSIONS["training_facility_1"].num_agents


def test_unknown_override_is_an_error():
    with pytest.raises(ValueError) as exc:
        get_mission("training_facility_1", colour="red")
    msg = str(exc.value)
    assert "training_facility_1" in msg
    assert "colour: unknown key" in msg
    assert "num_agents" in msg and "max_steps" in msg  # the allowed overrides are listed


def test_custom_mission_yaml_with_base(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text("base: training_facility_1\nnum_agents: 2\nmax_steps: 40\n")
    cfg = get_mission(str(path))
    assert cfg.game.num_agents == 2 and cfg.game.max_steps == 40
    assert cfg.label == "training_facility_1"
    # Call-site overrides win over the file's.
    assert get_mission(str(path), max_steps=25).game.max_steps == 25

    result = evaluate(PolicySpec(class_path="baseline"), str(path), episodes=3, seed=1)
    for ep in result.episodes:
        assert ep.steps == 40
        assert len(ep.agent_rewards) == 2
    assert sum(result.rewards) > 0


def test_custom_mission_yaml_with_unknown_override(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("base: training_facility_1\nspeed: 3\n")
    with pytest.raises(ValueError, match=r"speed: unknown key \(known keys: .*num_agents"):
        get_mission(str(path))


def test_full_mettagrid_game_yaml_round_trip(tmp_path):
    original = get_mission("assembler_1")
    path = tmp_path / "assembler_copy.yml"
    # sort_keys=False: RandomMapBuilder places objects in mapping order, so a key-sorted dump is another map.
    path.write_text(yaml.safe_dump(original.model_dump(mode="json"), sort_keys=False))
    loaded = get_mission(str(path))
    assert isinstance(loaded, MettaGridConfig)
    assert loaded.model_dump(mode="json") == original.model_dump(mode="json")
    assert map_signature(loaded, 7) == map_signature(original, 7)
    result = evaluate(PolicySpec(class_path="baseline"), str(path), episodes=2, seed=3)
    assert all(len(e.agent_rewards) == original.game.num_agents for e in result.episodes)
    assert sum(result.rewards) > 0
    # A full game file takes no overrides.
    with pytest.raises(ValueError, match="overrides apply only to `base:` missions"):
        get_mission(str(path), max_steps=10)


def test_mission_file_errors(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(UnknownMissionError, match=r"mission file .*nope\.yaml not found"):
        get_mission(str(missing))

    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("base: [training_facility_1\n")
    with pytest.raises(UnknownMissionError, match=r"malformed\.yaml: malformed YAML"):
        get_mission(str(malformed))

    neither = tmp_path / "neither.yaml"
    neither.write_text("num_agents: 2\n")
    with pytest.raises(UnknownMissionError, match=r"needs `base: <mission name>` or a full mettagrid `game:`"):
        load_mission_file(neither)

    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- training_facility_1\n")
    with pytest.raises(UnknownMissionError, match="expected a mapping"):
        get_mission(str(not_mapping))

    bad_base = tmp_path / "bad_base.yaml"
    bad_base.write_text("base: assembler_3\n")
    with pytest.raises(UnknownMissionError, match="Did you mean: assembler_"):
        get_mission(str(bad_base))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # mettagrid would search forever for a free cell for the 97th agent.
        ({"num_agents": 100}, r"100 agents and 4 objects do not fit the 11x11 map's 81 free cells"),
        ({"objects": {"heart_source": 80}}, r"4 agents and 80 objects do not fit"),
        ({"width": 3000, "height": 3000}, r"width: Input should be less than or equal to 256"),
        ({"max_steps": float("inf")}, r"max_steps: Input should be a finite number"),
        ({"num_agents": "many"}, r"num_agents: Input should be a valid integer"),
        ({"seed": 2**64}, r"seed: Input should be less than or equal to"),
    ],
)
def test_missions_out_of_bounds_or_unplaceable_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        get_mission("training_facility_1", **overrides)
    path = tmp_path / "mission.yaml"
    path.write_text(yaml.safe_dump({"base": "training_facility_1", **overrides}))
    with pytest.raises(ValueError, match=message):
        get_mission(str(path))


def test_full_game_mission_file_is_checked_too(tmp_path):
    game = get_mission("training_facility_1").model_dump(mode="json")
    game["game"]["map_builder"]["agents"] = 200
    game["game"]["num_agents"] = 200
    path = tmp_path / "game.yaml"
    path.write_text(yaml.safe_dump(game))
    with pytest.raises(ValueError, match=r"200 agents and 4 objects do not fit"):
        get_mission(str(path))


_NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
               "source": ["import pathlib, os\n", "pathlib.Path(os.environ['DAF_MARKER']).write_text('ran')\n"]}],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
}  # fmt: skip


@pytest.mark.parametrize(
    "type_name",
    [
        "marker_module.Builder",  # a module on sys.path that runs code at import
        "marker_notebook.Builder",  # a notebook on sys.path: mettagrid's load_symbol runs it through importnb
        "this.X",  # the standard library's import side effects
        "mettagrid.util.module.load_symbol",  # mettagrid, but not a map builder
        "mettagrid.map_builder.__main__.X",
    ],
)
@pytest.mark.parametrize("where", ["map_builder", "nested_scene"])
def test_a_mission_file_cannot_import_code_by_name(tmp_path, monkeypatch, capsys, type_name, where):
    marker = tmp_path / "ran"
    monkeypatch.setenv("DAF_MARKER", str(marker))
    (tmp_path / "marker_module.py").write_text(
        "import os, pathlib\npathlib.Path(os.environ['DAF_MARKER']).write_text('ran')\nclass Builder: pass\n"
    )
    (tmp_path / "marker_notebook.ipynb").write_text(__import__("json").dumps(_NOTEBOOK))
    monkeypatch.syspath_prepend(str(tmp_path))
    game = get_mission("training_facility_1").model_dump(mode="json")
    if where == "map_builder":
        game["game"]["map_builder"]["type"] = type_name
    else:  # a scene inside a map generator's instance list: any depth is resolved the same way
        game["game"]["map_builder"] = {
            "type": "mettagrid.mapgen.mapgen.MapGen.Config",
            "width": 11, "height": 11,
            "instance": {"type": "mettagrid.mapgen.scenes.random.Random.Config", "children": [
                {"scene": {"type": type_name}, "where": "full"}]},
        }  # fmt: skip
    path = tmp_path / "mission.yaml"
    path.write_text(yaml.safe_dump(game, sort_keys=False))
    with pytest.raises(UnknownMissionError, match=r"is not a mettagrid map builder or scene class; a mission file"):
        get_mission(str(path))
    with pytest.raises(UnknownMissionError, match=r"is not a mettagrid map builder or scene class"):
        evaluate(PolicySpec(class_path="random"), str(path), episodes=1, seed=0)
    assert not marker.exists()
    assert "this" not in __import__("sys").modules or type_name != "this.X"
    assert "Zen of Python" not in capsys.readouterr().out
