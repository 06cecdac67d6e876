"""The one exception family that the CLI turns into a one-line message and exit code 2."""


class RegmixError(Exception):
    """A user-facing error: bad input, a bad config, a missing file.

    The message must fit on one line and say *which field* is wrong and *how to fix it*,
    e.g. ``domains[3].weight: -0.2 is negative; weights must be >= 0``.
    """


def one_line(error: BaseException) -> str:
    """The error's message on one line, always: a path or value with a newline in it must not split it."""
    return str(error).replace("\r", "\\r").replace("\n", "\\n")


class ConfigError(RegmixError):
    """A config file or config value failed validation."""


def check_choice(field: str, value: str, choices) -> str:
    """Validate ``value`` against a list of names; the error lists the valid ones."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{field}: unknown value {value!r}; choose one of {', '.join(map(str, choices))}")
    return value
