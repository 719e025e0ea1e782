"""deployments/README.md's first section, followed as a newcomer would: its three terminals' commands, read from the
README itself (so the test and the docs cannot drift), with the checkout's path for `/path/to/daf` and a free port
for 4200. The worker must pick up and complete a deployment run on the server the README starts."""

from __future__ import annotations

import os
import re

import stack

README = stack.REPO / "deployments" / "README.md"


def terminals() -> dict[int, list[str]]:
    """The commands of each `# terminal N` part of the section's bash block, comments dropped."""
    section = README.read_text().split("## Server, deployments, a worker", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    parts: dict[int, list[str]] = {}
    current = 0
    for line in block.replace("/path/to/daf", str(stack.REPO)).splitlines():
        if match := re.match(r"# terminal (\d)", line):
            current = int(match.group(1))
            continue
        command = line.split("  #", 1)[0].strip()
        if command and not command.startswith("#"):
            parts.setdefault(current, []).append(command)
    return parts


def test_the_readme_server_path_gets_a_worker_that_runs_a_deployment(tmp_path):
    commands = terminals()
    assert sorted(commands) == [1, 2, 3], commands
    assert any(c.endswith("prefect server start") for c in commands[1])
    assert all(any(c.startswith("export PREFECT_API_URL=") for c in commands[n]) for n in (2, 3)), commands
    port = stack.free_port()

    def script(n: int) -> str:
        lines = [c.replace("4200", str(port)) for c in commands[n]]
        return "set -e\n" + "\n".join(f"{c} --port {port}" if c.endswith("prefect server start") else c for c in lines)

    # One PREFECT_HOME for the three terminals, as a newcomer's ~/.prefect is; nothing else of this process's.
    env = stack.prefect_env(tmp_path / "home")
    env.pop("PREFECT_LOCAL_STORAGE_PATH")
    # Nor the venv on PATH: the README's commands name their programs by absolute path.
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != str(stack.BIN))
    workdir = tmp_path / "any-directory"
    workdir.mkdir()
    server = stack.start("readme-server", ["bash", "-c", script(1)], env, tmp_path, cwd=workdir)
    worker = None
    try:
        api = f"http://127.0.0.1:{port}/api"
        stack.wait_until_answering(server, f"{api}/health", 120, "the README's server")
        # Terminal 2 runs one of its two deploy.sh lines: the first (CPU only).
        deploy = "\n".join(c for c in script(2).splitlines() if not c.endswith("deploy.sh"))
        stack.run(["bash", "-c", deploy], env, timeout=240, cwd=workdir)
        worker = stack.start("readme-worker", ["bash", "-c", script(3)], env, tmp_path, cwd=workdir)
        runs = stack.Runs(stack.PrefectServer(server, api, stack.prefect_env(tmp_path / "client", api_url=api)))
        config = {
            "policies": [{"class_path": "baseline"}, {"class_path": "random"}],
            "missions": ["training_facility_1"],
            "episodes_per_mission": 2,
            "device": "cpu",
            "output_dir": str(tmp_path / "out"),
        }
        flow_run_id = runs.create("comparison/comparison-local", {"config": config})
        run = runs.wait_final(flow_run_id, timeout=240, worker=worker)
        assert run.state.is_completed(), f"{run.state}\n{worker.output()}"
        assert list((tmp_path / "out" / "runs").glob(f"comparison-*-{flow_run_id[:8]}/pipeline_result.json"))
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
