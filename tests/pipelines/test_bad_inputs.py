"""A catalogue of bad inputs: each gets one clear message before any compute starts, and nothing runs."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mettagrid.policy.policy import PolicySpec

from daf.config import ConfigError, DAFSweepConfig, DAFTrainingConfig
from daf.orchestrators import (
    daf_run_benchmark_pipeline,
    daf_run_comparison_pipeline,
    daf_run_sweep_pipeline,
    daf_run_training_pipeline,
)
from daf.packaging import build_package, validate_package


class _Payload:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _trained_like_checkpoint(tmp: Path) -> Path:
    from daf.missions import get_mission
    from daf.policies.neural import LSTMPolicy
    from daf.simulation import env_interface

    path = tmp / "good.pt"
    LSTMPolicy(env_interface([get_mission("training_facility_1")])).save_policy_data(str(path))
    return path


def _compare(tmp: Path, policies, missions=("training_facility_1",), **kw):
    return daf_run_comparison_pipeline(
        policies=list(policies), missions=list(missions), episodes_per_mission=2, output_dir=str(tmp / "out"), **kw
    )


def _train(tmp: Path, **kw):
    args = dict(
        policy_class_path="mlp",
        missions=["training_facility_1"],
        num_training_steps=1000,
        output_dir=str(tmp / "out"),
        checkpoint_dir=str(tmp / "ckpt"),
    )
    return daf_run_training_pipeline(**{**args, **kw})


def _yaml(tmp: Path, text: str):
    path = tmp / "sweep.yaml"
    path.write_text(text)
    return DAFSweepConfig.from_yaml(path)


def _truncated(tmp: Path) -> str:
    good = _trained_like_checkpoint(tmp).read_bytes()
    bad = tmp / "truncated.pt"
    bad.write_bytes(good[: len(good) // 2])
    return str(bad)


def _corrupted(tmp: Path) -> str:
    bad = tmp / "corrupted.pt"
    bad.write_bytes(os.urandom(2048))
    return str(bad)


def _pickle_payload(tmp: Path) -> str:
    bad = tmp / "payload.pt"
    torch.save({"state_dict": _Payload(tmp / "MARKER")}, bad)
    return str(bad)


def _bundle(tmp: Path) -> Path:
    return build_package(PolicySpec(class_path="baseline"), tmp / "bundles", name="b")


def _tampered(tmp: Path) -> Path:
    src = _bundle(tmp)
    out = tmp / "tampered.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "policy_spec.json":
                data = data.replace(b"BaselinePolicy", b"BaselinePolicy ")
            zout.writestr(info, data)
    return out


def _zip_slip(tmp: Path) -> Path:
    out = tmp / "slip.zip"
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("policy_spec.json", '{"class_path": "baseline"}')
        z.writestr("../evil.txt", "x")
    return out


def _symlinked(tmp: Path) -> Path:
    out = tmp / "symlink.zip"
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("policy_spec.json", '{"class_path": "baseline"}')
        info = zipfile.ZipInfo("weights/policy.pt")
        info.external_attr = 0o120777 << 16
        z.writestr(info, "/etc/passwd")
    return out


def _alias_bomb() -> str:
    """383 bytes of YAML whose aliases expand to 10^9 strings."""
    lines = ['  a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        lines.append(f"  {chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 10) + "]")
    return "search_space: {learning_rate: [0.1]}\ntraining:\n" + "\n".join(lines) + "\n"


def _cycle() -> dict:
    loop: dict = {}
    loop["again"] = loop
    return loop


def _mission(tmp: Path, overrides: str) -> str:
    path = tmp / "mission.yaml"
    path.write_text(f"base: training_facility_1\n{overrides}\n")
    return str(path)


def _unwritable_file(tmp: Path) -> Path:
    """A plain file: nothing can be created below it."""
    path = tmp / "a-file"
    path.write_text("x")
    return path


def _unwritable(tmp: Path) -> str:
    blocker = tmp / "a-file"
    blocker.write_text("not a directory")
    return str(blocker / "out")


# (case id, action returning a PipelineResult or raising, expected message fragment)
def _foreign_step_dir(tmp: Path) -> Path:
    """A run directory holding a `step_<N>` folder DAF did not write."""
    step = tmp / "ckpt" / "r" / "checkpoints" / "step_0000009999"
    step.mkdir(parents=True)
    for name in ("policy.pt", "trainer_state.pt", "policy_spec.json", "config.json"):
        (step / name).write_text("{not json")
    return tmp


CASES: list[tuple[str, Callable[[Path], object], str]] = [
    (
        "foreign step_<N> folder in a run",
        lambda t: _train(_foreign_step_dir(t), run_id="r"),
        "is not a checkpoint DAF can resume (config.json: Expecting property name",
    ),
    (
        "rollout of 4096 x 4096 environment-steps",
        lambda t: _train(t, num_envs=4096, num_steps=4096),
        "(4096 x 4096 = 16777216) is over 262144 environment-steps per rollout",
    ),
    (
        "output_dir is the file system's root",
        lambda t: _train(t, output_dir="/"),
        "the file system's root is not an output directory",
    ),
    (
        "unknown mission suggests names",
        lambda t: _compare(t, ["baseline"], ["training_facilty_1"]),
        "Did you mean: training_facility_1",
    ),
    ("unknown policy short name", lambda t: _compare(t, ["lstmm"]), "unknown policy 'lstmm'"),
    ("class path not found", lambda t: _compare(t, ["nopkg.NoPolicy"]), "cannot import module 'nopkg'"),
    (
        "class is not a MultiAgentPolicy",
        lambda t: _compare(t, ["daf.config.DAFConfig"]),
        "is not a mettagrid.policy.policy.MultiAgentPolicy subclass",
    ),
    (
        "missing data_path file",
        lambda t: _compare(t, [PolicySpec(class_path="lstm", data_path=str(t / "no.pt"))]),
        "does not exist",
    ),
    (
        "truncated checkpoint",
        lambda t: _compare(t, [PolicySpec(class_path="lstm", data_path=_truncated(t))]),
        "cannot be loaded safely",
    ),
    ("corrupted checkpoint", lambda t: _train(t, policy_data_path=_corrupted(t)), "cannot be loaded safely"),
    (
        "pickle payload checkpoint",
        lambda t: _compare(t, [PolicySpec(class_path="lstm", data_path=_pickle_payload(t))]),
        "cannot be loaded safely",
    ),
    ("non-trainable policy", lambda t: _train(t, policy_class_path="baseline"), "not trainable"),
    ("malformed YAML", lambda t: _yaml(t, "search_space: [unclosed\n"), "malformed YAML"),
    (
        "unknown YAML key",
        lambda t: _yaml(t, "search_space: {learning_rate: [0.1]}\nlearning_rat: 3\n"),
        "learning_rat: unknown key",
    ),
    ("wrong type", lambda t: _train(t, num_training_steps="many"), "num_training_steps"),
    ("zero steps", lambda t: _train(t, num_training_steps=0), "num_training_steps: Input should be greater than 0"),
    (
        "negative episodes",
        lambda t: daf_run_comparison_pipeline(
            policies=["baseline"], missions=["training_facility_1"], episodes_per_mission=-1
        ),
        "episodes_per_mission: Input should be greater than or equal to 1",
    ),
    ("empty mission list", lambda t: _compare(t, ["baseline"], []), "missions: List should have at least 1 item"),
    ("empty search space", lambda t: _yaml(t, "search_space: {}\n"), "search_space is empty"),
    (
        "unknown hyperparameter",
        lambda t: _yaml(t, "search_space: {learning_rat: [0.1]}\n"),
        "search_space.learning_rat: not a DAFTrainingConfig hyperparameter",
    ),
    (
        "invalid range",
        lambda t: _yaml(t, "strategy: random\nsearch_space: {learning_rate: {low: 1, high: 0}}\n"),
        "search_space.learning_rate",
    ),
    (
        "invalid search value",
        lambda t: _yaml(t, "search_space: {gamma: [0.9, 2.0]}\n"),
        "search_space.gamma: value 2.0 is invalid",
    ),
    (
        "unknown strategy",
        lambda t: _yaml(t, "strategy: genetic\nsearch_space: {learning_rate: [0.1]}\n"),
        "strategy: Input should be 'grid', 'random' or 'bayesian'",
    ),
    ("gpu_memory_fraction out of range", lambda t: _train(t, gpu_memory_fraction=1.5), "gpu_memory_fraction"),
    ("CUDA requested without a GPU", lambda t: _train(t, device="cuda"), "device 'cuda' requested but torch sees no"),
    (
        "unwritable output directory",
        lambda t: daf_run_comparison_pipeline(
            policies=["baseline"], missions=["training_facility_1"], episodes_per_mission=1, output_dir=_unwritable(t)
        ),
        "is not writable",
    ),
    (
        "duplicate policy names",
        lambda t: _compare(t, [{"class_path": "baseline", "name": "x"}, {"class_path": "random", "name": "x"}]),
        "duplicate policy names: x",
    ),
    (
        "sweep without a sweep config",
        lambda t: daf_run_sweep_pipeline(config=DAFTrainingConfig()),
        "a sweep needs a DAFSweepConfig",
    ),
    (
        "benchmark with unknown policy",
        lambda t: daf_run_benchmark_pipeline(
            policies=["nope"], missions=["training_facility_1"], episodes_per_mission=1, output_dir=str(t / "o")
        ),
        "unknown policy 'nope'",
    ),
    # Names that would escape their run directory.
    ("run_id of dots", lambda t: _train(t, run_id=".."), "'..' is not a usable directory name"),
    (
        "sweep name of dots",
        lambda t: _yaml(t, "name: '..'\nsearch_space: {learning_rate: [0.1]}\n"),
        "'..' is not a usable directory name",
    ),
    # Non-finite or absurd numbers, named before compute.
    (
        "infinite learning rate",
        lambda t: _train(t, learning_rate=float("inf")),
        "learning_rate: Input should be a finite",
    ),
    (
        "YAML .inf",
        lambda t: _yaml(t, "search_space: {learning_rate: [0.1]}\ncache_expiration_hours: .inf\n"),
        "cache_expiration_hours: Input should be a finite number",
    ),
    ("NaN entropy", lambda t: _train(t, ent_coef=float("nan")), "ent_coef: Input should be a finite number"),
    ("seed beyond numpy's range", lambda t: _train(t, seed=2**63), "seed: Input should be less than or equal to"),
    ("ten million environments", lambda t: _train(t, num_envs=10**7), "num_envs: Input should be less than or equal"),
    ("a million hidden units", lambda t: _train(t, hidden_size=10**6), "hidden_size: Input should be less than"),
    # Small inputs that would take the machine.
    ("YAML alias bomb", lambda t: _yaml(t, _alias_bomb()), "expands to more than 100000 values"),
    ("50,000-deep YAML", lambda t: _yaml(t, "a: " + "[" * 50000 + "]" * 50000 + "\n"), "nested deeper than 64"),
    (
        "YAML over 1 MiB",
        lambda t: _yaml(t, "search_space: {learning_rate: [0.1]}\n" + "#" * (1 << 20)),
        "larger than 1048576 bytes",
    ),
    (
        "self-referencing init_kwargs",
        lambda t: _compare(t, [{"class_path": "random", "init_kwargs": _cycle()}]),
        "contains a reference to itself",
    ),
    (
        "more agents than free cells",
        lambda t: _compare(t, ["baseline"], [_mission(t, "num_agents: 100")]),
        "100 agents and 4 objects do not fit the 11x11 map's 81 free cells",
    ),
    (
        "3000x3000 map",
        lambda t: _compare(t, ["baseline"], [_mission(t, "width: 3000\nheight: 3000")]),
        "width: Input should be less than or equal to 256",
    ),
    ("tampered bundle", lambda t: validate_package(_tampered(t)), "policy_spec.json"),
    ("zip-slip bundle", lambda t: validate_package(_zip_slip(t)), "../evil.txt"),
    ("symlinked bundle entry", lambda t: validate_package(_symlinked(t)), "symlink"),
]


def _message(outcome: object) -> str:
    if hasattr(outcome, "errors") and hasattr(outcome, "status"):  # PipelineResult
        assert outcome.status == "failed", outcome
        compute = {"training", "evaluation", "policy_comparison", "sweep_execution"}
        assert not compute & set(outcome.stages_completed), outcome.stages_completed
        return "\n".join(outcome.errors)
    assert outcome.ok is False  # a package ValidationReport
    return "\n".join(outcome.errors)


@pytest.mark.parametrize("case,action,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_with_a_clear_message(case, action, expected, tmp_path):
    try:
        outcome = action(tmp_path)
    except (ConfigError, ValueError) as exc:
        message = str(exc)
    else:
        message = _message(outcome)
    assert expected in message, message
    assert "Traceback" not in message
    assert not (tmp_path / "MARKER").exists(), "a pickle payload was executed"
    assert not (tmp_path.parent / "evil.txt").exists()


def test_catalogue_is_large_enough():
    assert len(CASES) >= 25


def test_html_in_policy_names_is_escaped_in_the_report(tmp_path):
    name = "<script>alert(1)</script>"
    result = _compare(tmp_path, [{"class_path": "baseline", "name": name}, "random"])
    assert result.is_success(), result.errors
    html = Path(result.outputs["report_html"]).read_text()
    assert name not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_pickle_payload_never_executes_anywhere(tmp_path):
    path = _pickle_payload(tmp_path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not (tmp_path / "MARKER").exists()


# The same catalogue through the `daf` command line: exit 2 (bad input) or 1 (invalid bundle), one clear line.
def _sweep_yaml(tmp: Path, text: str) -> str:
    path = tmp / "sweep.yaml"
    path.write_text(text)
    return str(path)


CLI_CASES: list[tuple[str, Callable[[Path], list[str]], int, str]] = [
    (
        "unknown mission",
        lambda t: ["compare", "--policy", "baseline", "--mission", "training_facilty_1"],
        2,
        "Did you mean: training_facility_1",
    ),
    (
        "unknown policy",
        lambda t: ["compare", "--policy", "lstmm", "--mission", "training_facility_1"],
        2,
        "unknown policy 'lstmm'",
    ),
    (
        "class path not found",
        lambda t: ["compare", "--policy", "nopkg.NoPolicy", "--mission", "training_facility_1"],
        2,
        "cannot import module 'nopkg'",
    ),
    (
        "not a MultiAgentPolicy",
        lambda t: ["compare", "--policy", "daf.config.DAFConfig", "--mission", "training_facility_1"],
        2,
        "is not a mettagrid.policy.policy",
    ),
    (
        "missing data_path",
        lambda t: ["compare", "--policy", f"lstm:{t / 'no.pt'}", "--mission", "training_facility_1"],
        2,
        "does not exist",
    ),
    (
        "truncated checkpoint",
        lambda t: [
            "compare",
            "--policy",
            f"lstm:{_truncated(t)}",
            "--mission",
            "training_facility_1",
            "--output-dir",
            str(t / "o"),
        ],
        1,
        "cannot be loaded safely",
    ),
    (
        "pickle payload",
        lambda t: [
            "compare",
            "--policy",
            f"lstm:{_pickle_payload(t)}",
            "--mission",
            "training_facility_1",
            "--output-dir",
            str(t / "o"),
        ],
        1,
        "cannot be loaded safely",
    ),
    (
        "non-trainable policy",
        lambda t: ["train", "--policy", "baseline", "--mission", "training_facility_1"],
        2,
        "not trainable",
    ),
    (
        "malformed YAML",
        lambda t: ["sweep", "--config", _sweep_yaml(t, "search_space: [unclosed\n")],
        2,
        "malformed YAML",
    ),
    (
        "unknown YAML key",
        lambda t: ["sweep", "--config", _sweep_yaml(t, "search_space: {learning_rate: [0.1]}\nlearning_rat: 3\n")],
        2,
        "unknown key",
    ),
    ("zero steps", lambda t: ["train", "--policy", "mlp", "--steps", "0"], 2, "num_training_steps"),
    (
        "empty search space",
        lambda t: ["sweep", "--config", _sweep_yaml(t, "search_space: {}\n")],
        2,
        "search_space is empty",
    ),
    (
        "unknown strategy",
        lambda t: ["sweep", "--config", _sweep_yaml(t, "strategy: genetic\nsearch_space: {learning_rate: [0.1]}\n")],
        2,
        "strategy",
    ),
    (
        "gpu_memory_fraction",
        lambda t: ["train", "--policy", "mlp", "--set", "gpu_memory_fraction=1.5"],
        2,
        "gpu_memory_fraction",
    ),
    (
        "duplicate names",
        lambda t: ["compare", "--policy", "x=baseline", "--policy", "x=random", "--mission", "training_facility_1"],
        2,
        "duplicate policy names: x",
    ),
    ("tampered bundle", lambda t: ["validate-package", str(_tampered(t))], 1, "policy_spec.json"),
    ("zip-slip bundle", lambda t: ["validate-package", str(_zip_slip(t))], 1, "../evil.txt"),
    ("symlinked bundle", lambda t: ["validate-package", str(_symlinked(t))], 1, "symlink"),
    # DAF's own bad-input errors (training, checkpoints, missions, oversized input) are exit 2 with one line.
    ("run_id of dots", lambda t: ["train", "--policy", "mlp", "--mission", "training_facility_1", "--run-id", "..",
                                  "--output-dir", str(t / "o")], 2, "'..' is not a usable directory name"),
    ("mission that cannot be placed", lambda t: ["compare", "--policy", "baseline", "--mission",
                                                 _mission(t, "num_agents: 100"), "--output-dir", str(t / "o")],
     2, "100 agents and 4 objects do not fit"),
    ("50,000-deep YAML config", lambda t: ["train", "--config", _sweep_yaml(t, "a: " + "[" * 50000 + "]" * 50000)],
     2, "nested deeper than 64 levels"),
    ("corrupt weights to package", lambda t: ["package", "lstm", "--data-path", _corrupted(t), "--output-dir",
                                              str(t / "p")], 2, "refused by torch.load(weights_only=True)"),
    # The pipelines' bounds hold for `daf evaluate` too; its output folder is checked before any episode runs.
    ("a trillion episodes", lambda t: ["evaluate", "random", "-n", "1000000000000"], 2,
     "Input should be less than or equal to"),
    ("negative seed", lambda t: ["evaluate", "random", "--seed", "-5"], 2,
     "Input should be greater than or equal to 0"),
    ("evaluate into an unwritable place", lambda t: ["evaluate", "random", "-n", "100000", "--output-dir",
                                                     str(_unwritable_file(t) / "sub")], 2, "cannot be created"),
    ("non-finite reward threshold", lambda t: ["validate-package", str(_bundle(t)), "--reward-threshold", "nan"], 2,
     "--reward-threshold nan: a threshold is a finite mean reward"),
    ("evaluate into the file system's root", lambda t: ["evaluate", "random", "-n", "100000", "--output-dir", "/"], 2,
     "the file system's root is not an output directory"),
    ("rollout too large", lambda t: ["train", "--policy", "mlp", "--set", "num_envs=4096", "--set", "num_steps=4096"],
     2, "environment-steps per rollout"),
]  # fmt: skip


@pytest.mark.parametrize("case,args,code,expected", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_input_through_the_cli(case, args, code, expected, tmp_path):
    import prefect.main  # noqa: F401  Prefect's logging is configured before CliRunner swaps the streams
    from typer.testing import CliRunner

    from daf.cli import app

    result = CliRunner().invoke(app, args(tmp_path))
    assert result.exit_code == code, result.output
    assert expected in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "MARKER").exists()
