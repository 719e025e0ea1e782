"""The specification's custom policy: a plain mettagrid `MultiAgentPolicy` that carries a network, trained by DAF.

The specification's example subclasses mettagrid's `MultiAgentPolicy` and sets `self.network = MyNetwork()` (or
overrides `network()`); it implements none of DAF's row-wise acting, seeding or weights files. `HostedNetworkPolicy`
builds that policy, takes its network (which meets the contract in daf/policies/neural.py, in DAF's convention or
one daf.policies.network_adapters adapts) and is a `NeuralPolicy` around it: DAF samples actions from the network's
logits, per row from the row's seeded stream, and writes the weights with their own parameter names.

So what training optimised is what evaluation, comparison and a bundle measure: a DAF-trained weights file of a
plain class is always run through this adapter (`hosted_spec`), never through the class's own `step_batch` (the
specification's is a stub) or its own `load_policy_data` (mettagrid's default ignores the file, which would
evaluate an untrained network and call it trained). The weights file records the class it was trained for
(`meta["hosted"]`); that is how it is recognised, and why loading it into another class fails by name.
A plain class *without* a DAF weights file (a scripted policy, or its own data format) loads as itself.
"""

from __future__ import annotations

from typing import Any

import torch
from mettagrid.policy.policy import MultiAgentPolicy, PolicySpec
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from torch import nn

from daf.policies.base import DAFPolicy
from daf.policies.contract import NetworkContractError
from daf.policies.network_adapters import adapt_network
from daf.policies.neural import CheckpointError, NeuralPolicy, load_weights
from daf.policies.registry import accepts_keyword, load_policy_class

HOSTED_CLASS_PATH = f"{__name__}.HostedNetworkPolicy"


def network_of(policy: MultiAgentPolicy) -> nn.Module | None:
    """The policy's network: its `network` attribute when that is a module (the specification's `self.network =
    MyNetwork()` shadows mettagrid's `network()` method), else what `network()` returns; None when it has none."""
    network = getattr(policy, "network", None)
    if isinstance(network, nn.Module):
        return network
    found = network() if callable(network) else None
    return found if isinstance(found, nn.Module) else None


def defining_path(cls: type) -> str:
    """The class path of the module that defines `cls`, whatever re-export named it: weights files and bundles
    record this one."""
    return f"{cls.__module__}.{cls.__qualname__}"


def is_plain_policy(cls: type) -> bool:
    """A MultiAgentPolicy written without DAF's base classes: the kind this adapter hosts."""
    return issubclass(cls, MultiAgentPolicy) and not issubclass(cls, DAFPolicy)


def build_plain_policy(cls: type[MultiAgentPolicy], env: PolicyEnvInterface, seed: int, device: str, **kwargs: Any):
    """`cls(env, ...)` with the keywords its __init__ takes, its random initial weights drawn from `seed` (the CPU
    generator only, restored afterwards: building a policy leaves the process's random state as it was)."""
    offered = {"seed": seed, "device": device, **kwargs}
    accepted = {k: v for k, v in offered.items() if accepts_keyword(cls, k)}
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return cls(env, **accepted)


def carries_network(cls: type[MultiAgentPolicy], env: PolicyEnvInterface) -> bool:
    """Whether an instance of the plain class `cls` carries a network (only an instance can say: the network is
    usually set in __init__)."""
    return network_of(build_plain_policy(cls, env, seed=0, device="cpu")) is not None


class HostedNetworkPolicy(NeuralPolicy):
    """A plain `MultiAgentPolicy`'s network (the class at `policy_class_path`), acting, training and saving as DAF's
    own policies do. Keywords other than NeuralPolicy's go to the plain class's __init__ (those it takes)."""

    def __init__(
        self,
        policy_env_info: PolicyEnvInterface,
        device: str = "cpu",
        seed: int = 0,
        hidden_size: int = 128,
        greedy: bool = False,
        *,
        policy_class_path: str,
        **policy_kwargs: Any,
    ):
        self.policy_class_path = defining_path(load_policy_class(policy_class_path))
        self.policy_kwargs = policy_kwargs
        super().__init__(policy_env_info, device=device, seed=seed, hidden_size=hidden_size, greedy=greedy)

    def _build_network(self, hidden_size: int) -> nn.Module:
        # The plain class sizes its own network: hidden_size is DAF's networks' setting, not passed on.
        cls = load_policy_class(self.policy_class_path)
        hosted = build_plain_policy(cls, self.policy_env_info, self.seed, self.device, **self.policy_kwargs)
        network = network_of(hosted)
        if network is None:
            raise NetworkContractError(
                f"{self.policy_class_path} carries no network: set `self.network` to a torch.nn.Module in __init__ "
                "or override network() to return one"
            )
        return adapt_network(network.to(self.torch_device))

    def untrained_copy(self, seed: int) -> HostedNetworkPolicy:
        return type(self)(
            self.policy_env_info,
            device=self.device,
            seed=seed,
            hidden_size=self.hidden_size,
            policy_class_path=self.policy_class_path,
            **self.policy_kwargs,
        )

    def weights_meta(self) -> dict[str, Any]:
        return {**super().weights_meta(), "hosted": self.policy_class_path}

    def check_weights_meta(self, meta: dict[str, Any], policy_data_path: str) -> None:
        trained_for = meta.get("hosted")
        if trained_for != self.policy_class_path:
            raise CheckpointError(
                f"{policy_data_path} holds the weights of {trained_for or 'a DAF policy'}, not of "
                f"{self.policy_class_path}"
            )
        super().check_weights_meta(meta, policy_data_path)

    def checkpoint_spec(self, class_path: str) -> tuple[str, dict[str, Any]]:
        # mettagrid's loader rebuilds the adapter, which loads the weights into the plain class's network.
        _, init_kwargs = super().checkpoint_spec(class_path)
        return HOSTED_CLASS_PATH, {**init_kwargs, "policy_class_path": self.policy_class_path}


def hosted_spec(spec: PolicySpec) -> PolicySpec:
    """The spec to load for `spec`: a DAF weights file of a plain class is loaded into `HostedNetworkPolicy` (see the
    module docstring), its class named by `defining_path`; every other spec is returned as it is."""
    if not spec.data_path or spec.class_path == HOSTED_CLASS_PATH:
        return spec
    cls = load_policy_class(spec.class_path)
    if not is_plain_policy(cls):
        return spec
    try:
        meta = load_weights(spec.data_path).get("meta", {})
    except CheckpointError:
        return spec  # not a DAF weights file (or none): the class's own data, for its own load_policy_data
    if "hosted" not in meta:
        return spec
    return _adapter_spec(defining_path(cls), spec.init_kwargs, spec.data_path)


def trainable_spec(class_path: str, init_kwargs: dict[str, Any]) -> PolicySpec:
    """The spec DAF's trainer builds its untrained policy from: the class itself when it is one of DAF's, the
    adapter around it when it is a plain policy."""
    cls = load_policy_class(class_path)
    if is_plain_policy(cls):
        return _adapter_spec(defining_path(cls), init_kwargs)
    return PolicySpec(class_path=class_path, init_kwargs=init_kwargs)


def _adapter_spec(policy_class_path: str, init_kwargs: dict[str, Any], data_path: str | None = None) -> PolicySpec:
    kwargs = {**init_kwargs, "policy_class_path": policy_class_path}
    return PolicySpec(class_path=HOSTED_CLASS_PATH, data_path=data_path, init_kwargs=kwargs)
