"""Steps around DAF's deployments (deployments/prefect.yaml): the pull step a worker's flow-run process runs before
each flow, and the step deployments/deploy.sh runs after `prefect deploy`.

    python -m daf.flows.deployment_steps check-parameters    # on the server at PREFECT_API_URL
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import daf.flows

# The deployments' entrypoints: `daf.flows.<pipeline>:<pipeline>_flow`.
_ENTRYPOINT_PREFIX = "daf.flows."


class CheckoutNotFound(RuntimeError):
    """The flow-run process cannot tell which DAF checkout to run in."""


def _installed_checkout() -> Path | None:
    """The checkout whose flows/ folder the imported `daf.flows` is: an editable install (bootstrap.sh, the image)."""
    root = Path(daf.flows.__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "deployments" / "prefect.yaml").is_file() else None


def enter_checkout() -> dict[str, str]:
    """Change into the DAF checkout: `$DAF_HOME` when the worker's environment sets it, else the checkout this
    Python installed DAF from. Read here, at run time, so each worker uses its own checkout and nothing of the
    deploying shell is baked into the deployment.

    It runs before the flow's module is imported, so it also keeps mettagrid (imported with the flow) from lowering
    the root logger to INFO, which would put a line per HTTP request of Prefect's client in the run's output; a
    METTAGRID_LOG_LEVEL the worker's environment sets is kept (the image sets the same, docker/Dockerfile)."""
    os.environ.setdefault("METTAGRID_LOG_LEVEL", "WARNING")
    chosen = os.environ.get("DAF_HOME", "").strip()
    if chosen:
        directory = Path(chosen).expanduser()
        if not (directory / "flows").is_dir():
            raise CheckoutNotFound(
                f"DAF_HOME={chosen!r} (set in the worker's environment) is not a DAF checkout: it has no flows/ "
                "directory. Point DAF_HOME at the repository root, or unset it to use the checkout DAF is installed "
                "from."
            )
    else:
        found = _installed_checkout()
        if found is None:
            raise CheckoutNotFound(
                f"DAF is installed from {Path(daf.flows.__file__).parent.parent} (not a checkout), so this worker "
                "cannot tell where the deployments' flows/ and daf_output/ are. Start the worker with DAF_HOME set to"
                " a DAF checkout: DAF_HOME=/path/to/daf prefect worker start --pool daf-local"
            )
        directory = found
    os.chdir(directory)
    return {"directory": str(directory)}


# Mission fields of the pipeline configs: a run naming a mission outside the list is refused when it is created.
_MISSION_FIELDS = ("missions", "eval_missions", "training_missions")


def checked_parameter_schema(schema: dict[str, Any], missions: list[str]) -> dict[str, Any]:
    """A deployment's parameter schema as the server should check it when a run is created.

    - Unknown parameters are refused: `prefect deploy` stores the flow signature's schema without
      `additionalProperties: false`, so the API (unlike `prefect deployment run`) accepted `{"config": ...,
      "confg": ...}` and the run crashed on the worker with "Process exited with status code: 1". (Unknown keys
      inside `config` are refused already: its schema comes from a pydantic model that forbids extras.)
    - Missions are an enum of `missions`, the built-in names: the run form offers them as choices, and an unknown
      one is refused with the list in the answer instead of failing on the worker. Mission YAML files stay for the
      Python API and the CLI; the worker still checks every mission, for a worker whose DAF knows more.
    """
    schema = {**schema, "additionalProperties": False}
    definitions = {}
    for name, definition in schema.get("definitions", {}).items():
        properties = dict(definition.get("properties", {}))
        for field in _MISSION_FIELDS:
            if field in properties:
                properties[field] = _missions_enum(properties[field], missions)
        definitions[name] = {**definition, "properties": properties}
    if definitions:
        schema["definitions"] = definitions
    return schema


def _missions_enum(prop: dict[str, Any], missions: list[str]) -> dict[str, Any]:
    """A list-of-strings property (or its optional form, anyOf [array, null]) with its items limited to `missions`."""
    if prop.get("type") == "array":
        return {**prop, "items": {"type": "string", "enum": missions}}
    if "anyOf" in prop:
        return {**prop, "anyOf": [_missions_enum(branch, missions) for branch in prop["anyOf"]]}
    return prop


def check_parameters_on_the_server() -> list[str]:
    """Give every DAF deployment on the server at PREFECT_API_URL its checked parameter schema; returns their names."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    from daf.missions import list_missions

    missions = list_missions()
    updated = []
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            if not (deployment.entrypoint or "").startswith(_ENTRYPOINT_PREFIX):
                continue
            schema = checked_parameter_schema(deployment.parameter_openapi_schema, missions)
            client.update_deployment(deployment.id, DeploymentUpdate(parameter_openapi_schema=schema))
            updated.append(deployment.name)
    return updated


if __name__ == "__main__":
    if sys.argv[1:] != ["check-parameters"]:
        sys.exit("usage: python -m daf.flows.deployment_steps check-parameters")
    names = check_parameters_on_the_server()
    print(
        f"{len(names)} deployments now refuse unknown parameters and missions when a run is created: {', '.join(names)}"
    )
