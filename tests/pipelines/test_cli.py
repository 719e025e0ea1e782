"""The `daf` command line: every command, its exit codes (0 ok, 1 failed, 2 bad input, 3 partial) and outputs.

Commands run in-process through typer's CliRunner against the session's Prefect test harness, except one real
subprocess run of `daf benchmark` on Prefect's embedded server, as a user would run it.
Trained neural policies are evaluated only on their training mission (see the known encoder-size bug).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import prefect.main  # noqa: F401  configures Prefect's logging now, not inside a CliRunner's swapped streams
import pytest
import yaml
from typer.testing import CliRunner

from daf.cli import app

MISSION = "training_facility_1"
runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def printed_path(output: str, key: str) -> Path:
    """The path printed on a `  key: /path` line of the outputs section."""
    match = re.search(rf"^\s*{re.escape(key)}: (\S+)$", output, re.MULTILINE)
    assert match, f"{key} not printed in:\n{output}"
    return Path(match.group(1))


def assert_one_error_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


TRAIN_ARGS = ["--policy", "mlp", "--mission", MISSION, "--steps", 8000, "--eval-mission", MISSION]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """One tiny mlp training run through `daf train` (with evaluation): (output dir, final checkpoint)."""
    out = tmp_path_factory.mktemp("train")
    result = cli("train", *TRAIN_ARGS, "--eval-episodes", 2, "--output-dir", out, "--set", "num_envs=4")
    assert result.exit_code == 0, result.output
    assert "training pipeline" in result.stdout and "success" in result.stdout
    checkpoint = printed_path(result.stdout, "final_checkpoint")
    assert checkpoint.is_file() and checkpoint.is_relative_to(out)  # checkpoints follow --output-dir
    assert printed_path(result.stdout, "result_path").is_file()
    assert re.search(rf"mlp-\S+\s+\S\s+{MISSION}\s+\S\s+2\b", result.stdout)  # the evaluation table
    # Progress on stderr (not a terminal: plain lines), drawn from the events the tasks and flows log.
    assert re.search(r"Prefect flow run '\S+' started \(training\)", result.stderr), result.stderr
    assert re.search(r"training: step 8192/8192 \(100%\)  \d+ agent-steps/s", result.stderr), result.stderr
    assert "evaluation: 2/2 episodes done (mlp-" in result.stderr, result.stderr
    return out, checkpoint


# ---------------------------------------------------------------------------------------------------------------------
# Information commands and bad input (no Prefect flow runs)


def test_missions_and_policies():
    result = cli("missions")
    assert result.exit_code == 0
    for text in ("training_facility_1", "assembler_1", "11x11", "120", "heart source"):
        assert text in result.stdout
    result = cli("policies")
    assert result.exit_code == 0
    assert "daf.policies.neural.LSTMPolicy" in result.stdout and "baseline" in result.stdout


def test_defaults_of_the_commands_without_a_config_are_the_configs_defaults():
    from daf.cli.options import DEFAULT_MISSION, DEFAULT_OUTPUT_DIR
    from daf.config import DAFConfig, DAFTrainingConfig

    assert DEFAULT_OUTPUT_DIR == DAFConfig().output_dir
    assert [DEFAULT_MISSION] == DAFTrainingConfig().missions


def test_check(tmp_path):
    result = cli("check", "--mission", MISSION, "--policy", "baseline", "--output-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert "mission:training_facility_1" in result.stdout and "healthy" in result.stdout


def test_check_unhealthy_exits_1(tmp_path):
    result = cli("check", "--mission", MISSION, "--policy", "no.such.Policy", "--output-dir", tmp_path)
    assert result.exit_code == 1
    assert "unhealthy" in result.stdout and "policy:no.such.Policy" in result.stderr


BAD_CONFIGS = {
    "malformed": ("policy_class_path: [mlp\n", "malformed YAML"),
    "unknown_key": ("policy_class_path: mlp\nlearning_rat: 0.1\n", "learning_rat: unknown key"),
    "unknown_mission": ("missions: [training_facility_9]\n", "unknown mission 'training_facility_9'"),
    "unknown_policy": ("policy_class_path: lstmm\n", "unknown policy 'lstmm'"),
    "bad_value": ("num_training_steps: -5\n", "num_training_steps"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_exits_2_with_one_line(tmp_path, case):
    text, expected = BAD_CONFIGS[case]
    path = tmp_path / "training.yaml"
    path.write_text(text)
    line = assert_one_error_line(cli("train", "--config", path), 2)
    assert expected in line


@pytest.mark.parametrize(
    "args, expected",
    [
        (["compare", "--policy", "baseline", "--policy", "nosuch", "--mission", MISSION], "unknown policy 'nosuch'"),
        (["compare", "--policy", "baseline"], "missions: Field required"),
        (["benchmark", "--policy", "mlp", "--mission", "nowhere"], "unknown mission 'nowhere'"),
        (["train", "--policy", "random"], "not trainable"),
        (["sweep", "--config", "missing.yaml"], "config file not found"),
        (["evaluate", "baseline:no/such/weights.pt"], "does not exist"),
        (["validate-package", "no_such_bundle.zip"], "bundle not found"),
        (["train", "--set", "nokey"], "expected KEY=VALUE"),
    ],
)
def test_bad_flags_exit_2(args, expected):
    assert expected in assert_one_error_line(cli(*args), 2)


def test_unexpected_error_is_one_line_unless_debug(monkeypatch, tmp_path):
    from daf import environment_checks

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(environment_checks, "daf_check_environment", broken)
    line = assert_one_error_line(cli("check", "--output-dir", tmp_path), 1)
    assert "RuntimeError: disk on fire" in line and "--debug" in line
    result = cli("--debug", "check", "--output-dir", tmp_path)
    assert result.exit_code == 1 and "Traceback" in result.stderr


# ---------------------------------------------------------------------------------------------------------------------
# Pipelines through Prefect


def test_train(trained):
    out, checkpoint = trained
    assert (out / "runs").is_dir()


def test_rerun_shows_that_cached_results_were_reused(trained):
    out, _ = trained
    result = cli("train", *TRAIN_ARGS, "--eval-episodes", 2, "--output-dir", out, "--set", "num_envs=4")
    assert result.exit_code == 0, result.output
    assert "training: reused the cached result of run mlp-" in result.stderr, result.stderr
    assert "training: step" not in result.stderr  # nothing was trained again
    assert re.search(rf"evaluation: 2/2 episodes done \(mlp-\S+ on {MISSION}, cached result reused\)", result.stderr)


def test_evaluate_trained_policy(trained, tmp_path):
    _, checkpoint = trained
    result = cli("evaluate", f"mlp:{checkpoint}", "--mission", MISSION, "--episodes", 3, "--output-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert MISSION in result.stdout and "95% CI" in result.stdout
    assert printed_path(result.stdout, "result_path").is_file()


def test_compare(tmp_path):
    result = cli(
        "compare",
        "--policy",
        "baseline",
        "--policy",
        "rnd=random",
        "--mission",
        MISSION,
        "--episodes",
        2,
        "--output-dir",
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert printed_path(result.stdout, "report_html").is_file()
    assert "leaderboard" in result.stdout
    assert re.search(r"^\W*1\W+baseline\b", result.stdout, re.MULTILINE)  # baseline ranks first
    assert "rnd" in result.stdout


def test_failed_pipeline_exits_1_and_names_the_stage(tmp_path, faults):
    faults("evaluation:permanent")
    result = cli(
        "compare",
        "--policy",
        "baseline",
        "--policy",
        "noop",
        "--mission",
        MISSION,
        "--episodes",
        2,
        "--seed",
        4242,
        "--output-dir",
        tmp_path,
    )  # a new seed: a cached evaluation would skip the fault
    assert result.exit_code == 1, result.output
    assert "policy_comparison" in result.stdout and "failed" in result.stdout
    assert "error: comparison pipeline failed in stage(s): policy_comparison" in result.stderr
    assert "Traceback" not in result.output


def test_sweep(tmp_path):
    path = tmp_path / "sweep.yaml"
    config = {
        "name": "cli-test",
        "policy_class_path": "mlp",
        "missions": [MISSION],
        "search_space": {"learning_rate": [0.001, 0.003]},
        "strategy": "grid",
        "training_steps_per_trial": 4000,
        "episodes_per_trial": 2,
        "pruner": "none",
        "eval_interval_steps": 4000,  # one evaluation per trial: no intermediate ones
        "training": {"num_envs": 4},
        "output_dir": str(tmp_path / "out"),
    }
    path.write_text(yaml.safe_dump(config))
    result = cli("sweep", "--config", path)
    assert result.exit_code == 0, result.output
    assert "sweep_execution" in result.stdout and "best_config_extraction" in result.stdout
    assert printed_path(result.stdout, "best_checkpoint").is_file()
    assert "learning_rate" in result.stdout  # the best configuration is shown


def test_benchmark_partial_exits_3(trained, tmp_path, faults):
    _, checkpoint = trained  # given weights: the benchmark skips training (the subprocess test below trains)
    faults("packaging:permanent")
    result = cli(
        "benchmark",
        "--policy",
        f"tiny=mlp:{checkpoint}",
        "--mission",
        MISSION,
        "--episodes",
        2,
        "--package",
        "--output-dir",
        tmp_path,
    )
    assert result.exit_code == 3, result.output
    assert "partial" in result.stdout and "deployment_package" in result.stdout
    assert "failed optional stage(s): deployment_package" in result.stderr
    assert printed_path(result.stdout, "report_html").is_file()  # the other stages' outputs are kept
    assert "leaderboard" in result.stdout


def test_package_and_validate_package(tmp_path):
    result = cli("package", "baseline", "--output-dir", tmp_path, "--mission", MISSION)
    assert result.exit_code == 0, result.output
    bundle = printed_path(result.stdout, "deployment_package")
    assert bundle.is_file() and "valid" in result.stdout
    result = cli("validate-package", bundle, "--mission", MISSION)
    assert result.exit_code == 0, result.output
    assert "archive" in result.stdout and "pass" in result.stdout and f"episode:{MISSION}" in result.stdout
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    result = cli("validate-package", broken)
    assert result.exit_code == 1 and "INVALID" in result.stdout


def test_benchmark_subprocess_on_embedded_server(tmp_path):
    """A real `python -m daf.cli benchmark` run: its own embedded Prefect server, report and bundle on disk."""
    config = {
        "policies": ["mlp"],
        "training_missions": [MISSION],
        "missions": [MISSION],
        "episodes_per_mission": 2,
        "training_steps": 2048,
        "training": {"num_envs": 4},
        "baselines": ["random"],
        "create_deployment_package": True,
        "output_dir": "out",
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DAF_FAULTS"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc = subprocess.run(
        [sys.executable, "-m", "daf.cli", "benchmark", "--config", "bench.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    # Progress, not Prefect's HTTP client: no per-request lines, also before the flow run starts.
    assert "HTTP Request:" not in proc.stdout + proc.stderr
    for key in ("report_html", "deployment_package", "final_checkpoint", "result_path"):
        path = printed_path(proc.stdout, key)
        assert path.is_file() and path.is_relative_to(tmp_path), key
