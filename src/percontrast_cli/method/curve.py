"""Points along one training run (`eval.at_steps`): the training seconds and tokens up to every optimiser
step, the model handed out at chosen steps (to be saved as checkpoints), and an early stop."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from percontrast_cli.runtime.progress import say

SECONDS_FILE = "train_seconds.json"  # in each Trainer checkpoint: the seconds measured up to it


@dataclass(frozen=True)
class Progress:
    step: int  # optimiser steps taken
    # training tokens fed (non-padding, every process; the counterfactual pass not counted). Under several
    # processes a rank with no example left in an epoch's last batch feeds a 2-token filler row
    # (method.trainer): the count can exceed one process's by at most 2 x (processes - 1) tokens an epoch
    tokens: int
    seconds: float | None  # measured training time, PerCE's extra forward pass included; None: not measured
    # from the start (a resume from a Trainer checkpoint that does not record it)

    def record(self) -> dict:
        return {"step": self.step, "train_tokens": self.tokens, "train_seconds": self.seconds}


# publish(progress, gather): save the model at progress.step; gather() returns the complete model on rank 0
# (None elsewhere) and is a collective: every rank calls publish.
Publish = Callable[[Progress, Callable[[], object]], None]


class CurvePoints(TrainerCallback):
    """Measures the time of the optimiser steps (forward, backward, step and the batches' loading), not the
    time spent logging, writing Trainer checkpoints or publishing points; calls ``publish`` after each step in
    ``steps``; stops the run after ``stop_after`` steps (the later points and the end exist already)."""

    def __init__(self, steps=(), publish: Publish | None = None, stop_after: int | None = None):
        self.steps, self.publish, self.stop_after = set(steps), publish, stop_after
        self.seconds: float | None = 0.0
        self.mark = time.perf_counter()
        self.gather: Callable[[], object] = lambda: None  # set by fit: trained_model(trainer)

    def resume(self, checkpoint: str | None) -> str | None:
        """The Trainer checkpoint to resume from (None: start afresh), continuing the seconds measured up to
        it: none past a step still to publish (eval.at_steps gained a step since it was written)."""
        if checkpoint is None:
            return None
        if any(step <= int(Path(checkpoint).name.split("-")[-1]) for step in self.steps):
            say(f"[yellow]not resuming[/yellow] from {checkpoint}: eval.at_steps has a step before it")
            return None
        path = Path(checkpoint) / SECONDS_FILE
        self.seconds = json.loads(path.read_text())["seconds"] if path.is_file() else None
        return checkpoint

    def progress(self, state) -> Progress:
        return Progress(state.global_step, int(state.num_input_tokens_seen), self.seconds)

    def on_train_begin(self, args, state, control, **kwargs):
        self.mark = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.seconds is not None:
            self.seconds += time.perf_counter() - self.mark
        if self.publish is not None and state.global_step in self.steps:
            self.publish(self.progress(state), self.gather)
        if self.stop_after is not None and state.global_step >= self.stop_after:
            control.should_training_stop = True
        self.mark = time.perf_counter()

    def on_log(self, args, state, control, **kwargs):
        self.mark = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.seconds is not None:
            directory = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            (directory / SECONDS_FILE).write_text(json.dumps({"seconds": self.seconds}))
        self.mark = time.perf_counter()
