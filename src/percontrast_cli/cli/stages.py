"""The CLI stages, each a short recipe over the steps (percontrast_cli.steps)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import open_dict
from rich.table import Table

from percontrast_cli.cli.tracking import make_tracker
from percontrast_cli.cli.validation import validate_config
from percontrast_cli.data.show import write_prompt
from percontrast_cli.evaluation.judge import enabled
from percontrast_cli.modeling.named import resolve_named
from percontrast_cli.reporting import report
from percontrast_cli.reporting.heatmap import clip_points, html_heatmap, scale_for, terminal_heatmap
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.runtime.progress import say, show
from percontrast_cli.steps.context import Context, pick_device
from percontrast_cli.steps.dialogue import evaluate_dialogue
from percontrast_cli.steps.evaluation import evaluate
from percontrast_cli.steps.example_loss import losses_by_normalizer
from percontrast_cli.steps.inherit import check_estimate_fits, inherit
from percontrast_cli.steps.models import base_model, load_model, named_checkpoint
from percontrast_cli.steps.produce import job_dir, record
from percontrast_cli.steps.scoring import estimate, given_estimate, scored_tokens
from percontrast_cli.steps.task_data import load_task, retriever
from percontrast_cli.steps.training import needs_estimate, starting_point, train_main
from percontrast_cli.store.artifacts import JOB_ARTIFACTS, Artifact, ArtifactStore


def quiet_libraries() -> None:
    """Our rich bars replace the libraries' own tqdm bars and info logs."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_warning()
    logging.getLogger("absl").setLevel(logging.WARNING)


def run_dir() -> str:
    """The job's directory: Hydra's, or in a distributed worker the parent's (the tracker writes there)."""
    return str(job_dir() or ".")


@contextmanager
def context(cfg):
    validate_config(cfg)
    quiet_libraries()
    torch.manual_seed(cfg.seed)
    tracker = make_tracker(cfg, run_dir())
    store = ArtifactStore(cfg.paths.artifacts)
    try:
        yield Context(cfg, store, pick_device(cfg.device), tracker)
    finally:
        store.release_all()  # locks of artifacts a failed stage did not publish
        tracker.finish()  # one tracker run per (multirun) job


def print_artifacts(artifacts, tracker) -> None:
    """The stage's artifacts: a table on stdout, and their metrics to the tracker (read from the manifests, so
    reused stages log theirs too)."""
    tracker.record_artifacts(artifacts)
    table = Table(title="artifacts")
    for column in ("kind", "id", "path"):
        table.add_column(column)
    for artifact in artifacts:
        table.add_row(artifact.kind, artifact.id, str(artifact.path))
    show(table)


def stage_estimate(cfg):
    with context(cfg) as ctx:
        data = load_task(cfg)
        start = starting_point(ctx, data)
        result = estimate(ctx, start, data)
        print_artifacts([start, result], ctx.tracker)
        return result


def stage_train(cfg):
    with context(cfg) as ctx:
        data = load_task(cfg)
        given = given_estimate(ctx, data)
        start = starting_point(ctx, data)
        curve = train_main(ctx, start, given, data)  # the end, and eval.at_steps' checkpoints on the way
        print_artifacts([start, *(checkpoint for step, checkpoint in curve.items() if step)], ctx.tracker)
        return curve[max(curve)]


def stage_eval(cfg):
    with context(cfg) as ctx:
        if cfg.checkpoint is None:
            raise PercontrastError("eval needs checkpoint=<artifact id | path | latest>")
        checkpoint = named_checkpoint(ctx, cfg.checkpoint)
        record("checkpoint", checkpoint.id)
        if cfg.task.source == "aloe":  # multi-turn dialogue with a simulated user (steps/dialogue.py)
            result = evaluate_dialogue(ctx, checkpoint)
        else:
            result = evaluate(ctx, checkpoint, load_task(cfg))
        print_artifacts([checkpoint, result], ctx.tracker)
        return result


def stage_run(cfg):
    """(base model -> warm-up ->) [estimate ->] train -> eval: the estimate only where training reads it."""
    from percontrast_cli.cli.plan import estimate_vs_actual, planned_job

    with context(cfg) as ctx:
        if enabled(cfg.eval.judge):  # a judge that cannot be found fails now, not after the training
            resolve_named(cfg.eval.judge, "eval.judge", ctx.store, cfg.paths.cache)
        data = load_task(cfg)
        planned = planned_job(cfg, data) if cfg.checkpoint is None and cfg.estimate is None else None
        given = given_estimate(ctx, data)
        start = starting_point(ctx, data)
        first = given or (estimate(ctx, start, data) if needs_estimate(cfg) else None)
        curve = train_main(ctx, start, first, data)
        end = max(curve)
        # eval.at_steps: the learning curve's points first, then the end (the job's `eval`)
        points = {step: evaluate(ctx, point, data, role=None) for step, point in curve.items() if step != end}
        result = evaluate(ctx, curve[end], data)
        if points:  # `report` reads the curve, by step, from the job's artifacts.json
            record("curve", {**{step: point.id for step, point in points.items()}, end: result.id})
        if (
            first is not None and cfg.tracker.name != "none"
        ):  # a heatmap of the first example, for the run's page
            _, tokens, prompt = scored_tokens(ctx, first, data, 0)
            page = html_heatmap(tokens, f"estimate {first.id}", prompt=prompt, clip=clip_points(cfg.loss))
            ctx.tracker.log_html("estimate/heatmap_example0", page)
        made = (
            start,
            first,
            *(checkpoint for step, checkpoint in curve.items() if step),
            *points.values(),
            result,
        )
        print_artifacts([a for a in made if a is not None], ctx.tracker)
        estimate_vs_actual(planned, job_dir(), ctx.store.root)  # how far to trust `percontrast plan`
        return result


# A few steps and examples of each kind: enough for a steady per-unit time, seconds for the embedded models.
CALIBRATION_STEPS = 6
CALIBRATION_EXAMPLES = 8


def stage_calibrate(cfg):
    """`run` at a few steps and examples, in a temporary store: what each stage costs on this machine, as
    the calibration records `percontrast plan` estimates from (paths.calibration); nothing else is kept."""
    import tempfile

    from omegaconf import open_dict

    from percontrast_cli.steps import costs

    with tempfile.TemporaryDirectory(prefix="percontrast-calibrate-") as store:
        small = cfg.copy()
        with open_dict(small):
            small.paths.artifacts = store
            small.train.steps = min(int(cfg.train.steps), CALIBRATION_STEPS)
            small.train.epochs = None
            small.train.warmup_steps = min(int(cfg.train.warmup_steps), CALIBRATION_STEPS)
            small.train.save_every = 10**9  # no Trainer checkpoints: they would be timed as steps
            small.eval.limit = min(cfg.eval.limit or CALIBRATION_EXAMPLES, CALIBRATION_EXAMPLES)
            small.eval.at_steps = []  # one training, one eval
        costs.SOURCE = "calibrate"
        try:
            result = stage_run(small)
        finally:
            costs.SOURCE = "run"
            made = job_dir() / JOB_ARTIFACTS if job_dir() else None
            if made is not None and made.is_file():  # its ids name artifacts of the deleted store
                made.unlink()
        say(f"calibrated: records appended to {cfg.paths.calibration}; `percontrast plan` now uses them")
        return result


def inspected_estimate(ctx: Context, data) -> Artifact:
    """`estimate=<ref>`; for `latest` before any estimate exists (online PerCE and CE runs compute none), the
    latest checkpoint is scored now, once, and kept as an estimate artifact."""
    if ctx.cfg.estimate == "latest" and ctx.store.latest("estimate") is None:
        checkpoint = ctx.store.resolve("checkpoint", "latest")
        say(f"no estimate yet: scoring the latest checkpoint, {checkpoint.id} (as `percontrast estimate`)")
        return estimate(ctx, checkpoint, data)
    return ctx.store.resolve("estimate", ctx.cfg.estimate)


def prepare(stage: str, cfg, overrides: list[str]):
    """Before a stage runs (and before any worker starts): a consumer takes its input's recorded settings.
    `eval checkpoint=X` and `inspect estimate=X` run on X's task, data, prompt and lengths unless the command
    line sets them (see steps.inherit); so does `inspect inspect.show=prompt checkpoint=X`."""
    if stage in ("train", "run") and cfg.estimate is not None:  # its scores, under this run's settings
        check_estimate_fits(cfg, ArtifactStore(cfg.paths.artifacts).resolve("estimate", cfg.estimate))
    ref_key = {"eval": "checkpoint", "inspect": "estimate"}.get(stage)
    if stage == "inspect" and cfg.inspect.show == "prompt" and cfg.estimate is None:
        ref_key = "checkpoint"  # the prompts the checkpoint was trained on
    if ref_key is None or cfg[ref_key] is None:
        return cfg
    store = ArtifactStore(cfg.paths.artifacts)
    if ref_key == "checkpoint":
        artifact = named_checkpoint(Context(cfg, store, torch.device("cpu"), None), cfg.checkpoint)
    elif cfg.estimate == "latest" and store.latest("estimate") is None:
        artifact = store.resolve("checkpoint", "latest")  # what inspected_estimate will score
    else:
        artifact = store.resolve("estimate", cfg.estimate)
    cfg = inherit(cfg, artifact, overrides)
    if cfg[ref_key] == "latest" and (ref_key == "checkpoint" or artifact.kind == "estimate"):
        # `latest` is read once: the stage (and every worker) uses this artifact, not whatever another job
        # publishes meanwhile, and the artifacts it passed over are named once
        say(f"{ref_key}=latest: {artifact.kind} {artifact.id} ({artifact.path})")
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg[ref_key] = artifact.id
    return cfg


def stage_report(cfg):
    """A comparison table (terminal, Markdown, CSV) and plots over a set of eval artifacts."""
    with context(cfg) as ctx:
        refs = [cfg.report.evals] if isinstance(cfg.report.evals, str) else list(cfg.report.evals)
        text, out_dir, count = report.make_report(ctx.store, refs, cfg.report)
        print(text, flush=True)  # the result: stdout, plain and narrow (logs and pipes get it unwrapped)
        say(f"report of {count} evals written to {out_dir}")
        return out_dir


def stage_inspect(cfg):
    """Terminal + HTML heatmap of one example's PerContrast scores, or (inspect.show=prompt) its prompt."""
    with context(cfg) as ctx:
        if cfg.inspect.show == "prompt":  # the prompt text the model is given: on stdout, nothing else
            data = load_task(cfg)
            model = named_checkpoint(ctx, cfg.checkpoint) if cfg.checkpoint else base_model(ctx, data)
            _, tokenizer = load_model(ctx, model, with_model=False)
            examples = data.train if cfg.inspect.split == "train" else data.test
            return write_prompt(cfg, tokenizer, examples, retriever(cfg))
        if cfg.estimate is None:
            raise PercontrastError("inspect needs estimate=<artifact id | path | latest>")
        data = load_task(cfg)
        artifact = inspected_estimate(ctx, data)
        example, tokens, prompt = scored_tokens(ctx, artifact, data, cfg.example)
        clip = clip_points(cfg.loss)
        title = f"estimate {artifact.id}, example {cfg.example} ({example.id})"
        show(f"[bold]{title}[/bold]  red: profile raises the token; underlined: personal spans")
        show(terminal_heatmap(tokens, scale_for(clip)))
        top = Table(title=f"top {cfg.inspect.top_k} tokens")
        for column in ("token", "score", "personal"):
            top.add_column(column)
        for token in sorted(tokens, key=lambda t: t.score, reverse=True)[: cfg.inspect.top_k]:
            top.add_row(repr(token.text), f"{token.score:+.4f}", "yes" if token.personal else "")
        show(top)
        losses = losses_by_normalizer(ctx, artifact, data, cfg.example, cfg.loss)
        if losses is not None:
            table = Table(title=f"this example's loss (loss={cfg.loss.name}, its weights from these scores)")
            table.add_column("loss.normalize")
            table.add_column("loss", justify="right")
            for how, value in losses.items():
                table.add_row(how, f"{value:.4f}")
            show(table)
        out = Path(
            cfg.inspect.out
            or Path(cfg.paths.root) / "inspect" / f"estimate-{artifact.id}-example-{cfg.example}.html"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html_heatmap(tokens, title, cfg.inspect.top_k, prompt, clip))
        show(f"HTML heatmap: {out} (open it with #values to show every score)")
        return out


STAGES = {
    "estimate": stage_estimate,
    "train": stage_train,
    "eval": stage_eval,
    "run": stage_run,
    "report": stage_report,
    "inspect": stage_inspect,
    "calibrate": stage_calibrate,
}
