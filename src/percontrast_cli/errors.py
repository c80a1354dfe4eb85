"""One exception type for problems the user can fix (bad config, bad data, mismatched artifacts).

The CLI prints these as one line and exits with status 2; anything else is a bug and keeps its traceback.
"""


class PercontrastError(Exception):
    """A user-facing error: the message must say what is wrong and where (file, row, field, artifact)."""
