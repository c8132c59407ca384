"""User-facing errors: one line that names what is wrong and how to fix it."""


class HHAlignError(Exception):
    """An error caused by user input; CLIs print its message alone and exit with status 2."""

    exit_code = 2
