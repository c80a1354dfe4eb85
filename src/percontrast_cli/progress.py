"""Progress and messages: rich bars on a terminal, plain lines in logs and pipes, and everything also on the
``percontrast`` logger, which Hydra's job log file records."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from transformers import TrainerCallback

from percontrast_cli import interrupts
from percontrast_cli.distributed import is_main

console = Console(stderr=True)
log = logging.getLogger("percontrast")
T = TypeVar("T")


def say(message) -> None:
    """Print a message (rich markup or a renderable) and record its plain text in the job log (rank 0 only
    in a multi-process run)."""
    if not is_main():
        return
    console.print(message)
    if isinstance(message, str):
        log.info(Text.from_markup(message).plain)
    else:
        plain = Console(width=250, record=True, file=_Discard())
        plain.print(message)
        log.info("\n" + plain.export_text())


class _Discard:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(description: str, done: int, total: int, started: float, info: str = "") -> str:
    """``description: 25/300 loss 1.2 | elapsed 0:00:12 eta 0:02:12``: what logs and pipes get."""
    elapsed = time.monotonic() - started
    eta = elapsed / done * (total - done) if done else 0.0
    extra = f" {info}" if info else ""
    return f"{description}: {done}/{total}{extra} | elapsed {_clock(elapsed)} eta {_clock(eta)}"


def _plain(line: str) -> None:
    if not is_main():
        return
    log.info(line)
    if not console.is_terminal:
        console.print(line, markup=False, highlight=False)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
        disable=not console.is_terminal or not is_main(),
    )


def track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    """A rich bar on a terminal; otherwise (and always in the job log) a plain line every tenth."""
    started, every = time.monotonic(), max(1, total // 10)
    with _progress() as progress:
        task = progress.add_task(description, total=total, info="")
        for done, item in enumerate(items, start=1):
            yield item
            progress.advance(task)
            if done % every == 0 or done == total:
                _plain(progress_line(description, done, total, started))


class RichProgressCallback(TrainerCallback):
    """Replaces the Trainer's tqdm bar: one rich bar per training run with the latest loss on a terminal,
    and a plain line per logging interval (step, losses, elapsed, ETA) in logs and pipes."""

    def __init__(self, description: str):
        self.description = description
        self.progress: Progress | None = None
        self.task = None
        self.started = time.monotonic()
        self.first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress = _progress()
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=state.max_steps, info="")
        self.progress.update(self.task, completed=state.global_step)
        self.started = time.monotonic()
        interrupts.training_started(self.description, state.global_step, state.max_steps, self.progress)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_step == 0 and state.global_step:  # a resumed run: the ETA counts from here
            self.first_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step)
        interrupts.training_step(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        interrupts.training_saved(state.global_step)  # what a rerun resumes from

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs or "loss" not in logs:
            return
        self.progress.update(self.task, info=f"loss {logs['loss']:.4f}")
        info = " ".join(
            f"{key.replace('_loss', '')} {logs[key]:.4f}"
            for key in ("loss", "personal_loss", "nonpersonal_loss", "weight_mean")
            if key in logs
        )
        done, total = state.global_step - self.first_step, state.max_steps - self.first_step
        line = progress_line(self.description, done, total, self.started, info)
        _plain(line.replace(f": {done}/{total}", f": step {state.global_step}/{state.max_steps}", 1))

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
        interrupts.training_ended()
