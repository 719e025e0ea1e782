"""Checks that a machine can run DAF: Python, packages, device, missions, policies, disk; and whether a Docker host
can run the GPU pool's containers."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from daf.worker_settings import check_dask_address

OK, WARNING, ERROR = "ok", "warning", "error"

# Modules DAF imports; the versions it is tested with are the ranges pyproject.toml declares.
REQUIRED_PACKAGES = (
    "mettagrid",
    "torch",
    "prefect",
    "numpy",
    "scipy",
    "pydantic",
    "optuna",
    "jinja2",
    "matplotlib",
    "yaml",
)
_DIST_NAMES = {"yaml": "pyyaml"}
# The orchestration layer's libraries: found and versioned here, not imported (the core never loads Prefect, and
# importing it reconfigures logging).
_FOUND_NOT_IMPORTED = {"prefect"}
MIN_FREE_DISK_GB = 1.0


@dataclass
class CheckResult:
    name: str
    status: str
    message: str


@dataclass
class EnvironmentReport:
    checks: list[CheckResult] = field(default_factory=list)

    def add(self, name: str, status: str, message: str) -> None:
        self.checks.append(CheckResult(name, status, message))

    def is_healthy(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == ERROR]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == WARNING]

    def get(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def summary(self) -> str:
        return "\n".join(f"[{c.status:7}] {c.name}: {c.message}" for c in self.checks)


def _check_python(report: EnvironmentReport) -> None:
    v = sys.version_info
    ok = (3, 11) <= (v.major, v.minor) < (3, 13)
    report.add("python", OK if ok else ERROR, f"{v.major}.{v.minor}.{v.micro}" + ("" if ok else " (need >=3.11,<3.13)"))


def _tested_ranges() -> dict[str, SpecifierSet]:
    """Version ranges from DAF's installed metadata (pyproject.toml's dependencies): one list, not a copy."""
    try:
        declared = requires("daf") or []
    except PackageNotFoundError:  # running from a source tree that was never installed
        return {}
    ranges = {}
    for text in declared:
        requirement = Requirement(text)
        if requirement.marker is None:  # extras ("dev", "dask") are not what DAF needs to run
            ranges[requirement.name.lower()] = requirement.specifier
    return ranges


def _check_packages(report: EnvironmentReport) -> None:
    ranges = _tested_ranges()
    for module in REQUIRED_PACKAGES:
        dist = _DIST_NAMES.get(module, module)
        try:
            if module in _FOUND_NOT_IMPORTED:
                if importlib.util.find_spec(module) is None:
                    raise ImportError(f"No module named {module!r}")
            else:
                importlib.import_module(module)
            installed = version(dist)
        except (ImportError, PackageNotFoundError) as exc:
            report.add(f"package:{dist}", ERROR, f"not importable: {exc}")
            continue
        tested = ranges.get(dist)
        if tested and not tested.contains(installed.split("+")[0], prereleases=True):
            report.add(f"package:{dist}", WARNING, f"{installed} installed, DAF is tested with {dist}{tested}")
        else:
            report.add(f"package:{dist}", OK, installed)


def _check_device(report: EnvironmentReport, device: str) -> None:
    import torch

    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name(0)
        report.add("device", OK, f"CUDA: {name}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free")
    elif device == "cuda":
        report.add("device", ERROR, "device 'cuda' requested but torch sees no CUDA GPU")
    else:
        report.add("device", OK, f"CPU ({torch.get_num_threads()} torch threads); no CUDA GPU")


# A map builder other than the random one (a user's `game:` mission) is built in a child process with this limit:
# a builder that cannot place what it was given loops inside mettagrid, where no thread can be interrupted.
MAP_BUILD_TIMEOUT_S = 60.0


def _build_and_step(name: str) -> None:
    from mettagrid.simulator.simulator import Simulation

    from daf.missions import get_mission

    sim = Simulation(get_mission(name), seed=0)
    sim.step()
    sim.close()


def _build_in_child(name: str, timeout_s: float) -> None:
    import multiprocessing

    # spawn, not fork: this process runs Prefect's threads, and a forked child could inherit a held lock.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        try:
            pool.apply_async(_build_and_step, (name,)).get(timeout=timeout_s)
        except multiprocessing.TimeoutError:
            raise TimeoutError(f"building its map took longer than {timeout_s:.0f} s; stopped") from None


def _check_missions(report: EnvironmentReport, missions: list[str]) -> None:
    from mettagrid.map_builder.random_map import RandomMapBuilder

    from daf.missions import get_mission

    for name in missions:
        try:
            # Random maps are checked for room before mettagrid sees them (daf.missions.check_mission_fits).
            if isinstance(get_mission(name).game.map_builder, RandomMapBuilder.Config):
                _build_and_step(name)
            else:
                _build_in_child(name, MAP_BUILD_TIMEOUT_S)
            report.add(f"mission:{name}", OK, "builds and steps")
        except Exception as exc:  # report every failure mode of a user's mission as a check result
            report.add(f"mission:{name}", ERROR, str(exc).splitlines()[0])


def _check_policies(report: EnvironmentReport, class_paths: list[str]) -> None:
    from daf.policies.registry import load_policy_class

    for path in class_paths:
        try:
            cls = load_policy_class(path)
            report.add(f"policy:{path}", OK, f"{cls.__module__}.{cls.__qualname__}")
        except Exception as exc:  # importing user code can raise anything
            report.add(f"policy:{path}", ERROR, str(exc))


def _check_network_contracts(report: EnvironmentReport, class_paths: list[str], missions: list[str]) -> None:
    """DAF-trainable policy classes meet the network contract on each mission that builds (daf.policies.contract)."""
    from daf.missions import get_mission
    from daf.policies.contract import NetworkContractError, check_network_contract
    from daf.policies.hosted import trainable_spec
    from daf.policies.registry import NotTrainable, load_policy, require_trainable, resolve_class_path
    from daf.simulation import env_interface

    buildable = [m for m in missions if report.get(f"mission:{m}").status == OK]
    for path in class_paths:
        if report.get(f"policy:{path}").status != OK:
            continue
        for mission in buildable:
            config = get_mission(mission)
            env = env_interface([config])
            try:
                require_trainable(path, env)
            except NotTrainable:
                break  # not a policy DAF trains: it has no network to check
            except Exception as exc:  # building a user's policy can raise anything
                report.add(f"network:{path}:{mission}", ERROR, f"the policy could not be built: {exc}")
                continue
            try:
                policy = load_policy(trainable_spec(resolve_class_path(path), {}), env)
                check_network_contract(policy, [config])
            except NetworkContractError as exc:
                report.add(f"network:{path}:{mission}", ERROR, f"{exc} (see the contract in daf/policies/neural.py)")
            except Exception as exc:  # building a user's network can raise anything
                report.add(f"network:{path}:{mission}", ERROR, f"the network could not be built: {exc}")
            else:
                report.add(f"network:{path}:{mission}", OK, "meets the network contract")


def _check_policy_data(report: EnvironmentReport, specs: list[tuple[str, str | None]]) -> None:
    """Each data file exists and, for DAF's neural policies, loads without executing code."""
    from daf.policies.neural import NeuralPolicy, load_weights
    from daf.policies.registry import load_policy_class

    for class_path, data_path in specs:
        if data_path is None:
            continue
        name = f"policy_data:{data_path}"
        if not Path(data_path).is_file():
            report.add(name, ERROR, f"data_path {data_path} for policy {class_path!r} does not exist")
            continue
        try:
            if issubclass(load_policy_class(class_path), NeuralPolicy):
                load_weights(data_path)
            report.add(name, OK, "present" if not data_path.endswith(".pt") else "loads safely")
        except Exception as exc:  # a bad class path is reported by the policy check; keep the data message
            report.add(name, ERROR, str(exc))


def _check_output_dir(report: EnvironmentReport, output_dir: str) -> None:
    path = Path(output_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
        report.add("output_dir", OK, f"{path.resolve()} is writable")
    except OSError as exc:
        report.add("output_dir", ERROR, f"{path} is not writable: {exc}")
        return
    free_gb = shutil.disk_usage(path).free / 2**30
    status = OK if free_gb >= MIN_FREE_DISK_GB else WARNING
    report.add("disk", status, f"{free_gb:.1f} GiB free under {path}")


def _check_prefect(report: EnvironmentReport) -> None:
    try:
        if importlib.util.find_spec("prefect") is None:
            raise ImportError("No module named 'prefect'")
        report.add("prefect", OK, version("prefect"))
    except (ImportError, PackageNotFoundError) as exc:
        report.add("prefect", ERROR, f"not importable: {exc}")


def daf_check_dependencies(policy_class_paths: list[str] | None = None) -> EnvironmentReport:
    """Python, required packages, and that each policy class path imports as a MultiAgentPolicy."""
    report = EnvironmentReport()
    _check_python(report)
    _check_packages(report)
    _check_prefect(report)
    _check_policies(report, policy_class_paths or [])
    return report


def daf_check_environment(
    missions: list[str] | None = None,
    policy_class_paths: list[str] | None = None,
    output_dir: str = "daf_output",
    device: str = "auto",
    policy_data: list[tuple[str, str | None]] | None = None,
    dask_address: str | None = None,
) -> EnvironmentReport:
    """Everything DAF needs on this machine; `missions` are built and stepped once each and every
    (class_path, data_path) in `policy_data` is checked to exist and, for neural policies, to load safely; a
    `dask_address` must be one this machine allows (daf.worker_settings)."""
    report = daf_check_dependencies(policy_class_paths)
    if dask_address is not None:
        try:
            report.add("dask", OK, check_dask_address(dask_address))
        except ValueError as exc:
            report.add("dask", ERROR, str(exc))
    _check_device(report, device)
    _check_missions(report, missions or [])
    _check_network_contracts(report, policy_class_paths or [], missions or [])
    _check_policy_data(report, policy_data or [])
    _check_output_dir(report, output_dir)
    return report


# What the daf-docker-gpu deployments ask of the Docker host (deployments/prefect.yaml: `docker run --gpus all`).
GPU_DEVICE_REQUEST = {"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}


def daf_check_docker_host(image: str = "daf-worker:latest") -> EnvironmentReport:
    """Whether the Docker daemon a daf-docker-gpu worker would use (DOCKER_HOST, else the default socket) answers,
    and whether a container of `image` starts there with the deployments' GPU request. Without the NVIDIA runtime
    that request fails at submission and the run Crashes with a docker-py traceback; this says so in one line.
    Tried rather than read from `docker info`: the NVIDIA hook can be set up without a runtime named `nvidia`."""
    report = EnvironmentReport()
    try:
        import docker
    except ImportError:
        report.add("docker", ERROR, "the docker Python package is not installed: pip install 'daf[docker]'")
        return report
    where = os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        client = docker.from_env(timeout=30)
        info = client.info()
    except docker.errors.DockerException as exc:
        report.add("docker", ERROR, f"no Docker daemon answers at {where}: {exc}")
        return report
    runtimes = ", ".join(sorted(info.get("Runtimes") or {})) or "none listed"
    report.add("docker", OK, f"Docker {info.get('ServerVersion', '?')} at {where} (runtimes: {runtimes})")
    try:
        container = client.containers.create(
            image, ["true"], device_requests=[docker.types.DeviceRequest(**GPU_DEVICE_REQUEST)]
        )
    except docker.errors.ImageNotFound:
        report.add("docker:gpu", WARNING, f"image {image} is not on this host: build it (docker/build.sh) to check")
        return report
    try:
        container.start()
        report.add("docker:gpu", OK, f"a container of {image} starts with every GPU (--gpus all)")
    except docker.errors.APIError as exc:
        reason = exc.explanation or str(exc)
        report.add(
            "docker:gpu",
            ERROR,
            f"a GPU container cannot start here ({reason}): daf-docker-gpu deployments would Crash at submission. "
            "Install the NVIDIA Container Toolkit, or run them on CPU (deployments/README.md, 'A CPU run on a GPU "
            "pool')",
        )
    finally:
        container.remove(force=True)
    return report
