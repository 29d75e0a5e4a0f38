"""The one exception type that a CLI turns into a one-line message and exit code 2, and the quiet end of a CLI
whose output reader went away."""

import os
import sys


class UserInputError(Exception):
    """Bad input from the user (flags, files, data); the message names the problem and the fix."""


def error_line(error: BaseException) -> str:
    """'error: MESSAGE' on one line: line breaks inside a message (e.g. quoted from a library) become '; '."""
    parts = [part.strip() for part in str(error).splitlines() if part.strip()]
    return "error: " + ("; ".join(parts) or type(error).__name__)


def end_quietly_on_broken_pipe() -> int:
    """Exit code 1 for a CLI whose stdout reader (e.g. head) stopped early; stdout is pointed at /dev/null so
    that Python's own flush at exit raises nothing more."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1
