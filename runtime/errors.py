"""The one exception type that a CLI turns into a one-line message and exit code 2."""


class UserInputError(Exception):
    """Bad input from the user (flags, files, data); the message names the problem and the fix."""


def error_line(error: BaseException) -> str:
    """'error: MESSAGE' on one line: line breaks inside a message (e.g. quoted from a library) become '; '."""
    parts = [part.strip() for part in str(error).splitlines() if part.strip()]
    return "error: " + ("; ".join(parts) or type(error).__name__)
