"""DAF policies and the registry that resolves their names."""

from daf.policies.registry import (
    DAF_POLICIES,
    NotTrainable,
    PolicyResolutionError,
    check_spec,
    is_trainable,
    list_policies,
    load_policy,
    load_policy_class,
    require_trainable,
    resolve_class_path,
    trainable_policies,
)

__all__ = [
    "DAF_POLICIES",
    "NotTrainable",
    "PolicyResolutionError",
    "check_spec",
    "is_trainable",
    "list_policies",
    "load_policy",
    "load_policy_class",
    "require_trainable",
    "resolve_class_path",
    "trainable_policies",
]
