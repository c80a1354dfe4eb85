"""`percontrast plan <run's overrides, -m allowed>`: every job's stages, which are found, partly done or to
compute, with their work, estimated time and peak memory; then the totals, stages shared between jobs
counted once. Nothing is computed or written (cli/planning.py). After a `run`, the same plan, made before
the job started, is set against what each stage took (`estimate_vs_actual`)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from rich.table import Table

from percontrast_cli.runtime.progress import say, show
from percontrast_cli.store import calibration
from percontrast_cli.store.artifacts import JOB_ARTIFACTS, load_artifact

TRAINING = ("warm-up", "train")
CALIBRATE_HINT = (
    "measure it with `percontrast calibrate {overrides}` (a few steps of every stage on this machine, in a "
    "temporary store), or run one job: every run records what its stages cost"
)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def status_text(stage) -> str:
    if stage.status == "partly done":
        return f"partly done (resumable from step {stage.resume_step})"
    return stage.status


def plan_jobs(points: list) -> tuple[list, calibration.Record | None]:
    """Every job's plan, and the measured start of a process (a sweep runs in one: paid once)."""
    from percontrast_cli.cli.planning import JobPlan, Planner
    from percontrast_cli.steps.costs import calibration_key

    plans, loaded, startup = [], {}, None
    for number, (overrides, cfg) in enumerate(points):
        path = Path(str(cfg.paths.get("calibration") or ""))
        records = loaded.setdefault(path, calibration.load(path) if str(path) else [])
        planner = Planner(cfg, records)
        stages = planner.plan()
        plans.append(JobPlan(number, " ".join(overrides), stages, planner.notes))
        if number == 0:
            key = calibration_key(cfg, planner.ctx.device, planner.ctx.precision, "startup")
            startup = calibration.nearest(records, key)
    return plans, startup


def job_table(plans: list) -> Table:
    table = Table(title="plan", title_justify="left")
    for column in ("job", "stage", "id", "status", "steps", "training tokens", "generated tokens"):
        table.add_column(column)
    for column in ("time", "peak memory"):
        table.add_column(column)
    for plan in plans:
        for stage in plan.stages:
            table.add_row(
                f"#{plan.number} {plan.overrides}" if stage is plan.stages[0] else "",
                stage.name,
                stage.shown_id,
                status_text(stage),
                str(stage.steps) if stage.steps is not None else "unknown" if stage.name in TRAINING else "",
                stage.training_tokens or ("unknown" if stage.name in TRAINING else ""),
                "" if stage.generated_tokens is None else f"≤ {stage.generated_tokens:,}",
                time_text(stage),
                "" if stage.status == "found" else stage.memory.split(" (")[0] + memory_mark(stage),
            )
    return table


def time_text(stage) -> str:
    if stage.status == "found":
        return "-"
    if stage.kind == "checkpoint" and stage.name.startswith("point") and not stage.work:
        return "in train"  # a curve's point the training saves on the way: its time is the train stage's
    return duration(stage.seconds)


def memory_mark(stage) -> str:
    for mark in ("measured", "estimate"):
        if mark in stage.memory:
            return f" ({mark})"
    return ""


def distinct_stages(plans: list) -> tuple[dict, int]:
    """The distinct stages of a sweep (a stage two jobs share is computed once) and how many are shared."""
    unique, uses = {}, {}
    for plan in plans:
        for stage in plan.stages:
            unique.setdefault((stage.kind, stage.id), stage)
            uses[(stage.kind, stage.id)] = uses.get((stage.kind, stage.id), 0) + 1
    return unique, sum(1 for count in uses.values() if count > 1)


def estimated_total(plans: list, startup: calibration.Record | None) -> tuple[float, int, float]:
    """(estimated seconds of what is left, including the process's start; stages whose time is unknown;
    the start's share)."""
    left = [s for s in distinct_stages(plans)[0].values() if s.status != "found"]
    start = startup.seconds_per_unit if startup is not None and left else 0.0
    known = sum(s.seconds for s in left if s.seconds is not None)
    return known + start, sum(1 for s in left if s.seconds is None), start


def totals(plans: list, startup: calibration.Record | None = None) -> list[str]:
    unique, shared = distinct_stages(plans)
    left = sum(1 for s in unique.values() if s.status != "found")
    seconds, unknown, start = estimated_total(plans, startup)
    time = duration(seconds)
    if unknown:
        time = f"≥ {time} (unknown for {unknown} of them)" if seconds else f"unknown for {unknown} of them"
    if start:
        time += (
            f", with {duration(start)} to start the process ({calibration.describe(startup, startup.key)})"
        )
    return [
        f"jobs: {len(plans)}; distinct stages: {len(unique)} ({shared} shared between jobs, counted once)",
        f"found: {len(unique) - left}; to compute (or finish): {left}; estimated time: {time}",
    ]


def bases(plans: list) -> list[str]:
    seen: dict[str, None] = {}
    for plan in plans:
        for stage in plan.stages:
            if stage.status != "found" and stage.basis:
                seen.setdefault(f"{stage.name}: {stage.basis}", None)
    return list(seen)


def show_plan(points: list, overrides: list[str]) -> None:
    """The plan of a sweep's points ((overrides, composed config) pairs) on stdout."""
    plans, startup = plan_jobs(points)
    show(job_table(plans))
    for line in totals(plans, startup):
        show(line)
    for line in bases(plans):
        show(f"  time of {line}")
    notes = dict.fromkeys(note for plan in plans for note in plan.notes)
    for note in notes:
        show(f"note: {note}")
    if any(s.seconds is None and s.status != "found" for p in plans for s in p.stages):
        words = " ".join(shlex.quote(word) for word in overrides if "," not in word)
        show("unknown times: " + CALIBRATE_HINT.format(overrides=words).replace("  ", " "))
    estimates = dict.fromkeys(
        stage.memory for p in plans for stage in p.stages if stage.status != "found" and stage.memory
    )
    for memory in estimates:
        show(f"  peak memory {memory}")


# --- after a run -------------------------------------------------------------------------------------------


def planned_job(cfg, data) -> list | None:
    """The job's plan before it runs (None, said, when it cannot be made: a run never fails for it)."""
    from percontrast_cli.cli.planning import Planner

    try:
        records = calibration.load(Path(str(cfg.paths.calibration))) if cfg.paths.get("calibration") else []
        return Planner(cfg, records, data).plan()
    except Exception as exc:  # the plan is advice: a run goes on without it
        say(f"[yellow]plan[/yellow]: no estimate for this job ({type(exc).__name__}: {exc})")
        return None


def estimate_vs_actual(stages: list | None, job_directory: Path | None, store_root: Path) -> None:
    """What each stage computed by this job took, beside what `plan` estimated for it."""
    if not stages or job_directory is None or not (job_directory / JOB_ARTIFACTS).is_file():
        return
    made = json.loads((job_directory / JOB_ARTIFACTS).read_text())
    table = Table(title="time: plan's estimate vs actual", title_justify="left")
    for column in ("stage", "id", "estimated", "actual", "actual / estimated"):
        table.add_column(column)
    rows = 0
    for stage in stages:
        path = store_root / stage.kind / str(made.get(stage.role))
        if stage.status == "found" or stage.role not in made or not path.is_dir():
            continue
        actual = (load_artifact(path).manifest.get("timing") or {}).get("seconds")
        if actual is None:
            continue
        ratio = f"{actual / stage.seconds:.2f}" if stage.seconds else "-"
        table.add_row(stage.name, made[stage.role], duration(stage.seconds), duration(actual), ratio)
        rows += 1
    if rows:
        show(table)
