"""The worker image as users build and run it: `docker/build.sh --local-base` (the same Dockerfile as the GPU
image, on a machine that reaches only PyPI and Debian's mirror) against a dockerd of this module's own, then a real
Prefect server, `deploy.sh`, a Docker worker polling `daf-docker-gpu`, and deployment runs executed in containers
of the built image on CPU, through the job variables deployments/README.md documents for a host without an NVIDIA
runtime. Nothing is mocked; the build takes about 2.5 minutes of this module's time on the 2-core CI machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import stack

IMAGE = "daf-worker:latest"
# deployments/README.md, "A CPU run on a GPU pool": the GPU request dropped, the host's network (the container
# reaches a server on 127.0.0.1), and the outputs bound to a host folder.
CPU_JOB_VARIABLES = {"container_create_kwargs": {"shm_size": "1g"}, "network_mode": "host"}


def docker(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    return stack.run(["docker", *args], env, timeout=timeout)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="daf-image-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def docker_env(workdir: Path) -> Iterator[dict[str, str]]:
    """A dockerd on a temporary data root and socket. No bridge and no iptables rules: it cannot disturb another
    daemon on the machine; the builds and containers use the host's network."""
    dockerd = shutil.which("dockerd")
    assert dockerd, "dockerd is missing: scripts/install_test_services.sh installs Debian's docker.io"
    root = workdir / "dockerd"
    root.mkdir()
    socket = root / "docker.sock"
    daemon = stack.start(
        "dockerd",
        [
            dockerd,
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "dockerd.pid"),
            "-H",
            f"unix://{socket}",
            "--bridge",
            "none",
            "--iptables=false",
        ],
        dict(os.environ),
        root,
    )
    env = dict(os.environ) | {"DOCKER_HOST": f"unix://{socket}"}

    def up() -> bool:
        assert daemon.alive(), f"dockerd exited:\n{daemon.output()}"
        return subprocess.run(["docker", "info"], env=env, capture_output=True).returncode == 0

    stack.wait_for(up, 60, "dockerd to answer")
    yield env
    daemon.stop()
    # dockerd leaves its network namespace mounted under the exec root: unmount what is left below the root.
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "--lazy", mount], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def image(docker_env: dict[str, str]) -> str:
    started = time.monotonic()
    out = stack.run(["bash", str(stack.REPO / "docker" / "build.sh"), "--local-base"], docker_env, timeout=1500)
    print(f"docker/build.sh --local-base: {time.monotonic() - started:.0f} s")
    assert f"Successfully tagged {IMAGE}" in out, out[-3000:]
    return IMAGE


def test_image_runs_a_command_as_given(docker_env, image):
    out = docker(
        docker_env,
        "run",
        "--rm",
        image,
        "python",
        "-c",
        "import daf.flows.training, torch, mettagrid, prefect_docker; print('torch', torch.__version__)",
    )
    assert out.strip().splitlines()[-1].startswith("torch 2.13.0"), out
    # The CLI is on PATH and the image's DAF is the checkout it was built from.
    out = docker(docker_env, "run", "--rm", image, "python", "-c", "import daf; print(daf.__file__)")
    assert out.strip().splitlines()[-1] == "/opt/daf/daf/__init__.py", out


def test_daf_check_predicts_that_gpu_runs_cannot_start_on_this_host(docker_env, image):
    """No NVIDIA runtime here (as on CI): the check says in one line what a GPU deployment's crash would say."""
    command = [str(stack.BIN / "daf"), "check", "--mission", "training_facility_1", "--policy", "baseline"]
    proc = subprocess.run([*command, "--docker", image], env=docker_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    error = " ".join(proc.stderr.split())
    assert error.startswith("error: docker:gpu: a GPU container cannot start here"), error
    assert 'could not select device driver "nvidia"' in error and "deployments/README.md" in error
    assert docker(docker_env, "ps", "-aq").strip() == ""  # the probe's container is gone


def test_deployments_run_in_containers_through_a_docker_worker(docker_env, image, workdir):
    server = stack.start_prefect_server(workdir / "server")
    worker = None
    try:
        stack.run([str(stack.REPO / "deployments" / "deploy.sh")], server.env, timeout=240)
        worker = stack.start(
            "docker-worker",
            [str(stack.BIN / "prefect"), "worker", "start", "--pool", "daf-docker-gpu", "--name", "docker-worker"],
            server.env | {"DOCKER_HOST": docker_env["DOCKER_HOST"], "PREFECT_WORKER_QUERY_SECONDS": "1"},
            workdir,
        )
        runs = stack.Runs(server)
        out = workdir / "outputs"
        out.mkdir()
        job_variables = CPU_JOB_VARIABLES | {"volumes": [f"{out}:/opt/daf/daf_output"]}
        training = runs.create(
            "training/training-gpu-docker",
            {
                "config": {
                    "policy_class_path": "mlp",
                    "missions": ["training_facility_1"],
                    "num_training_steps": 4096,
                    "checkpoint_interval": 2048,
                    "num_envs": 8,
                    "eval_missions": ["training_facility_1"],
                    "eval_episodes": 2,
                    "device": "cpu",
                    "output_dir": "daf_output",
                }
            },
            job_variables=job_variables,
        )
        # The scheduled nightly, triggered now.
        nightly = runs.create(
            "benchmark/benchmark-nightly-gpu",
            {
                "config": {
                    "policies": [{"class_path": "mlp"}],
                    "missions": ["training_facility_1"],
                    "episodes_per_mission": 2,
                    "training_steps": 4096,
                    "training": {"num_envs": 8},
                    "create_deployment_package": True,
                    "device": "cpu",
                    "output_dir": "daf_output",
                }
            },
            job_variables=job_variables,
        )
        for flow_run_id in (training, nightly):
            state = runs.wait_final(flow_run_id, 600, worker).state
            assert state.is_completed(), f"{flow_run_id}: {state.type} {state.message}\n{worker.output()}"

        # Outputs written in the containers, read back on the host.
        (result_file,) = out.glob(f"runs/training-*-{training[:8]}/pipeline_result.json")
        result = json.loads(result_file.read_text())
        assert result["status"] == "success", result["errors"]
        # An absolute location in the container, under its daf_output: the bound host folder.
        checkpoint = Path(result["outputs"]["final_checkpoint"]).relative_to("/opt/daf/daf_output")
        assert (out / checkpoint).stat().st_size > 0, checkpoint
        (result_file,) = out.glob(f"runs/benchmark-*-{nightly[:8]}/pipeline_result.json")
        result = json.loads(result_file.read_text())
        assert result["status"] == "success", result["errors"]
        assert result["outputs"]["package_validation"]["ok"] is True, result["outputs"]["package_validation"]

        # auto_remove (the pool's default): no stopped container is left per run.
        stack.wait_for(
            lambda: docker(docker_env, "ps", "-aq").strip() == "", 60, "the finished runs' containers to be removed"
        )
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
