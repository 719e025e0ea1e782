"""DAF: a workflow layer to train, evaluate, sweep, compare and package mettagrid policies."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("daf")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"
