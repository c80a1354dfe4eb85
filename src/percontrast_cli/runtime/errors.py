"""One exception type for problems the user can fix (bad config, bad data, mismatched artifacts), and the
one-line wording of file-system faults (disk full, read-only, not a directory...).

The CLI prints these as one line and exits with status 2; anything else is a bug and keeps its traceback.
This module imports nothing heavy: the CLI's `--help` path uses it.
"""

from __future__ import annotations

import errno
import os
import re


class PercontrastError(Exception):
    """A user-facing error: the message must say what is wrong and where (file, row, field, artifact)."""


# The faults of the file system itself (as opposed to a missing input file, which the stages report).
FILESYSTEM_ERRNOS = {
    errno.ENOSPC: "free space there (or point PERCONTRAST_OUTPUTS at a larger disk) and rerun the same "
    "command: finished stages are kept and training resumes",
    errno.EDQUOT: "free space within your quota (or point PERCONTRAST_OUTPUTS elsewhere) and rerun the same "
    "command: finished stages are kept",
    errno.EROFS: "point PERCONTRAST_OUTPUTS (or paths.root) at a writable directory; a read-only store can "
    "only serve artifacts that already exist",
    errno.EACCES: "give this user access to it (read; write where the tool writes), or point "
    "PERCONTRAST_OUTPUTS (or paths.root) elsewhere",
    errno.EPERM: "give this user access to it (read; write where the tool writes), or point "
    "PERCONTRAST_OUTPUTS (or paths.root) elsewhere",
    errno.ENOTDIR: "a part of that path is a file, not a directory: point PERCONTRAST_OUTPUTS (or "
    "paths.root) at a directory",
    errno.EISDIR: "a directory stands where a file is written",
    errno.EIO: "the device reported an I/O error: check the disk",
    errno.EFBIG: "the file system does not allow files this large",
    errno.ENAMETOOLONG: "use a shorter PERCONTRAST_OUTPUTS / paths.root",
}

# Rust-backed libraries (safetensors, tokenizers) report OS errors as text: "... (os error 28)".
_RUST_OS_ERROR = re.compile(r"os error (\d+)")


def filesystem_errno(exc: BaseException) -> int | None:
    """The errno of a file-system fault behind `exc` (or its causes), None for anything else."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        code = exc.errno if isinstance(exc, OSError) else None
        if code is None and (match := _RUST_OS_ERROR.search(str(exc))):
            code = int(match.group(1))
        if code in FILESYSTEM_ERRNOS:
            return code
        exc = exc.__cause__ or exc.__context__
    return None


def filesystem_message(exc: BaseException, path: str | os.PathLike | None = None) -> str | None:
    """`<path>: No space left on device; free space there ...`: one line naming the path and the cause, or
    None when `exc` is not a file-system fault. `path` names the place when the exception does not (Python's
    write errors and the Rust libraries' carry no file name)."""
    code = filesystem_errno(exc)
    if code is None:
        return None
    filename = getattr(exc, "filename", None)
    where = filename if filename is not None else path
    cause = os.strerror(code)
    prefix = f"{os.fsdecode(where)}: " if where is not None else ""
    return f"{prefix}{cause}; {FILESYSTEM_ERRNOS[code]}"
