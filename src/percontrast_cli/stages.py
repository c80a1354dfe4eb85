"""The CLI stages, each a short recipe over the pipeline library."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from hydra.core.hydra_config import HydraConfig
from rich.table import Table

from percontrast_cli import pipeline
from percontrast_cli.artifacts import ArtifactStore
from percontrast_cli.errors import PercontrastError
from percontrast_cli.progress import console
from percontrast_cli.tracking import make_tracker
from percontrast_cli.validation import validate_config


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
    return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else "."


@contextmanager
def context(cfg):
    validate_config(cfg)
    quiet_libraries()
    torch.manual_seed(cfg.seed)
    tracker = make_tracker(cfg, run_dir())
    try:
        yield pipeline.Context(cfg, ArtifactStore(cfg.paths.artifacts), pick_device(cfg.device), tracker)
    finally:
        tracker.finish()  # one tracker run per (multirun) job


def print_artifacts(artifacts) -> None:
    table = Table(title="artifacts")
    for column in ("kind", "id", "path"):
        table.add_column(column)
    for artifact in artifacts:
        table.add_row(artifact.kind, artifact.id, str(artifact.path))
    console.print(table)


def stage_estimate(cfg):
    with context(cfg) as ctx:
        data = pipeline.load_task(cfg.task)
        start = pipeline.starting_point(ctx, data)
        result = pipeline.estimate(ctx, start, data)
        print_artifacts([start, result])
        return result


def stage_train(cfg):
    with context(cfg) as ctx:
        data = pipeline.load_task(cfg.task)
        given = pipeline.given_estimate(ctx, data)
        start = pipeline.starting_point(ctx, data)
        result = pipeline.train_with_bootstrap(ctx, start, given, data)
        print_artifacts([start, result])
        return result


def stage_eval(cfg):
    with context(cfg) as ctx:
        if cfg.checkpoint is None:
            raise PercontrastError("eval needs checkpoint=<artifact id | path | latest>")
        data = pipeline.load_task(cfg.task)
        checkpoint = pipeline.named_checkpoint(ctx, cfg.checkpoint)
        result = pipeline.evaluate(ctx, checkpoint, data)
        print_artifacts([checkpoint, result])
        return result


def stage_run(cfg):
    """estimate -> train -> eval (with the base model and warm-up before them when needed)."""
    with context(cfg) as ctx:
        data = pipeline.load_task(cfg.task)
        given = pipeline.given_estimate(ctx, data)
        start = pipeline.starting_point(ctx, data)
        first = given or pipeline.estimate(ctx, start, data)
        trained = pipeline.train_with_bootstrap(ctx, start, first, data)
        result = pipeline.evaluate(ctx, trained, data)
        print_artifacts([start, first, trained, result])
        return result


STAGES = {"estimate": stage_estimate, "train": stage_train, "eval": stage_eval, "run": stage_run}
