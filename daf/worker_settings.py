"""What the machine that runs a flow decides, not the run's parameters: which Dask schedulers a run may send work
to, and which packages its policy classes may come from.

A run's parameters come from whoever can start a run (a config file, `--set`, a deployment parameter in the UI);
the process that executes them trusts what a Dask scheduler sends back (Dask exchanges pickles) and imports the
policy modules it is named. So both are settled by environment variables of that process (a worker's job
variables, or the user's own shell), and a run's parameters may only choose among them.
"""

from __future__ import annotations

import fnmatch
import os

DASK_ADDRESSES_VARIABLE = "DAF_DASK_ADDRESSES"
POLICY_MODULES_VARIABLE = "DAF_POLICY_MODULES"


def _listed(variable: str) -> list[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def check_dask_address(address: str) -> str:
    """The address, when this process's DAF_DASK_ADDRESSES lists it (shell-style patterns, such as
    tcp://10.0.0.5:*); a ValueError saying how to allow it otherwise."""
    allowed = _listed(DASK_ADDRESSES_VARIABLE) or []
    if any(fnmatch.fnmatchcase(address, pattern) for pattern in allowed):
        return address
    listed = f"it lists {', '.join(allowed)}" if allowed else "it is not set"
    raise ValueError(
        f"{address!r} is not a Dask scheduler this machine allows: a Dask scheduler's replies are unpickled, so the "
        f"process that runs the flow names the ones it trusts in {DASK_ADDRESSES_VARIABLE} ({listed}); set it there "
        "(a worker's job variables, or your shell), or leave dask_address unset for a local Dask cluster"
    )


def allowed_policy_modules() -> list[str] | None:
    """The packages policy classes may be loaded from (DAF's own always), from DAF_POLICY_MODULES; None when it is
    not set: any module whose source defines the class (daf.policies._source)."""
    listed = _listed(POLICY_MODULES_VARIABLE)
    return None if listed is None else ["daf", *listed]
