"""The exceptions the CLI turns into one ``lth: error:`` line instead of a traceback."""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound=BaseException)


class LthError(Exception):
    """A problem the user can act on: the message says what is wrong and what to do; ``exit_code`` for the CLI."""

    exit_code = 1


class ConfigError(LthError, ValueError):
    """A user-facing configuration problem: the message names the problem and the valid choices (exit code 2)."""

    exit_code = 2


class StoreError(LthError):
    """The MLflow store cannot be read or written as a study needs (a corrupt artifact, a read-only or broken
    database): the message names the run or file and what to do."""


def behind(exc: BaseException | None, kind: type[E]) -> E | None:
    """The exception of ``kind`` behind ``exc`` (itself, or what it was raised from or while handling), if any:
    Lightning, jsonargparse and MLflow wrap the errors raised in the code they call."""
    while exc is not None:
        if isinstance(exc, kind):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
