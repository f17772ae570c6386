"""The one exception the CLI turns into a single line on stderr and exit code 2."""


class GpunetError(Exception):
    """A problem the user can fix: the message says what is wrong and how to fix it."""
