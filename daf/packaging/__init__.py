"""Policy bundles: build a deterministic CoGames-style zip, and validate one before it is shared.

- `format`: what a bundle holds and how its bytes are fixed (the format's description), the manifest's checksums;
- `build`: `build_package`, collecting the policy's source, weights and provenance into that zip;
- `validate`: `validate_package` and its report, in trust order through
  `extract` (an untrusted zip opened with limits), `checks` (the bundle read as data) and
  `sandbox` (the bundle's code imported and run in a child process).
"""

from daf.packaging.build import PackagingError, build_package, find_training_config, policy_source_files
from daf.packaging.validate import Check, PackageValidationError, ValidationReport, ensure_valid, validate_package
from daf.torch_files import unsafe_weights

__all__ = [
    "Check",
    "PackageValidationError",
    "PackagingError",
    "ValidationReport",
    "build_package",
    "ensure_valid",
    "find_training_config",
    "policy_source_files",
    "unsafe_weights",
    "validate_package",
]
