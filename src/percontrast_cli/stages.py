"""The CLI stages, each a short recipe over the pipeline library."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from rich.console import Console
from rich.table import Table

from percontrast_cli import pipeline, report
from percontrast_cli.artifacts import ArtifactStore
from percontrast_cli.distributed import is_main
from percontrast_cli.errors import PercontrastError
from percontrast_cli.heatmap import html_heatmap, terminal_heatmap
from percontrast_cli.progress import console, say
from percontrast_cli.tracking import make_tracker
from percontrast_cli.validation import validate_config
from percontrast_cli.worker import job_dir


def quiet_libraries() -> None:
    """Our rich bars replace the libraries' own tqdm bars and info logs."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_warning()
    logging.getLogger("absl").setLevel(logging.WARNING)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PercontrastError("device=cuda but no CUDA device is available (use device=auto or device=cpu)")
    return torch.device(name)


def run_dir() -> str:
    """The job's directory: Hydra's, or in a distributed worker the parent's (worker.job_dir)."""
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.output_dir
    return str(job_dir() or ".")


@contextmanager
def context(cfg):
    validate_config(cfg)
    quiet_libraries()
    torch.manual_seed(cfg.seed)
    tracker = make_tracker(cfg, run_dir())
    store = ArtifactStore(cfg.paths.artifacts)
    try:
        yield pipeline.Context(cfg, store, pick_device(cfg.device), tracker)
    finally:
        store.release_all()  # locks of artifacts a failed stage did not publish
        tracker.finish()  # one tracker run per (multirun) job


def print_artifacts(artifacts) -> None:
    table = Table(title="artifacts")
    for column in ("kind", "id", "path"):
        table.add_column(column)
    for artifact in artifacts:
        table.add_row(artifact.kind, artifact.id, str(artifact.path))
    say(table)


def stage_estimate(cfg):
    with context(cfg) as ctx:
        data = pipeline.load_task(cfg)
        start = pipeline.starting_point(ctx, data)
        result = pipeline.estimate(ctx, start, data)
        print_artifacts([start, result])
        return result


def stage_train(cfg):
    with context(cfg) as ctx:
        data = pipeline.load_task(cfg)
        given = pipeline.given_estimate(ctx, data)
        start = pipeline.starting_point(ctx, data)
        result = pipeline.train_with_bootstrap(ctx, start, given, data)
        print_artifacts([start, result])
        return result


def stage_eval(cfg):
    with context(cfg) as ctx:
        if cfg.checkpoint is None:
            raise PercontrastError("eval needs checkpoint=<artifact id | path | latest>")
        data = pipeline.load_task(cfg)
        checkpoint = pipeline.named_checkpoint(ctx, cfg.checkpoint)
        result = pipeline.evaluate(ctx, checkpoint, data)
        print_artifacts([checkpoint, result])
        record_job_artifacts({"checkpoint": checkpoint.id, "eval": result.id})
        return result


def stage_run(cfg):
    """estimate -> train -> eval (with the base model and warm-up before them when needed)."""
    with context(cfg) as ctx:
        data = pipeline.load_task(cfg)
        given = pipeline.given_estimate(ctx, data)
        start = pipeline.starting_point(ctx, data)
        first = given or pipeline.estimate(ctx, start, data)
        trained = pipeline.train_with_bootstrap(ctx, start, first, data)
        result = pipeline.evaluate(ctx, trained, data)
        if cfg.tracker.name != "none":  # a heatmap of the first example, for the run's page
            _, tokens = pipeline.scored_tokens(ctx, first, data, 0)
            ctx.tracker.log_html("estimate/heatmap_example0", html_heatmap(tokens, f"estimate {first.id}"))
        print_artifacts([start, first, trained, result])
        ids = {"start": start.id, "estimate": first.id, "checkpoint": trained.id, "eval": result.id}
        record_job_artifacts(ids)
        return result


def record_job_artifacts(ids: dict[str, str]) -> None:
    """The job's artifact ids in its Hydra dir: `report` finds a sweep's evals (and scripts its checkpoints)
    from the sweep dir."""
    if (HydraConfig.initialized() or job_dir() is not None) and is_main():
        (Path(run_dir()) / report.JOB_ARTIFACTS).write_text(json.dumps(ids, indent=1))


def stage_report(cfg):
    """A comparison table (terminal, Markdown, CSV) and plots over a set of eval artifacts."""
    with context(cfg) as ctx:
        refs = [cfg.report.evals] if isinstance(cfg.report.evals, str) else list(cfg.report.evals)
        rows = [report.eval_row(ctx.store, e) for e in report.collect_evals(ctx.store, refs)]
        keys = report.group_keys(rows)
        summary = report.summarize(rows, keys)
        out_dir = Path(cfg.report.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        table = report.write_tables(summary, keys, out_dir)
        # A wide table: in logs and pipes (no terminal width to honour) print it unwrapped.
        (console if console.is_terminal else Console(stderr=True, width=250)).print(table)
        for metric in cfg.report.plot_metrics:
            report.plot_metric_vs(summary, metric, "loss.alpha", out_dir / f"{metric}_vs_alpha.png")
            if "train.lr" in keys:
                lr_plot = out_dir / f"{metric}_vs_lr.png"
                report.plot_metric_vs(summary, metric, "train.lr", lr_plot, log_x=True)
            if {"train_task", "task.name"} <= set(keys):
                report.plot_transfer_matrix(summary, metric, out_dir / f"{metric}_transfer_matrix.png")
        report.plot_token_losses(summary, out_dir / "token_loss_curves.png")
        say(f"report of {len(rows)} evals written to {out_dir}")
        return out_dir


def stage_inspect(cfg):
    """Terminal + HTML heatmap of one example's PerContrast scores."""
    with context(cfg) as ctx:
        if cfg.estimate is None:
            raise PercontrastError("inspect needs estimate=<artifact id | path | latest>")
        artifact = ctx.store.resolve("estimate", cfg.estimate)
        data = pipeline.load_task(cfg)
        example, tokens = pipeline.scored_tokens(ctx, artifact, data, cfg.example)
        title = f"estimate {artifact.id}, example {cfg.example} ({example.id})"
        console.print(f"[bold]{title}[/bold]  red: profile raises the token; underlined: personal spans")
        console.print(terminal_heatmap(tokens))
        top = Table(title=f"top {cfg.inspect.top_k} tokens")
        for column in ("token", "score", "personal"):
            top.add_column(column)
        for token in sorted(tokens, key=lambda t: t.score, reverse=True)[: cfg.inspect.top_k]:
            top.add_row(repr(token.text), f"{token.score:+.4f}", "yes" if token.personal else "")
        console.print(top)
        out = Path(
            cfg.inspect.out
            or Path(cfg.paths.root) / "inspect" / f"estimate-{artifact.id}-example-{cfg.example}.html"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html_heatmap(tokens, title, cfg.inspect.top_k))
        say(f"HTML heatmap: {out}")
        return out


STAGES = {
    "estimate": stage_estimate,
    "train": stage_train,
    "eval": stage_eval,
    "run": stage_run,
    "report": stage_report,
    "inspect": stage_inspect,
}
