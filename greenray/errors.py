"""The one error a user can cause and fix; the CLI prints it as one sentence and exits 2."""


class UsageError(Exception):
    """Bad input: a flag, a file, a data set that is missing offline, a GPU that is not there.
    The message is one sentence that names the fix."""
