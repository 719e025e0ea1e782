"""Configuration: YAML round trips and error messages that name the file, the field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from daf.config import (
    EXECUTION_FIELDS,
    HYPERPARAMETERS,
    RESUMABLE_CHANGES,
    ConfigError,
    DAFBenchmarkConfig,
    DAFComparisonConfig,
    DAFConfig,
    DAFSweepConfig,
    DAFTrainingConfig,
    PolicyEntry,
    RangeSpec,
    Role,
    fields_with,
    read_yaml_mapping,
)

SEED_SWEEP = {
    "policy_class_path": "lstm",
    "policy_data_path": "x.pt",
    "missions": ["training_facility_2"],
    "search_space": {"learning_rate": [0.0001, 0.001, 0.01]},
}

NON_DEFAULT = {
    DAFConfig: {"output_dir": "out", "max_parallel_jobs": 3, "gpu_memory_fraction": 0.5, "device": "cpu", "seed": 9},
    DAFTrainingConfig: {
        "policy_class_path": "mlp",
        "missions": ["training_facility_1", "training_facility_2"],
        "num_training_steps": 1234,
        "run_id": "run-1.a_b",
        "learning_rate": 3e-4,
        "target_kl": 0.02,
        "num_steps": 32,
        "bptt_horizon": 8,
        "task_runner": "process",
    },
    DAFSweepConfig: {
        **SEED_SWEEP,
        "search_space": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "gamma": [0.9, 0.99]},
        "strategy": "bayesian",
        "num_trials": 4,
        "training": {"num_envs": 4},
    },
    DAFComparisonConfig: {
        "policies": [{"class_path": "baseline"}, {"class_path": "lstm", "data_path": "w.pt", "name": "mine"}],
        "missions": ["assembler_1"],
        "episodes_per_mission": 7,
        "correction": "bh",
    },
    DAFBenchmarkConfig: {
        "policies": ["lstm", {"class_path": "mlp", "init_kwargs": {"hidden_size": 64}}],
        "missions": ["training_facility_1"],
        "training_steps": 5000,
        "training": {"learning_rate": 0.01},
        "baselines": ["random"],
    },
}


@pytest.mark.parametrize("cls", list(NON_DEFAULT), ids=lambda c: c.__name__)
def test_yaml_round_trip(cls, tmp_path):
    original = cls(**NON_DEFAULT[cls])
    path = tmp_path / f"{cls.__name__}.yaml"
    text = original.to_yaml(path)
    assert path.read_text() == text
    loaded = cls.from_yaml(path)
    assert loaded == original
    assert loaded.model_dump() == original.model_dump()
    for key in NON_DEFAULT[cls]:
        if key not in ("policies", "search_space"):
            assert getattr(loaded, key) == NON_DEFAULT[cls][key], key


def test_benchmark_policy_names_become_entries():
    cfg = DAFBenchmarkConfig(**NON_DEFAULT[DAFBenchmarkConfig])
    assert cfg.policies[0] == PolicyEntry(class_path="lstm")
    assert cfg.policies[1].init_kwargs == {"hidden_size": 64}


def test_resources_carry_the_shared_fields():
    cfg = DAFTrainingConfig(**NON_DEFAULT[DAFTrainingConfig], max_checkpoints_to_keep=5)
    res = cfg.resources()
    assert set(res) == set(DAFConfig.model_fields)
    assert res["max_checkpoints_to_keep"] == 5 and res["task_runner"] == "process"
    assert DAFConfig(**res).max_checkpoints_to_keep == 5


def test_seed_sweep_snippet_validates():
    cfg = DAFSweepConfig(
        policy_class_path="lstm",
        policy_data_path="x.pt",
        missions=["training_facility_2"],
        search_space={"learning_rate": [0.0001, 0.001, 0.01]},
    )
    assert cfg.strategy == "grid"
    assert cfg.grid_size() == 3
    assert cfg.total_trials() == 3


# --- rejections from files -------------------------------------------------------------------------


def write(tmp_path, text: str, name: str = "cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_unknown_key_names_file_field_and_known_keys(tmp_path):
    path = write(tmp_path, "policy_class_path: lstm\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError) as exc:
        DAFTrainingConfig.from_yaml(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: learning_rat: unknown key (known keys: ")
    assert "learning_rate" in msg and "num_training_steps" in msg


def test_wrong_type_names_file_and_field(tmp_path):
    path = write(tmp_path, "num_training_steps: lots\n")
    with pytest.raises(ConfigError) as exc:
        DAFTrainingConfig.from_yaml(path)
    assert f"{path}: num_training_steps: Input should be a valid integer" in str(exc.value)

    path = write(tmp_path, "missions: training_facility_1\n", "missions.yaml")
    with pytest.raises(ConfigError, match=r"missions\.yaml: missions: Input should be a valid list"):
        DAFTrainingConfig.from_yaml(path)


@pytest.mark.parametrize("value", [0, 1.5, -0.1])
def test_gpu_memory_fraction_range(tmp_path, value):
    path = write(tmp_path, f"gpu_memory_fraction: {value}\n")
    with pytest.raises(ConfigError) as exc:
        DAFConfig.from_yaml(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: gpu_memory_fraction: ")
    assert ("greater than 0" in msg) if value <= 0 else ("less than or equal to 1" in msg)


def test_negative_steps_rejected(tmp_path):
    path = write(tmp_path, "num_training_steps: -100\ncheckpoint_interval: 0\n")
    with pytest.raises(ConfigError) as exc:
        DAFTrainingConfig.from_yaml(path)
    lines = str(exc.value).splitlines()
    # Every problem is reported, one line each.
    assert f"{path}: num_training_steps: Input should be greater than 0" in lines
    assert f"{path}: checkpoint_interval: Input should be greater than 0" in lines

    path = write(tmp_path, "search_space: {gamma: [0.9]}\ntraining_steps_per_trial: -1\n", "sweep.yaml")
    with pytest.raises(ConfigError, match=r"sweep\.yaml: training_steps_per_trial: Input should be greater than 0"):
        DAFSweepConfig.from_yaml(path)


def test_literal_errors_show_the_bad_value(tmp_path):
    path = write(tmp_path, "device: tpu\n")
    with pytest.raises(ConfigError) as exc:
        DAFConfig.from_yaml(path)
    msg = str(exc.value)
    assert f"{path}: device:" in msg and "'auto', 'cpu' or 'cuda'" in msg and "(got 'tpu')" in msg


def test_malformed_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "missions: [training_facility_1\nseed: 3\n")
    with pytest.raises(ConfigError) as exc:
        DAFTrainingConfig.from_yaml(path)
    assert str(exc.value).startswith(f"{path}: malformed YAML:")


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        DAFConfig.from_yaml(tmp_path / "nope.yaml")
    path = write(tmp_path, "- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: expected a mapping of DAFConfig fields, got list"):
        DAFConfig.from_yaml(path)


def test_a_key_given_twice_is_an_error_not_the_last_one_silently(tmp_path):
    path = write(tmp_path, "learning_rate: 0.001\nseed: 3\nlearning_rate: 0.5\n")
    with pytest.raises(ConfigError) as exc:
        DAFTrainingConfig.from_yaml(path)
    assert str(exc.value).startswith(f"{path}: malformed YAML:")
    assert "key 'learning_rate' appears twice in one mapping" in str(exc.value) and "line 3" in str(exc.value)
    # Nested mappings too; a merge key's values may still be overridden beside it.
    with pytest.raises(ConfigError, match="key 'a' appears twice"):
        read_yaml_mapping(write(tmp_path, "outer:\n  a: 1\n  a: 2\n"))
    assert read_yaml_mapping(write(tmp_path, "d: &d {a: 1}\ne:\n  <<: *d\n  a: 2\n"))["e"] == {"a": 2}


def test_empty_yaml_gives_defaults(tmp_path):
    assert DAFTrainingConfig.from_yaml(write(tmp_path, "")) == DAFTrainingConfig()


# --- sweep search spaces ---------------------------------------------------------------------------


def test_unknown_hyperparameter_in_search_space(tmp_path):
    path = write(tmp_path, "search_space:\n  learning_rat: [0.1, 0.2]\n")
    with pytest.raises(ConfigError) as exc:
        DAFSweepConfig.from_yaml(path)
    msg = str(exc.value)
    assert f"{path}: search_space:" in msg
    assert "search_space.learning_rat: not a DAFTrainingConfig hyperparameter" in msg
    assert "learning_rate" in msg  # the allowed names are listed


def test_search_space_cannot_name_bookkeeping_fields():
    assert "learning_rate" in HYPERPARAMETERS and "run_id" not in HYPERPARAMETERS and "seed" not in HYPERPARAMETERS
    with pytest.raises(ConfigError, match="search_space.run_id: not a DAFTrainingConfig hyperparameter"):
        DAFSweepConfig.from_dict({"search_space": {"run_id": ["a", "b"]}})


# ---------------------------------------------------------------- field roles


def test_every_field_is_tagged_with_its_role():
    for model in (DAFConfig, DAFTrainingConfig, DAFSweepConfig):
        untagged = [
            name for name, info in model.model_fields.items() if not any(isinstance(m, Role) for m in info.metadata)
        ]
        assert untagged == [], f"{model.__name__}: tag {untagged} with their daf.config.Role (Annotated[type, Role.X])"


def test_the_field_lists_derived_from_the_roles():
    # A change here changes what sweeps search, what a trial sets, what a continued study must keep, what training's
    # cache key holds or what a resumed run may change: make it on purpose, in the Role tags and here.
    assert HYPERPARAMETERS == {
        "learning_rate", "anneal_lr", "num_envs", "num_steps", "gamma", "gae_lambda",
        "num_minibatches", "update_epochs", "norm_adv", "clip_coef", "clip_vloss", "ent_coef", "anneal_ent", "vf_coef",
        "max_grad_norm", "target_kl", "bptt_horizon", "hidden_size", "mission_weights", "overlap_update", "norm_reward",
        "reward_shaping",
    }  # fmt: skip
    assert fields_with(DAFTrainingConfig, Role.SWEEP_OWNED) == {
        "policy_class_path", "policy_data_path", "missions", "num_training_steps", "run_id", "checkpoint_dir", "seed",
        "progress",
    }  # fmt: skip
    assert fields_with(DAFSweepConfig, Role.FINGERPRINT) == {
        "policy_class_path", "policy_data_path", "missions", "search_space", "strategy", "training_steps_per_trial",
        "episodes_per_trial", "objective", "optimize_direction", "training", "seed",
    }  # fmt: skip
    assert EXECUTION_FIELDS == {
        "progress", "use_cache", "refresh_cache", "cache_expiration_hours", "task_runner", "dask_address", "log_level",
        "max_parallel_jobs", "result_store",
    }  # fmt: skip
    assert RESUMABLE_CHANGES == EXECUTION_FIELDS | {
        "num_training_steps", "checkpoint_interval", "max_checkpoints_to_keep", "eval_missions", "eval_episodes",
        "output_dir", "checkpoint_dir", "run_id", "device", "gpu_memory_fraction", "torch_threads",
        "num_env_workers", "env_overlap",
    }  # fmt: skip


def test_empty_search_space(tmp_path):
    path = write(tmp_path, "search_space: {}\n")
    with pytest.raises(ConfigError) as exc:
        DAFSweepConfig.from_yaml(path)
    assert f"{path}: search_space:" in str(exc.value)
    assert "search_space is empty: give at least one hyperparameter" in str(exc.value)

    with pytest.raises(ConfigError, match="search_space.gamma: empty list of values"):
        DAFSweepConfig.from_dict({"search_space": {"gamma": []}})


def test_missing_search_space_is_reported():
    with pytest.raises(ConfigError, match="config: search_space: Field required"):
        DAFSweepConfig.from_dict({"policy_class_path": "lstm"})


def test_unknown_strategy(tmp_path):
    path = write(tmp_path, "search_space: {gamma: [0.9, 0.99]}\nstrategy: evolution\n")
    with pytest.raises(ConfigError) as exc:
        DAFSweepConfig.from_yaml(path)
    msg = str(exc.value)
    assert f"{path}: strategy:" in msg
    assert "'grid', 'random' or 'bayesian'" in msg and "(got 'evolution')" in msg


def test_search_space_values_are_checked_against_the_training_config():
    with pytest.raises(ConfigError, match=r"search_space.gamma: value 1.5 is invalid: Input should be less than or"):
        DAFSweepConfig.from_dict({"search_space": {"gamma": [0.9, 1.5]}})
    with pytest.raises(ConfigError, match=r"low \(0.1\) must be < high \(0.01\)"):
        DAFSweepConfig.from_dict({"search_space": {"learning_rate": {"low": 0.1, "high": 0.01}}, "strategy": "random"})
    with pytest.raises(ConfigError, match="strategy 'grid' needs every search_space entry to be a list of values"):
        DAFSweepConfig.from_dict({"search_space": {"learning_rate": {"low": 0.001, "high": 0.01}}})
    with pytest.raises(ConfigError, match=r"num_trials \(5\) exceeds the grid size \(2\)"):
        DAFSweepConfig.from_dict({"search_space": {"gamma": [0.9, 0.99]}, "num_trials": 5})
    with pytest.raises(ConfigError, match="training: learning_rat: unknown key"):
        DAFSweepConfig.from_dict({"search_space": {"gamma": [0.9]}, "training": {"learning_rat": 1}})


def test_range_spec_int_detection():
    assert RangeSpec(low=16, high=128, step=16).is_int
    assert not RangeSpec(low=0.1, high=0.5, step=0.1).is_int
    assert not RangeSpec(low=1, high=8).is_int
    with pytest.raises(pydantic.ValidationError, match="log ranges need low > 0"):
        RangeSpec(low=0, high=1, log=True)


def test_rollout_must_divide_into_bptt_chunks():
    with pytest.raises(ConfigError, match=r"num_steps \(40\) must be a multiple of bptt_horizon \(16\)"):
        DAFTrainingConfig.from_dict({"num_steps": 40, "bptt_horizon": 16})
    assert DAFTrainingConfig(num_steps=48, bptt_horizon=16).num_steps == 48


# --- assignments are validated ---------------------------------------------------------------------


def test_validate_assignment():
    cfg = DAFSweepConfig(**SEED_SWEEP)
    with pytest.raises(pydantic.ValidationError) as exc:
        cfg.episodes_per_trial = 0
    assert "episodes_per_trial" in str(exc.value) and "greater than or equal to 1" in str(exc.value)
    assert cfg.episodes_per_trial == 5  # unchanged

    train = DAFTrainingConfig()
    with pytest.raises(pydantic.ValidationError, match="gpu_memory_fraction"):
        train.gpu_memory_fraction = 1.5
    with pytest.raises(pydantic.ValidationError, match="search_space is empty"):
        cfg.search_space = {}
    train.learning_rate = 0.0  # valid assignments still work
    assert train.learning_rate == 0.0


def test_unknown_attribute_assignment_is_refused():
    cfg = DAFConfig()
    with pytest.raises(pydantic.ValidationError):
        cfg.not_a_field = 1


# ---------------------------------------------------------------- derived paths


def test_checkpoints_follow_output_dir_however_it_is_changed(tmp_path):
    from prefect.utilities.callables import parameter_schema

    from daf.cli import load_config
    from daf.flows.training import training_flow
    from daf.orchestrators import _build

    expected = (Path("b") / "checkpoints").absolute()  # absolute: it means the same wherever it is read
    # Python: an override of output_dir on top of a config built with another one.
    built = _build(DAFTrainingConfig, "training", DAFTrainingConfig(output_dir="a"), {"output_dir": "b"})
    assert built.checkpoint_root() == expected
    # CLI flags and a YAML file.
    assert load_config(DAFTrainingConfig, None, {"output_dir": "b"}).checkpoint_root() == expected
    assert DAFTrainingConfig.from_yaml(write(tmp_path, "output_dir: b\n")).checkpoint_root() == expected
    # The Prefect UI's custom-run form submits every field with its schema default, then the user's edit.
    schema = parameter_schema(training_flow).model_dump_for_openapi()
    fields = schema["definitions"]["DAFTrainingConfig"]["properties"]
    submitted = {name: field["default"] for name, field in fields.items() if "default" in field} | {"output_dir": "b"}
    assert "checkpoint_dir" in submitted
    assert DAFTrainingConfig.model_validate(submitted).checkpoint_root() == expected
    # Set explicitly, it stays where it was put.
    assert (
        DAFTrainingConfig(output_dir="b", checkpoint_dir="elsewhere").checkpoint_root() == Path("elsewhere").absolute()
    )


# ---------------------------------------------------------------- input limits


def test_yaml_merge_keys_and_small_aliases_still_work(tmp_path):
    text = "defaults: &d {num_envs: 4, num_steps: 32}\ntraining:\n  <<: *d\n  hidden_size: 64\n"
    data = read_yaml_mapping(write(tmp_path, text))
    assert data["training"] == {"num_envs": 4, "num_steps": 32, "hidden_size": 64}


def test_shared_references_are_counted_once_per_use_without_expanding_them():
    import time

    from daf.input_limits import InputTooLarge, check_size

    leaf = ["x"] * 10
    shared = leaf
    for _ in range(8):  # 10^9 strings once expanded
        shared = [shared] * 10
    started = time.perf_counter()
    with pytest.raises(InputTooLarge, match="expands to more than 100000 values"):
        check_size({"init_kwargs": shared}, "config")
    assert time.perf_counter() - started < 0.5
    check_size({"a": [leaf] * 100}, "config")  # 1,100 values: fine
    deep: list = []
    node = deep
    for _ in range(100):
        node.append([])
        node = node[0]
    with pytest.raises(InputTooLarge, match="nested deeper than 64 levels"):
        check_size(deep, "config")
