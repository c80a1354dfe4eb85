"""No orphans: the processes of a multi-process run end when the process that started them dies.

`percontrast ... distributed=ddp` starts a launcher agent (accelerate / torchrun) that starts the workers. A
`kill -9` of `percontrast` used to leave the agent and the workers running: they finished training and
published artifacts with no one to report to. Each of them now asks the kernel to kill it when its parent
dies (Linux's PR_SET_PDEATHSIG, set through ctypes), so the chain folds from the top within milliseconds;
elsewhere a watchdog thread polls the parent's pid every second. A parent that died before the request was
made (a race the kernel cannot see) is caught by comparing the parent's pid with the one it handed down.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading

PARENT_PID_ENV = "PERCONTRAST_PARENT_PID"  # set by each starting process for the children it starts
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_SECONDS = 1.0


def hand_down() -> dict[str, str]:
    """The environment entry a process sets for the children it is about to start."""
    return {PARENT_PID_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """End this process when its parent (the pid in PARENT_PID_ENV) dies; a no-op when it is not set (a
    worker started by hand)."""
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected or not expected.isdigit():
        return
    if not _parent_death_signal():
        threading.Thread(target=_watch, args=(int(expected),), daemon=True, name="orphan-watchdog").start()
    if os.getppid() != int(expected):  # the parent died before the request above was made
        _die()


def _parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when the thread that started it ends; whether that worked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int) -> None:
    stop = threading.Event()
    while not stop.wait(POLL_SECONDS):
        if os.getppid() != parent:
            _die()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup that could publish or print: the launcher is gone
