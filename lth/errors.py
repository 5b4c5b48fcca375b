"""The exceptions the CLI turns into one ``lth: error:`` line instead of a traceback."""


class LthError(Exception):
    """A problem the user can act on: the message says what is wrong and what to do; ``exit_code`` for the CLI."""

    exit_code = 1


class ConfigError(LthError, ValueError):
    """A user-facing configuration problem: the message names the problem and the valid choices (exit code 2)."""

    exit_code = 2


class StoreError(LthError):
    """The MLflow store cannot be read or written as a study needs (a corrupt artifact, a read-only or broken
    database): the message names the run or file and what to do."""
