"""Environment checks: a healthy machine reports healthy; each kind of problem is an error naming its cause."""

from __future__ import annotations

import torch

from daf import environment_checks
from daf.environment_checks import ERROR, OK, daf_check_dependencies, daf_check_environment
from daf.missions import list_missions
from daf.policies import DAF_POLICIES


def test_healthy_report_for_known_missions_and_policies(tmp_path):
    out = tmp_path / "out"
    report = daf_check_environment(
        missions=list_missions(), policy_class_paths=list(DAF_POLICIES), output_dir=str(out), device="cpu"
    )
    assert report.is_healthy(), report.summary()
    assert report.errors == []
    names = {c.name for c in report.checks}
    assert {
        "python",
        "package:mettagrid",
        "package:torch",
        "package:pyyaml",
        "prefect",
        "device",
        "output_dir",
    } <= names
    for mission in list_missions():
        check = report.get(f"mission:{mission}")
        assert (check.status, check.message) == (OK, "builds and steps")
    for short, path in DAF_POLICIES.items():
        check = report.get(f"policy:{short}")
        assert check.status == OK and check.message == path
    assert report.get("output_dir").status == OK and str(out.resolve()) in report.get("output_dir").message
    assert out.is_dir()
    assert report.get("disk").status in (OK, "warning")
    assert report.get("package:mettagrid").message.startswith("0.26.22")
    summary = report.summary()
    assert "[ok     ] mission:assembler_1: builds and steps" in summary


def test_broken_class_path_and_unknown_mission_are_errors(tmp_path):
    report = daf_check_environment(
        missions=["training_facility_1", "training_facilty_2"],
        policy_class_paths=["baseline", "no_such_pkg_daf.Policy", "lstmm"],
        output_dir=str(tmp_path),
    )
    assert not report.is_healthy()
    assert {c.name for c in report.errors} == {
        "mission:training_facilty_2",
        "policy:no_such_pkg_daf.Policy",
        "policy:lstmm",
    }
    mission = report.get("mission:training_facilty_2")
    assert mission.status == ERROR
    assert "training_facilty_2" in mission.message and "Did you mean: training_facility_2" in mission.message
    broken = report.get("policy:no_such_pkg_daf.Policy")
    assert broken.status == ERROR and "cannot import module 'no_such_pkg_daf'" in broken.message
    assert "Did you mean: lstm" in report.get("policy:lstmm").message
    # The healthy entries are still reported as such.
    assert report.get("mission:training_facility_1").status == OK
    assert report.get("policy:baseline").status == OK
    assert "[error  ] policy:no_such_pkg_daf.Policy" in report.summary()


def test_user_policy_classes_are_checked(per_agent_package):
    good, bad = f"{per_agent_package}.PerAgentWalker", f"{per_agent_package}.NotAPolicy"
    report = daf_check_dependencies([good, bad])
    assert report.get(f"policy:{good}").status == OK
    assert report.get(f"policy:{bad}").status == ERROR
    assert "not a mettagrid.policy.policy.MultiAgentPolicy subclass" in report.get(f"policy:{bad}").message
    assert [c.name for c in report.errors] == [f"policy:{bad}"]


def test_unwritable_output_dir_is_an_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    target = blocker / "out"
    report = daf_check_environment(output_dir=str(target), device="cpu")
    assert not report.is_healthy()
    check = report.get("output_dir")
    assert check.status == ERROR
    assert check.message.startswith(f"{target} is not writable")
    assert [c.name for c in report.errors] == ["output_dir"]
    assert not any(c.name == "disk" for c in report.checks)


def test_cuda_request_matches_the_machine(tmp_path):
    check = daf_check_environment(output_dir=str(tmp_path), device="cuda").get("device")
    if torch.cuda.is_available():
        assert check.status == OK and check.message.startswith("CUDA: ")
    else:
        assert check.status == ERROR
        assert check.message == "device 'cuda' requested but torch sees no CUDA GPU"


def test_module_level_entry_point(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output_dir is relative
    report = environment_checks.daf_check_environment()
    assert report.is_healthy() is True, report.summary()
    assert (tmp_path / "daf_output").is_dir()


def test_missions_with_other_map_builders_are_built_in_a_child_with_a_time_limit(tmp_path, monkeypatch):
    import yaml
    from mettagrid.map_builder.ascii import AsciiMapBuilder

    from daf.missions import get_mission

    mission = get_mission("training_facility_1")
    mission.game.map_builder = AsciiMapBuilder.Config(
        map_data=[list("#######"), list("#@.@..#"), list("#..@.@#"), list("#######")],
        char_to_map_name={"#": "wall", "@": "agent.agent", ".": "empty"},
    )
    game = mission.model_dump(mode="json")
    path = tmp_path / "ascii.yaml"
    path.write_text(yaml.safe_dump(game))
    report = daf_check_environment(missions=[str(path)], policy_class_paths=[], output_dir=str(tmp_path / "o"))
    assert report.get(f"mission:{path}").status == OK, report.summary()

    # A builder that does not finish is stopped at the limit (a spawned child cannot start in 1 ms).
    monkeypatch.setattr(environment_checks, "MAP_BUILD_TIMEOUT_S", 0.001)
    report = daf_check_environment(missions=[str(path)], policy_class_paths=[], output_dir=str(tmp_path / "o"))
    check = report.get(f"mission:{path}")
    assert check.status == ERROR and "building its map took longer than 0 s; stopped" in check.message


def test_docker_host_check_names_a_daemon_that_does_not_answer(monkeypatch, tmp_path):
    from daf.environment_checks import daf_check_docker_host

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    report = daf_check_docker_host()
    assert not report.is_healthy()
    (error,) = report.errors
    assert error.name == "docker" and error.message.startswith(f"no Docker daemon answers at unix://{tmp_path}")
