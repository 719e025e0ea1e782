"""Shared fixtures for the DAF test suite (keep this minimal)."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import textwrap
import uuid

import pytest

# tests/integration/stack.py starts real services (PostgreSQL, Prefect, Dask, S3, dockerd helpers) for every kind of
# test that needs one: importable as `stack` from any test module.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "integration"))


def pytest_configure(config):
    # Every test process (each pytest-xdist worker too) gets its own PREFECT_HOME, set before anything imports
    # Prefect: a test never touches the user's ~/.prefect, and two processes never share an ephemeral server's
    # SQLite database.
    config._daf_prefect_home = tempfile.mkdtemp(prefix="daf-test-prefect-home-")
    os.environ["PREFECT_HOME"] = config._daf_prefect_home


def pytest_xdist_make_scheduler(config, log):
    """With `--dist loadfile`, the integration tests are one work unit: they share session fixtures (PostgreSQL, a
    Prefect server with the project's deployments, a worker, a Dask cluster) that each pytest process would
    otherwise start again, about a minute of both cores' time on the 2-core CI machine."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class IntegrationAsOneUnit(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "tests/integration" if scope.startswith("tests/integration/") else scope

    config.option.loadscopereorder = False  # the units go out in the order pytest_collection_modifyitems gives
    return IntegrationAsOneUnit(config, log)


# Units of several minutes each (the Prefect stack's tests; the worker image's build and container runs) go out first,
# one to each process, so that the two processes end together instead of one building the image alone at the end.
_LONGEST_UNITS = ("tests/integration/", "tests/system/")


def pytest_collection_modifyitems(config, items):
    def unit(item) -> str:
        return next((u for u in _LONGEST_UNITS if item.nodeid.startswith(u)), item.nodeid.split("::")[0])

    sizes: dict[str, int] = {}
    for item in items:
        sizes[unit(item)] = sizes.get(unit(item), 0) + 1
    # Then the other files, most tests first (xdist's own default order, which a fixed order replaces here).
    items.sort(key=lambda item: (unit(item) not in _LONGEST_UNITS, -sizes[unit(item)]))


def pytest_unconfigure(config):
    shutil.rmtree(config._daf_prefect_home, ignore_errors=True)


@pytest.fixture
def make_package(tmp_path, monkeypatch):
    """Write `source` as a fresh importable package under tmp_path; returns the package name.

    Every call gets a unique package name, so module caches never leak between tests; the package and
    its modules are removed from sys.path / sys.modules afterwards.
    """
    created: list[str] = []

    def make(source: str, prefix: str = "daf_test_pkg") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        root = tmp_path / f"site_{name}"
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        created.append(name)
        return name

    yield make
    for name in created:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]


# A mettagrid MultiAgentPolicy that only implements the per-agent path (no step_batch), plus helpers.
PER_AGENT_POLICIES_SOURCE = """
import numpy as np
from mettagrid.policy.policy import AgentPolicy, MultiAgentPolicy
from mettagrid.simulator import Action

STEP_CALLS = []  # agent ids, one entry per AgentPolicy.step call


class _Walker(AgentPolicy):
    def __init__(self, pei, agent_id, seed, moves_only):
        super().__init__(pei)
        self._agent_id = agent_id
        self._seed = seed
        self._actions = [a for a in pei.action_names if a.startswith("move_")] if moves_only else ["noop"]
        self.reset()

    def step(self, obs):
        STEP_CALLS.append(self._agent_id)
        return Action(name=self._actions[int(self._rng.integers(len(self._actions)))])

    def reset(self, simulation=None):
        self._rng = np.random.default_rng(1000 * self._seed + self._agent_id)


class PerAgentWalker(MultiAgentPolicy):
    moves_only = True

    def __init__(self, policy_env_info, device="cpu", seed=0, **kwargs):
        super().__init__(policy_env_info, device=device)
        self.seed = seed

    def agent_policy(self, agent_id):
        return _Walker(self.policy_env_info, agent_id, self.seed, self.moves_only)


class PerAgentNoop(PerAgentWalker):
    moves_only = False


class NotAPolicy:
    def __init__(self, *args, **kwargs):
        pass
"""


@pytest.fixture
def per_agent_package(make_package):
    """Name of a fresh package holding PerAgentWalker, PerAgentNoop (per-agent only) and NotAPolicy."""
    return make_package(PER_AGENT_POLICIES_SOURCE)
