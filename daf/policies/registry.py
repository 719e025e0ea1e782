"""Resolving policy names: DAF's short names first, then dotted class paths, then mettagrid's registry."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from mettagrid.policy.loader import resolve_policy_class_path
from mettagrid.policy.policy import MultiAgentPolicy, PolicySpec
from mettagrid.policy.policy_env_interface import PolicyEnvInterface

from daf.errors import InputError
from daf.policies._source import why_not_importable
from daf.policy_urls import is_url
from daf.suggestions import did_you_mean
from daf.worker_settings import POLICY_MODULES_VARIABLE, allowed_policy_modules

# Short name -> class path. Trainable policies are registered by daf.policies.neural.
DAF_POLICIES: dict[str, str] = {
    "random": "daf.policies.scripted.RandomPolicy",
    "noop": "daf.policies.scripted.NoopPolicy",
    "baseline": "daf.policies.scripted.BaselinePolicy",
    "lstm": "daf.policies.neural.LSTMPolicy",
    "mlp": "daf.policies.neural.MLPPolicy",
}


class PolicyResolutionError(InputError, ValueError):
    pass


class NotTrainable(PolicyResolutionError):
    """The policy imports, but DAF's trainer cannot train it."""


def resolve_class_path(name: str) -> str:
    """The full class path for a short name or dotted path."""
    if name in DAF_POLICIES:
        return DAF_POLICIES[name]
    if "." in name:
        return name
    resolved = resolve_policy_class_path(name)
    if resolved != name:
        return resolved
    raise PolicyResolutionError(
        f"unknown policy {name!r}.{did_you_mean(name, DAF_POLICIES)} Known short names: {', '.join(DAF_POLICIES)}; "
        "or give a dotted class path such as mypackage.MyPolicy"
    )


def load_policy_class(name: str) -> type[MultiAgentPolicy]:
    """Import and check a policy class; errors say what was wrong with the name.

    A class path is input (a config, a CLI argument, a deployment parameter), and importing a module runs it:
    `venv.__main__.X` built virtualenvs and `antigravity.X` opened a browser before any check. So a module not yet
    imported is first read as source (daf.policies._source) and imported only when it defines or imports the
    class's name at its top level, and whatever its import raises, SystemExit included, becomes this error.
    """
    path = resolve_class_path(name)
    module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise PolicyResolutionError(f"policy class path {path!r} must be module.Class")
    allowed = allowed_policy_modules()
    if allowed is not None and not any(module_name == m or module_name.startswith(m + ".") for m in allowed):
        raise PolicyResolutionError(
            f"policy {name!r}: module {module_name!r} is not among the policy modules this worker allows "
            f"({POLICY_MODULES_VARIABLE}: {', '.join(allowed)})"
        )
    if module_name not in sys.modules:
        problem = why_not_importable(module_name, attr)
        if problem:
            raise PolicyResolutionError(f"policy {name!r}: {problem}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PolicyResolutionError(f"policy {name!r}: cannot import module {module_name!r} ({exc})") from None
    except BaseException as exc:  # noqa: BLE001  (a module's import may raise anything, SystemExit included)
        raise PolicyResolutionError(
            f"policy {name!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise PolicyResolutionError(f"policy {name!r}: module {module_name!r} has no class {attr!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, MultiAgentPolicy)):
        raise PolicyResolutionError(
            f"policy {name!r}: {path} is not a mettagrid.policy.policy.MultiAgentPolicy subclass"
        )
    return cls


def check_spec(spec: PolicySpec) -> type[MultiAgentPolicy]:
    """Validate a spec before compute: class importable, data file present (weights named by a URL are fetched and
    checked by the pipeline's policy_fetch stage, daf.policy_urls)."""
    cls = load_policy_class(spec.class_path)
    if spec.data_path is not None and not is_url(spec.data_path) and not Path(spec.data_path).is_file():
        raise PolicyResolutionError(f"policy {spec.class_path!r}: data_path {spec.data_path} does not exist")
    return cls


def load_policy(spec: PolicySpec, env: PolicyEnvInterface, device: str = "cpu", **extra: Any) -> MultiAgentPolicy:
    """Instantiate a policy and load its data (mettagrid's loader semantics, DAF names first). A plain policy's
    DAF-trained weights load into the network adapter they were trained through (daf.policies.hosted)."""
    from daf.policies.hosted import hosted_spec  # imports torch: only loading a policy needs it

    spec = hosted_spec(spec)
    cls = check_spec(spec)
    kwargs = {**spec.init_kwargs, **extra}
    if accepts_keyword(cls, "device"):
        kwargs.setdefault("device", device)
    policy = cls(env, **kwargs)
    if spec.data_path:
        if not cls.__module__.startswith("daf."):
            # A class of its own reads its file its own way (mettagrid's own call torch.load without weights_only,
            # which TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns into unpickling): a torch file DAF's weights_only load
            # refuses never reaches it.
            refuse_unsafe_torch_file(spec.data_path)
        policy.load_policy_data(spec.data_path)
    return policy


def refuse_unsafe_torch_file(path: str) -> None:
    """PolicyResolutionError when `path` is a torch file (or any pickle) that torch.load(weights_only=True), or DAF's
    bounds on torch files, refuse (daf.torch_files.refused_data_file)."""
    from daf.torch_files import refused_data_file

    problem = refused_data_file(path)  # only checked here: the class reads the file its own way
    if problem:
        raise PolicyResolutionError(f"data_path {path} {problem}")


def accepts_keyword(cls: type, name: str) -> bool:
    """Whether `cls(env, name=...)` is a valid call: __init__ names it or takes **kwargs."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def list_policies() -> dict[str, str]:
    return dict(DAF_POLICIES)


def require_trainable(name: str, env: PolicyEnvInterface | None = None) -> type[MultiAgentPolicy]:
    """The policy's class when DAF's trainer can train it; NotTrainable, saying what would be, otherwise.

    Trainable: a NeuralPolicy, or a plain MultiAgentPolicy (not one of DAF's) that carries a network
    (daf.policies.hosted). Whether an instance of a plain class carries one only an instance can say, so it is
    built, for `env` (a mission's interface; the first mission's when None). Whether the network keeps the
    contract is daf.policies.contract's check, which needs the missions.
    """
    from daf.policies.hosted import carries_network, is_plain_policy  # torch: only a trainability question needs it
    from daf.policies.neural import NeuralPolicy

    cls = load_policy_class(name)
    if issubclass(cls, NeuralPolicy):
        return cls
    if is_plain_policy(cls):
        if env is None:  # any mission's interface will do to ask whether the policy has a network at all
            from daf.missions import get_mission, list_missions
            from daf.simulation import env_interface

            env = env_interface([get_mission(list_missions()[0])])
        try:
            if carries_network(cls, env):
                return cls
        except Exception as exc:  # building a user's policy can raise anything: say so, as bad input
            raise PolicyResolutionError(
                f"policy {name!r}: {cls.__qualname__}(...) raised {type(exc).__name__}: {exc}"
            ) from None
    raise NotTrainable(
        f"policy {name!r} is not trainable: it must be a daf.policies.neural.NeuralPolicy, or a mettagrid "
        "MultiAgentPolicy whose `network` attribute (or network() method) is a torch.nn.Module, meeting the contract "
        f"in daf/policies/neural.py; trainable here: {', '.join(trainable_policies())}"
    )


def is_trainable(name: str) -> bool:
    try:
        require_trainable(name)
    except NotTrainable:
        return False
    return True


def trainable_policies() -> list[str]:
    """DAF's short names whose policies its trainer can train."""
    from daf.policies.neural import NeuralPolicy

    return [short for short, path in DAF_POLICIES.items() if issubclass(load_policy_class(path), NeuralPolicy)]
