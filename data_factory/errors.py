"""The one exception type that a CLI turns into a one-line message and exit code 2."""


class UserInputError(Exception):
    """Bad input from the user (flags, files, data); the message names the problem and the fix."""
