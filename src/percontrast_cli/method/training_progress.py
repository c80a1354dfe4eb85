"""The Trainer callback behind a training run's progress: a rich bar on a terminal, plain lines in logs.

Apart from ``progress`` because it subclasses transformers' TrainerCallback: importing the Trainer's modules
takes seconds, and only a process that trains needs them (``report``, ``inspect`` and a rerun whose every
artifact exists start without)."""

from __future__ import annotations

import time

from rich.progress import Progress
from transformers import TrainerCallback

from percontrast_cli.runtime import interrupts
from percontrast_cli.runtime.progress import (
    new_progress,
    plain_line,
    progress_line,
    say,
    warn_if_weights_never_moved,
)


class RichProgressCallback(TrainerCallback):
    """Replaces the Trainer's tqdm bar: one rich bar per training run with the latest loss on a terminal,
    and a plain line per logging interval (step, losses, elapsed, ETA) in logs and pipes."""

    def __init__(self, description: str):
        self.description = description
        self.progress: Progress | None = None
        self.task = None
        self.started = time.monotonic()
        self.first_step: int | None = None  # the step the run started (or resumed) from

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress = new_progress()
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=state.max_steps, info="")
        self.progress.update(self.task, completed=state.global_step)
        self.started = time.monotonic()
        interrupts.training_started(self.description, state.global_step, state.max_steps, self.progress)

    def on_step_begin(self, args, state, control, **kwargs):
        # The Trainer loads a resumed run's state after on_train_begin: the first step tells.
        if self.first_step is not None:
            return
        self.first_step = state.global_step  # a resumed run: the ETA counts from here
        interrupts.training_resumed(state.global_step)  # ...and an interrupt now resumes from here again
        if state.global_step:
            say(
                f"{self.description}: resuming from step {state.global_step} of {state.max_steps} "
                "(the last Trainer checkpoint of an interrupted run)"
            )

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
        first = self.first_step or 0
        done, total = state.global_step - first, state.max_steps - first
        line = progress_line(self.description, done, total, self.started, info)
        plain_line(line.replace(f": {done}/{total}", f": step {state.global_step}/{state.max_steps}", 1))

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
        interrupts.training_ended()
        warn_if_weights_never_moved(self.description, state.log_history)
