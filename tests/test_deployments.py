"""Deployment specs (deployments/) and the worker image (docker/Dockerfile), checked offline.

A misspelled job variable or a parameter the server's JSON schema rejects deploys or fails only on a live
server, so these tests check the specs the way Prefect will. tests/integration/ runs them on real servers.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from daf.environment_checks import GPU_DEVICE_REQUEST

REPO = Path(__file__).resolve().parents[1]
DEPLOY_DIR = REPO / "deployments"
PREFECT_FILE = DEPLOY_DIR / "prefect.yaml"
DEPLOY_SCRIPT = DEPLOY_DIR / "deploy.sh"
DOCKERFILE = REPO / "docker" / "Dockerfile"
PREFECT = Path(sys.executable).parent / "prefect"

SPEC: dict[str, Any] = yaml.safe_load(PREFECT_FILE.read_text())
DEPLOYMENTS: list[dict[str, Any]] = SPEC["deployments"]
BY_NAME = {d["name"]: d for d in DEPLOYMENTS}
FLOWS = {
    "daf.flows.training:training_flow": "training",
    "daf.flows.sweep:sweep_flow": "sweep",
    "daf.flows.comparison:comparison_flow": "comparison",
    "daf.flows.benchmark:benchmark_flow": "benchmark",
}
# Pools as deploy.sh creates them (`pool NAME TYPE TEMPLATE`): the specs must agree with the script.
POOLS: dict[str, tuple[str, str]] = {
    name: (kind, template)
    for name, kind, template in re.findall(r"^\s*pool (\S+) (\S+) (\S+)\s*$", DEPLOY_SCRIPT.read_text(), re.M)
}


def by_deployment(fn):
    return pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])(fn)


@functools.cache
def load_flow(entrypoint: str):
    from prefect.flows import load_flow_from_entrypoint

    # No placeholder flow: an entrypoint whose module fails to import must fail here, not at run time.
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        return load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
    finally:
        os.chdir(cwd)


def pool_template(pool: str) -> dict[str, Any]:
    return json.loads((DEPLOY_DIR / POOLS[pool][1]).read_text())


def unknown_job_variables(job_variables: dict[str, Any], template: dict[str, Any]) -> list[str]:
    """Job variables the pool does not declare: Prefect stores them without error and no job ever uses them."""
    return sorted(set(job_variables) - set(template["variables"]["properties"]))


def render(template: dict[str, Any], job_variables: dict[str, Any]) -> dict[str, Any]:
    """The job configuration a worker builds: declared defaults, overridden by the deployment's variables."""
    from prefect.utilities.templating import apply_values

    props = template["variables"]["properties"]
    values = {name: prop["default"] for name, prop in props.items() if "default" in prop} | job_variables
    return apply_values(template["job_configuration"], values)


# ---------------------------------------------------------------- prefect.yaml


def test_prefect_yaml_is_accepted_by_prefect():
    from prefect.cli.deploy._models import PrefectYamlModel

    # prefect deploy skips a file that fails this model with a warning, deploying nothing.
    model = PrefectYamlModel.model_validate(SPEC)
    assert len(model.deployments) == len(DEPLOYMENTS)
    assert len(BY_NAME) == len(DEPLOYMENTS), "deployment names must be unique (`prefect deploy --name`)"
    assert {d["entrypoint"] for d in DEPLOYMENTS} == set(FLOWS)
    local = {d["entrypoint"] for d in DEPLOYMENTS if d["work_pool"]["name"] == "daf-local"}
    assert local == set(FLOWS), "every flow needs a CPU deployment on daf-local"
    kinds = {name: kind for name, (kind, _) in POOLS.items()}
    assert kinds == {"daf-local": "process", "daf-docker-gpu": "docker", "daf-k8s-gpu": "kubernetes"}
    for d in DEPLOYMENTS:
        assert d["work_pool"]["name"] in POOLS, f"{d['name']}: pool not created by deploy.sh"


@pytest.mark.parametrize("entrypoint", sorted(FLOWS))
def test_entrypoint_loads(entrypoint):
    assert load_flow(entrypoint).name == FLOWS[entrypoint]


@by_deployment
def test_parameters_validate(deployment):
    from prefect._internal.schemas.validators import validate_values_conform_to_schema
    from prefect.utilities.callables import parameter_schema

    flow = load_flow(deployment["entrypoint"])
    params = deployment["parameters"]
    # The worker's check (pydantic: daf.config's models) ...
    flow.validate_parameters(params)
    # ... and the server's, made when the deployment is applied: the JSON schema of the signature.
    validate_values_conform_to_schema(params, parameter_schema(flow).model_dump_for_openapi(), ignore_required=True)


def test_misspelled_config_key_is_rejected():
    from prefect._internal.schemas.validators import validate_values_conform_to_schema
    from prefect.exceptions import ParameterTypeError
    from prefect.utilities.callables import parameter_schema

    flow = load_flow("daf.flows.comparison:comparison_flow")
    config = dict(BY_NAME["comparison-local"]["parameters"]["config"], episodes_per_misson=3)
    with pytest.raises(ParameterTypeError, match="episodes_per_misson"):
        flow.validate_parameters({"config": config})
    with pytest.raises(ValueError, match="episodes_per_misson"):
        validate_values_conform_to_schema(
            {"config": config}, parameter_schema(flow).model_dump_for_openapi(), ignore_required=True
        )


def test_schedules_and_nightly_benchmark():
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.client.schemas.schedules import CronSchedule

    for d in DEPLOYMENTS:
        for schedule in d.get("schedules", []):
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])

    nightly = BY_NAME["benchmark-nightly-gpu"]
    assert nightly["entrypoint"] == "daf.flows.benchmark:benchmark_flow"
    assert POOLS[nightly["work_pool"]["name"]][0] in ("docker", "kubernetes")
    (schedule,) = nightly["schedules"]
    assert schedule["timezone"] and schedule.get("active", True)
    limit = ConcurrencyLimitConfig.model_validate(nightly["concurrency_limit"])
    assert (limit.limit, limit.collision_strategy) == (1, ConcurrencyLimitStrategy.CANCEL_NEW)
    assert nightly["parameters"]["config"]["device"] == "cuda"


def test_bad_cron_or_timezone_is_rejected():
    from prefect.client.schemas.schedules import CronSchedule

    with pytest.raises(ValueError):
        CronSchedule(cron="0 2 * * *", timezone="America/New_Yrok")
    with pytest.raises(ValueError):
        CronSchedule(cron="0 25 * * *", timezone="UTC")


# ---------------------------------------------------------------- work pools and job variables


@by_deployment
def test_job_variables_exist_in_pool_template(deployment):
    from prefect.utilities.schema_tools import validate

    template = pool_template(deployment["work_pool"]["name"])
    job_variables = deployment["work_pool"].get("job_variables", {})
    assert unknown_job_variables(job_variables, template) == []
    # Types, as the server checks them when a run is created.
    validate(job_variables, template["variables"], raise_on_error=True, preprocess=True, ignore_required=True)


def test_misspelled_job_variable_is_caught():
    job_variables = dict(BY_NAME["training-gpu-k8s"]["work_pool"]["job_variables"])
    job_variables["gpu_cuont"] = job_variables.pop("gpu_count")
    assert unknown_job_variables(job_variables, pool_template("daf-k8s-gpu")) == ["gpu_cuont"]


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_pool_templates_are_consistent(pool):
    from prefect.utilities.templating import PlaceholderType, find_placeholders

    template = pool_template(pool)
    declared = set(template["variables"]["properties"])
    used = {p.name for p in find_placeholders(template["job_configuration"]) if p.type is PlaceholderType.STANDARD}
    assert used <= declared, f"placeholders without a variable: {sorted(used - declared)}"
    if POOLS[pool][0] != "process":
        assert template["variables"]["properties"]["image"]["default"] == "daf-worker:latest"


def test_k8s_template_renders_gpu_job():
    template = pool_template("daf-k8s-gpu")
    job_variables = BY_NAME["training-gpu-k8s"]["work_pool"]["job_variables"]
    for overrides in ({}, {"gpu_count": 4, "node_selector": {"gpu": "h100"}, "tolerations": []}):
        variables = job_variables | overrides
        pod = render(template, variables)["job_manifest"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == variables["gpu_count"]
        assert pod["nodeSelector"] == variables["node_selector"]
        assert pod["tolerations"] == variables["tolerations"]
        assert container["image"] == "daf-worker:latest"
        # prefect-kubernetes runs the flow-run command as `/usr/bin/env <command>`; the image has no ENTRYPOINT.
        assert container["command"] == ["/usr/bin/env"]
    defaults = render(template, {})["job_manifest"]["spec"]["template"]["spec"]
    assert defaults["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert defaults["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_docker_gpu_deployments_request_gpus():
    docker = [d for d in DEPLOYMENTS if POOLS[d["work_pool"]["name"]][0] == "docker"]
    assert docker
    for d in docker:
        rendered = render(pool_template(d["work_pool"]["name"]), d["work_pool"]["job_variables"])
        kwargs = rendered["container_create_kwargs"]
        # The request `daf check --docker` tries on a Docker host: the prediction and the deployments agree.
        assert kwargs["device_requests"] == [GPU_DEVICE_REQUEST], d["name"]
        assert kwargs["shm_size"], d["name"]
        assert rendered["image"] == "daf-worker:latest"
        assert rendered["auto_remove"] is True, "a finished run's container is removed"


def test_pull_steps():
    workdir = re.search(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), re.M).group(1)
    step = "prefect.deployments.steps.set_working_directory"
    assert SPEC["pull"] == [{"daf.flows.deployment_steps.enter_checkout": {}}]
    for d in DEPLOYMENTS:
        if POOLS[d["work_pool"]["name"]][0] == "process":
            assert "pull" not in d, f"{d['name']}: checkout deployments use the top-level pull step"
        else:
            assert d["pull"] == [{step: {"directory": workdir}}], d["name"]


# ---------------------------------------------------------------- docker/Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_copies_existing_files():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    copies = [args.split() for op, args in dockerfile_instructions() if op == "COPY" and "--from" not in args]
    assert copies
    for *sources, _dest in copies:
        for src in sources:
            assert (REPO / src).exists(), f"COPY {src}: not in the repository"
            # .dockerignore is an allowlist (`*` then `!path`): each source must be let back in.
            assert f"!{src}" in ignore, f"COPY {src}: excluded by .dockerignore"


def test_dockerfile_copies_every_package_folder_pyproject_installs():
    """pyproject.toml's package-dir maps import names to folders; the image installs DAF from them (editable), so a
    folder the Dockerfile does not copy would be a package missing from the image."""
    folders = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    copied = {args.split()[0] for op, args in dockerfile_instructions() if op == "COPY" and "--from" not in args}
    assert folders <= copied, f"docker/Dockerfile does not copy {sorted(folders - copied)}"


def test_dockerfile_installs_from_pyproject():
    """The image's requirements come from pyproject.toml itself (no copied list to drift); torch is installed first,
    pinned as pyproject pins it, from the CUDA index or a folder of wheels."""
    from packaging.requirements import Requirement

    text = DOCKERFILE.read_text()
    deps = {
        Requirement(r).name: Requirement(r)
        for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    assert f'"torch{deps["torch"].specifier}"' in text, "docker/Dockerfile must pin torch as pyproject.toml does"
    assert re.search(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", text)
    instructions = dockerfile_instructions()
    runs = [args for op, args in instructions if op == "RUN"]
    assert any("uv pip install -r pyproject.toml --extra docker --extra kubernetes --extra s3" in r for r in runs)
    assert any("uv pip install --no-deps -e ." in r for r in runs)
    ops = [op for op, _ in instructions]
    assert "ENTRYPOINT" not in ops, "`docker run daf-worker:latest CMD` must run CMD as given"
    assert json.loads(dict(instructions)["CMD"])[:3] == ["prefect", "worker", "start"]


def test_pull_step_enters_the_installed_checkout_or_daf_home(tmp_path, monkeypatch):
    import daf.flows
    from daf.flows.deployment_steps import CheckoutNotFound, enter_checkout

    monkeypatch.chdir(tmp_path)  # a process worker starts each flow run in a temporary directory
    monkeypatch.delenv("DAF_HOME", raising=False)
    assert enter_checkout() == {"directory": str(REPO)} and Path.cwd() == REPO

    (tmp_path / "flows").mkdir()
    monkeypatch.setenv("DAF_HOME", str(tmp_path))
    assert enter_checkout() == {"directory": str(tmp_path)} and Path.cwd() == tmp_path
    monkeypatch.setenv("DAF_HOME", str(tmp_path / "flows"))
    with pytest.raises(CheckoutNotFound, match=r"DAF_HOME=.* is not a DAF checkout: it has no flows/"):
        enter_checkout()

    # DAF installed as a plain package (no checkout around it) and no DAF_HOME: the error says what to set.
    monkeypatch.delenv("DAF_HOME")
    monkeypatch.setattr(daf.flows, "__file__", str(tmp_path / "site-packages" / "flows" / "__init__.py"))
    with pytest.raises(CheckoutNotFound, match=r"Start the worker with DAF_HOME set to a DAF checkout"):
        enter_checkout()


def test_compose_stack_wires_server_database_and_worker():
    from sqlalchemy.engine import make_url

    compose = yaml.safe_load((DEPLOY_DIR / "compose.yaml").read_text())
    services = compose["services"]
    workdir = re.search(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), re.M).group(1)
    server = services["prefect-server"]
    database = make_url(server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert database.drivername == "postgresql+asyncpg" and database.host in services
    db_env = services[database.host]["environment"]
    assert (database.username, database.password, database.database) == (
        db_env["POSTGRES_USER"],
        db_env["POSTGRES_PASSWORD"],
        db_env["POSTGRES_DB"],
    )
    port = server["entrypoint"][server["entrypoint"].index("--port") + 1]
    assert server["ports"] == [f"{port}:{port}"]
    assert server["environment"]["PREFECT_UI_API_URL"] == f"http://localhost:{port}/api"
    for name in ("deploy", "worker"):
        assert services[name]["image"] == server["image"] == "daf-worker:latest"
        assert services[name]["environment"]["PREFECT_API_URL"] == f"http://prefect-server:{port}/api"
    script = services["deploy"]["entrypoint"][0]
    assert script == f"{workdir}/deployments/deploy.sh" and os.access(DEPLOY_SCRIPT, os.X_OK)
    pool = services["worker"]["command"][services["worker"]["command"].index("--pool") + 1]
    assert POOLS[pool][0] == "process"
    assert services["worker"]["depends_on"]["deploy"]["condition"] == "service_completed_successfully"
    assert f"daf-output:{workdir}/daf_output" in services["worker"]["volumes"]


# ---------------------------------------------------------------- the run form's schema


def flow_schema(entrypoint: str) -> dict[str, Any]:
    """The parameter schema `prefect deploy` stores for the flow (as the server reads it back)."""
    from prefect.utilities.callables import parameter_schema

    return json.loads(json.dumps(parameter_schema(load_flow(entrypoint).fn).model_dump_for_openapi()))


@pytest.mark.parametrize("entrypoint", sorted(FLOWS))
def test_run_form_fields_are_numbered_and_described(entrypoint):
    """The UI's form sorts fields by `position` (nothing else survives PostgreSQL's jsonb); each shows its
    description, with no angle brackets for the UI to swallow as HTML."""
    from daf.config import DAFConfig

    schema = flow_schema(entrypoint)
    objects = [schema, *schema["definitions"].values()]
    for obj in objects:
        properties = obj["properties"]
        assert sorted(p["position"] for p in properties.values()) == list(range(len(properties)))
        for name, prop in properties.items():
            assert prop.get("description"), f"{obj.get('title')}.{name}: no description"
            assert not re.search(r"[<>]", prop["description"]), f"{obj.get('title')}.{name}: {prop['description']}"
    # The pipeline's own fields first, the execution settings every pipeline shares after them.
    (config,) = [d for d in schema["definitions"].values() if "output_dir" in d["properties"]]
    order = sorted(config["properties"], key=lambda name: config["properties"][name]["position"])
    shared = [name for name in order if name in DAFConfig.model_fields]
    assert order[-len(shared) :] == shared and order[0] in ("policy_class_path", "policies", "name")
    assert order.index("missions") <= 3


def test_checked_schema_refuses_unknown_parameters_and_missions():
    from prefect.utilities.schema_tools import ValidationError, validate

    from daf.flows.deployment_steps import checked_parameter_schema
    from daf.missions import list_missions

    schema = checked_parameter_schema(flow_schema("daf.flows.benchmark:benchmark_flow"), list_missions())
    config = {"policies": [{"class_path": "baseline"}], "missions": ["training_facility_1"]}
    validate({"config": config}, schema, raise_on_error=True)
    validate({"config": {**config, "training_missions": ["assembler_1"]}}, schema, raise_on_error=True)
    validate({"config": {**config, "training_missions": None}}, schema, raise_on_error=True)
    for bad in (
        {"config": {**config, "missions": ["nowhere"]}},
        {"config": {**config, "training_missions": ["training_facility_1", "nowhere"]}},
        {"config": config, "confg": {}},
    ):
        with pytest.raises(ValidationError):
            validate(bad, schema, raise_on_error=True)
    training = checked_parameter_schema(flow_schema("daf.flows.training:training_flow"), list_missions())
    properties = training["definitions"]["DAFTrainingConfig"]["properties"]
    assert properties["missions"]["items"]["enum"] == properties["eval_missions"]["items"]["enum"] == list_missions()
