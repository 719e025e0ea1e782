"""DAF policies and the registry that resolves their names."""

from daf.policies.registry import (
    DAF_POLICIES,
    PolicyResolutionError,
    check_spec,
    is_trainable,
    list_policies,
    load_policy,
    load_policy_class,
    resolve_class_path,
)

__all__ = [
    "DAF_POLICIES",
    "PolicyResolutionError",
    "check_spec",
    "is_trainable",
    "list_policies",
    "load_policy",
    "load_policy_class",
    "resolve_class_path",
]
