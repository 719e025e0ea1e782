"""The one mark of an error about what DAF was given (a config, a name, a path, a file), as opposed to a bug or a
failure while working: the CLI exits 2 with the error's one-line message for these, 1 with a traceback hint for
anything else. Each module keeps its own error type (ConfigError, UnknownMissionError, ...) and marks it here,
so the CLI needs no list of them and imports none of their modules to tell."""


class InputError(Exception):
    """Raised for input DAF refuses; subclasses also derive from the built-in type they always had."""
