"""Steps around DAF's deployments (deployments/prefect.yaml): the pull step a worker's flow-run process runs before
each flow, and the step deployments/deploy.sh runs after `prefect deploy`.

    python -m daf.flows.deployment_steps refuse-unknown-parameters    # on the server at PREFECT_API_URL
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
    deploying shell is baked into the deployment."""
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


def refuse_unknown_parameters() -> list[str]:
    """Make the server refuse a run of a DAF deployment with a parameter its flow does not take.

    `prefect deploy` stores the flow signature's JSON schema without `additionalProperties: false`, so the API
    (unlike `prefect deployment run`) accepts `{"config": ..., "confg": ...}` and the run then crashes in the worker
    with "Process exited with status code: 1". Unknown keys inside `config` are refused already (its schema comes
    from a pydantic model that forbids extras). Returns the deployments it tightened.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    tightened = []
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            if not (deployment.entrypoint or "").startswith(_ENTRYPOINT_PREFIX):
                continue
            schema = {**deployment.parameter_openapi_schema, "additionalProperties": False}
            client.update_deployment(deployment.id, DeploymentUpdate(parameter_openapi_schema=schema))
            tightened.append(deployment.name)
    return tightened


if __name__ == "__main__":
    if sys.argv[1:] != ["refuse-unknown-parameters"]:
        sys.exit("usage: python -m daf.flows.deployment_steps refuse-unknown-parameters")
    names = refuse_unknown_parameters()
    print(f"unknown parameters are now refused at run creation for {len(names)} deployments: {', '.join(names)}")
