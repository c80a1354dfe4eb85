"""The checkpoints a training run saves on the way (`eval.at_steps`): their identities, and publishing each as
the run passes its step (see method.curve for the callback that calls it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from percontrast_cli.method.schedule import why_not_prefix
from percontrast_cli.modeling.lora import save_snapshot
from percontrast_cli.runtime.distributed import is_main
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.runtime.progress import say
from percontrast_cli.steps.produce import produce
from percontrast_cli.store.identity import Identity


@dataclasses.dataclass(frozen=True)
class Points:
    """The checkpoints to publish on the way: identities by step, their manifests' extra entries, and where
    to stop (None: at the end)."""

    identities: dict[int, Identity]
    extra: dict
    stop_after: int | None = None


def curve_steps(cfg, steps: int) -> tuple[int, ...]:
    """eval.at_steps, refused when a step is past the run's end (`run` and `plan` alike)."""
    at_steps = tuple(cfg.eval.get("at_steps") or ())
    if beyond := [step for step in at_steps if step > steps]:
        raise PercontrastError(
            f"eval.at_steps={list(at_steps)}: step {beyond[0]} is past the training's end ({steps} optimiser "
            "steps; train.steps or train.epochs): list steps up to it (the end is evaluated anyway)"
        )
    return at_steps


def point_identities(
    train_cfg,
    steps: int,
    at_steps,
    rounds: bool,
    identity_at: Callable[..., Identity],
    tell: Callable[[str], object] = lambda line: say(f"[dim]{line}[/dim]"),
) -> dict[int, Identity]:
    """The checkpoint identity at each step of ``at_steps`` strictly inside a ``steps``-step run, from
    ``identity_at(step, schedule_steps=...)``. When the first s steps of the run are exactly an s-step run (a
    schedule whose learning rate does not depend on the run's length, e.g. constant), the point *is* that
    run's checkpoint and has its id, so runs of different lengths share their early checkpoints; otherwise it
    keys this run's length too (said once, in one line, to ``tell``: `plan` keeps it as a note, so that a
    `run`, which plans itself first, says it once). ``rounds``: estimator.refresh=rounds."""
    inside = sorted({step for step in at_steps if 0 < step < steps})
    reasons = {step: why_not_prefix(train_cfg, step, steps, rounds) for step in inside}
    if found := next((reason for reason in reasons.values() if reason is not None), None):
        tell(f"eval.at_steps: the points are this {steps}-step run's, not shorter runs' ({found})")
    return {
        step: identity_at(step, schedule_steps=None if reason is None else steps)
        for step, reason in reasons.items()
    }


def publisher(ctx, points: Points, tokenizer, note: str):
    """The CurvePoints callback's `publish`: the model at a point as a checkpoint artifact (``note`` formats
    the step into the "saved" line), its progress (step, tokens, seconds) in the manifest."""

    def publish(progress, gather) -> None:
        def build(tmp: Path, manifest: dict) -> str:
            model = gather()  # every rank: a sharded model is gathered onto rank 0
            if is_main():
                save_snapshot(model, tokenizer, tmp)
            return f" ({note.format(progress.step)})"

        extra = {**points.extra, "progress": progress.record()}
        produce(ctx, points.identities[progress.step], build, done="saved", extra=extra)

    return publish
