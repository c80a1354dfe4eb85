"""Published files take the modes the process's umask gives new files: libraries that write through private
temp files (safetensors' weights come out 0600) would otherwise make a group-shared store unreadable to the
group (umask 002 or 007: group-readable and -writable files)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: set it straight back
    os.umask(mask)
    return mask


def follow_umask(directory: Path) -> None:
    """Every file and directory under `directory` (and itself) with the mode a new one gets under the umask
    (executable bits kept as they are for files)."""
    mask = current_umask()
    for path in [directory, *directory.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        if path.is_dir():
            wanted = 0o777 & ~mask
        else:
            executable = mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            wanted = (0o666 | executable) & ~mask
        if stat.S_IMODE(mode) != wanted:
            os.chmod(path, wanted)
