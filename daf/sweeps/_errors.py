"""The one exception a sweep raises for its own reasons (as optuna.exceptions holds Optuna's)."""

from daf.errors import InputError


class SweepError(InputError, RuntimeError):
    """The sweep cannot run (invalid setup) or produced no completed trial; the message says why."""
