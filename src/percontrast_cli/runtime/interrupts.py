"""Ctrl-C and SIGTERM: every cleanup runs (temp dirs, locks, the tracker), then one line says where the run
stopped and how to resume, with the shell's exit codes 130 (SIGINT) and 143 (SIGTERM).

SIGTERM (Slurm's preemption notice, `kill`, `timeout`) is raised as an exception in the main thread, like
Ctrl-C, so it unwinds the same way. The training loop reports its step here (progress.RichProgressCallback):
the rerun resumes from the last saved Trainer checkpoint, which the message names.
"""

from __future__ import annotations

import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C: `except Exception` handlers let it through, `finally` blocks run."""


_training: dict = {}  # what, step, total, saved: the training run in progress, if any
_live: list = []  # live progress displays to stop before the last line


def install() -> None:
    def on_sigterm(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, on_sigterm)


def training_started(what: str, step: int, total: int, display=None) -> None:
    _training.update(what=what, step=step, total=total, saved=step)
    if display is not None:
        _live.append(display)


def training_resumed(step: int) -> None:
    """The step a run starts from (the Trainer loads a resumed run's state after on_train_begin)."""
    _training.update(step=step, saved=step)


def training_step(step: int) -> None:
    _training["step"] = step


def training_saved(step: int) -> None:
    _training["saved"] = step


def training_ended() -> None:
    _training.clear()
    _live.clear()


def exit_code(exc: BaseException) -> int:
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


def message() -> str:
    """`interrupted at step N; rerun the same command to resume ...`, or without the step outside training."""
    for display in _live:
        try:
            display.stop()
        except Exception:  # the display is cosmetic: the line below is what matters
            pass
    if not _training:
        return "interrupted; rerun the same command to resume (finished stages are kept)"
    saved = _training["saved"]
    where = (
        f"from step {saved}, its last saved checkpoint"
        if saved
        else "from its start: no checkpoint was saved yet (train.save_every)"
    )
    return (
        f"interrupted at step {_training['step']} of {_training['total']} ({_training['what']}); rerun the "
        f"same command to resume: it continues {where}"
    )
