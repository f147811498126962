"""Errors a user can cause. Each carries a one-line message naming the thing at
fault and the exit code the CLI returns (2 for bad input, 1 for a failed run).

    >>> raise ConfigError("driftloop.yaml: policy.alpha: Input should be a valid number")
"""


class DriftloopError(Exception):
    """Base class: `str(err)` is the one-line message shown to the user."""

    exit_code = 1


class ConfigError(DriftloopError):
    """The configuration (or a file it names) is wrong. Nothing has been written."""

    exit_code = 2


class InputError(DriftloopError):
    """An argument or an input file given by the user is wrong."""

    exit_code = 2


class StageError(DriftloopError):
    """A stage of the loop failed at run time (training crashed, a model failed to load)."""

    exit_code = 1
