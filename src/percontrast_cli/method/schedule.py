"""The learning-rate schedule's dependence on a run's length: whether the first steps of a long run are
exactly a shorter run (so a checkpoint saved at step s of the long run *is* the s-step run's checkpoint)."""

from __future__ import annotations

from percontrast_cli.store.identity import effective_lr_warmup

# Schedules whose learning rate at step t does not depend on the run's total steps (transformers' names).
LENGTH_FREE = ("constant", "constant_with_warmup")


def lr_warmup(train_cfg, steps: int) -> int:
    """The linear warm-up used: ``train.lr_warmup_steps``, capped at a tenth of the run (at least 1); the
    checkpoint's id keys this value (identity.effective_lr_warmup, the one formula)."""
    return effective_lr_warmup(train_cfg.lr_warmup_steps, steps)


def why_not_prefix(train_cfg, step: int, total: int, rounds: bool = False) -> str | None:
    """None when the first ``step`` optimiser steps of a ``total``-step run are those of a ``step``-step run
    with the same settings (the data order is seeded per epoch, not per run length); else why not, one line.
    ``rounds``: PerContrast re-estimated at fractions of the run (estimator.refresh=rounds)."""
    if step == total:
        return None
    if rounds:
        return "estimator.refresh=rounds re-estimates the weights at fractions of the whole run"
    if train_cfg.scheduler not in LENGTH_FREE:
        return f"train.scheduler={train_cfg.scheduler} sets each step's learning rate from the run's length"
    if train_cfg.scheduler == "constant_with_warmup" and lr_warmup(train_cfg, step) != lr_warmup(
        train_cfg, total
    ):
        return "the learning-rate warm-up is capped at a tenth of the run, so it depends on the run's length"
    return None
