"""The one exception type the CLI turns into a clear message instead of a traceback."""


class ConfigError(ValueError):
    """A user-facing configuration problem: the message names the problem and the valid choices."""
