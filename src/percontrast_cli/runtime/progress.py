"""Progress and messages: rich bars on a terminal, plain lines in logs and pipes, and everything also on the
``percontrast`` logger, which Hydra's job log file records.

Two streams, so ``percontrast ... > results.txt`` keeps the results apart from the chatter:

- stdout (``show``): what a command produces for the reader: metrics tables, the artifacts table, the
  report table, the sweep directory and the ``report`` command to run next;
- stderr (``say``, ``warn``, progress lines and bars): what the run is doing, reused stages, warnings.

Off a terminal nothing is wrapped: one message, one progress step, is one line of the log, and a table keeps
its natural width (a terminal still gets rich's wrapping at its own width)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console, ConsoleDimensions
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from percontrast_cli.runtime.distributed import is_main

# The width a console takes off a terminal: wide enough that no message or table is ever wrapped.
UNWRAPPED = 10_000


class _Stream(Console):
    """A console as wide as it needs to be off a terminal (a log file or a pipe has no width to honour: rich
    would otherwise wrap at 80 columns, and one message would become several log lines)."""

    def _size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)
        return size if self.is_terminal else ConsoleDimensions(UNWRAPPED, size.height)

    size = property(_size, Console.size.fset)


console = _Stream(stderr=True)  # progress and diagnostics
out = _Stream()  # results
log = logging.getLogger("percontrast")
T = TypeVar("T")


def say(message) -> None:
    """Print a progress message (rich markup or a renderable) on stderr and record its plain text in the job
    log (rank 0 only in a multi-process run)."""
    _emit(console, message, logging.INFO)


def show(message) -> None:
    """Print a result (a table, a path, a command to run next) on stdout, and record it in the job log."""
    _emit(out, message, logging.INFO)


def warn(message: str, fix: str | None = None) -> None:
    """A warning that cannot be missed: on stderr in bold, followed by its fix (on the same line: one message,
    one line of the log), and at WARNING level in the job log."""
    text = f"[bold red]warning:[/bold red] [bold]{message}[/bold]"
    if fix:
        text += f"; [bold red]fix:[/bold red] {fix}"
    _emit(console, text, logging.WARNING)


def _emit(stream: Console, message, level: int) -> None:
    if not is_main():
        return
    if isinstance(message, str):
        stream.print(message, soft_wrap=True)
        log.log(level, Text.from_markup(message).plain)
    else:
        stream.print(message)
        plain = Console(width=UNWRAPPED, record=True, file=_Discard())
        plain.print(message)
        log.log(level, "\n" + plain.export_text().rstrip())


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


def plain_line(line: str) -> None:
    if not is_main():
        return
    log.info(line)
    if not console.is_terminal:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def new_progress() -> Progress:
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
    with new_progress() as progress:
        task = progress.add_task(description, total=total, info="")
        for done, item in enumerate(items, start=1):
            yield item
            progress.advance(task)
            if done % every == 0 or done == total:
                plain_line(progress_line(description, done, total, started))


def warn_if_weights_never_moved(description: str, history: list[dict]) -> None:
    """A weighted loss whose every token weight sat at the lower clip bound all run long (PerCE on a model
    that does not use the profile yet: every score below clip_min) trained as CE with its loss scaled by a
    constant, which Adam's updates ignore: its numbers will equal CE's, and this says why."""
    shares = [entry["weight_at_min"] for entry in history if "weight_at_min" in entry]
    if shares and min(shares) >= 1.0:
        warn(
            f"{description}: every target token's weight sat at the lower clip bound (loss.clip_min) at "
            "every logged step: the scores never rose above it, so this trained as CE with a constant factor "
            "(under Adam: about the same updates as CE)",
            fix="a model that uses the profile: a longer warm-up (train.warmup_steps) or a pretrained model "
            "(model=smollm2); expected at experiment=miniature scale",
        )
