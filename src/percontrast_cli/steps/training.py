"""Training steps: the plain-CE warm-up of a model built from scratch, and the main training run."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from percontrast_cli.method.losses import CE, reads_artifact, reads_micro_batch_statistics, weight_source
from percontrast_cli.modeling.lora import save_trained, wrap_lora
from percontrast_cli.runtime.distributed import backend, is_main, rank_and_world
from percontrast_cli.runtime.progress import say
from percontrast_cli.steps import costs
from percontrast_cli.steps.context import Context
from percontrast_cli.steps.curve_points import Points, curve_steps, point_identities, publisher
from percontrast_cli.steps.models import load_model, named_checkpoint
from percontrast_cli.steps.produce import produce
from percontrast_cli.steps.scoring import estimate, reference_nll, round_estimate, score_table
from percontrast_cli.steps.task_data import TaskData, encode_items, retriever_fingerprint
from percontrast_cli.store.artifacts import Artifact
from percontrast_cli.store.identity import checkpoint_identity, process_count


def train_checkpoint(
    ctx: Context,
    start: Artifact,
    data: TaskData,
    loss_cfg,
    steps: int,
    tag: str,
    scores: Artifact | None = None,
    role: str = "checkpoint",
    at_steps: tuple[int, ...] = (),
) -> dict[int, Artifact]:
    """Train from `start` and publish a `checkpoint` artifact (skipped when it already exists), and one at
    each of ``at_steps`` on the way (0: `start` itself); returns them by step, the end at ``steps``.
    ``scores``: the estimate (refresh=rounds: the first round's) or reference artifact whose per-token values
    the weighting reads; without it a PerContrast weighting re-estimates inside every step."""
    cfg = ctx.cfg
    source = weight_source(loss_cfg, cfg.estimator.refresh)
    identity = training_identity(ctx, start, data, loss_cfg, steps, scores)
    identity_at = functools.partial(training_identity, ctx, start, data, loss_cfg, scores=scores)
    points = point_identities(cfg.train, steps, at_steps, source == "rounds", identity_at)
    missing = {
        step: point for step, point in points.items() if ctx.store.find("checkpoint", point.id) is None
    }
    layout = f"{cfg.distributed.name}-{process_count(cfg)}"  # a resume under another would not fit its state
    work_dir = ctx.store.root / ".work" / f"checkpoint-{identity.id}-{layout}"
    # recorded, not part of the id (the data and the settings that matter are)
    extra = {"tag": tag, "train_task": cfg.task.name}
    train = functools.partial(
        run_training, ctx, identity.id, start, data, loss_cfg, source, steps, tag, scores, work_dir
    )

    def build(tmp: Path, manifest: dict) -> str:
        resumed = resumable_step(work_dir) or 0
        trained, tokenizer = train(Points(missing, extra))
        manifest["work"] = training_work(trained.history, steps - resumed, source)
        if is_main():  # fit gathered the trained model (sharded or not) onto rank 0; it writes
            save_trained(trained.model, tokenizer, tmp)
            (tmp / "log_history.json").write_text(json.dumps(trained.history, indent=1))
        manifest["progress"] = trained.progress.record()
        return f" ({tag})"

    if missing and ctx.store.find("checkpoint", identity.id) is not None:
        # the end exists but not every point (at_steps added later): the run again, up to the last missing one
        say(f"{tag}: no checkpoint at steps {sorted(missing)} yet: training again up to step {max(missing)}")
        train(Points(missing, extra, stop_after=max(missing)))
    end = produce(ctx, identity, build, role=role, done="trained", extra=extra)
    shutil.rmtree(work_dir, ignore_errors=True)
    curve = {step: ctx.store.find("checkpoint", point.id) for step, point in points.items()}
    curve[steps] = end
    if 0 in at_steps:
        curve[0] = start
    return dict(sorted(curve.items()))


def resumable_step(work_dir: Path) -> int | None:
    """The optimiser step an interrupted training in `work_dir` resumes from (None: it starts afresh)."""
    from percontrast_cli.method.trainer import last_complete_checkpoint

    found = last_complete_checkpoint(work_dir)
    return int(Path(found).name.split("-")[-1]) if found else None


def training_work(history: list[dict], steps: int, source: str | None) -> list[dict]:
    """The training loop's time (the Trainer's own `train_runtime`) per optimiser step of this session."""
    runtime = next((entry["train_runtime"] for entry in reversed(history) if "train_runtime" in entry), None)
    if runtime is None or steps <= 0:
        return []
    return [costs.work_entry(f"train:{source or 'ce'}", steps, runtime)]


def training_identity(
    ctx: Context, start: Artifact, data: TaskData, loss_cfg, steps: int, scores=None, schedule_steps=None
):
    """The identity of the checkpoint `train_checkpoint` makes from these inputs (``schedule_steps``: see
    checkpoint_identity)."""
    source = weight_source(loss_cfg, ctx.cfg.estimator.refresh)
    return checkpoint_identity(
        ctx.cfg,
        # every CE-equivalent setting (loss=ce, any alpha; alpha 0, any weighting) trains one checkpoint
        loss=OmegaConf.to_container(loss_cfg if source else CE, resolve=True),
        source=source,
        steps=steps,
        precision=ctx.precision,
        start=start.id,
        data_fp=data.train_fp,
        tokenizer_fp=start.inputs["tokenizer"],
        scores=(scores.kind, scores.id) if scores is not None else None,
        schedule_steps=schedule_steps,
        micro_batch_statistics=bool(source) and reads_micro_batch_statistics(loss_cfg),
        retriever_fp=retriever_fingerprint(ctx.cfg),
    )


def run_training(ctx: Context, run_id, start, data, loss_cfg, source, steps, tag, scores, work_dir, points):
    """Load the start, wrap it (LoRA), encode the training set and fit, publishing `points` on the way;
    returns what fit returns, and the tokenizer."""
    # imported here: `train` imports transformers' Trainer (seconds), which a job whose checkpoint exists
    # never needs (a rerun of a finished sweep skips every job)
    from percontrast_cli.method.curve import CurvePoints
    from percontrast_cli.method.trainer import RoundsRefresh, fit

    cfg = ctx.cfg
    model, tokenizer = load_model(ctx, start, training=True)
    if cfg.train.peft == "lora":
        model = wrap_lora(model, cfg.train.lora)
    rounds = cfg.estimator.rounds if source == "rounds" else 1
    items = encode_items(tokenizer, data.train, cfg, with_counterfactual=source == "online" or rounds > 1)
    table = score_table(scores, data, start.inputs["tokenizer"]) if scores is not None else None
    callbacks = ()
    if rounds > 1:
        boundaries = [r * steps // rounds for r in range(1, rounds)]

        def rescore(step: int, current_model):
            return round_estimate(
                ctx, start, run_id, step, data, items, current_model, tokenizer.pad_token_id
            ).values

        callbacks = (RoundsRefresh(table, boundaries, rescore),)

    publish = publisher(ctx, points, tokenizer, f"{tag}, step {{}} of {steps}")
    curve = CurvePoints(points.identities, publish, points.stop_after)
    trained = fit(
        model,
        tokenizer,
        items,
        train_cfg=cfg.train,
        loss_cfg=loss_cfg,
        online_refresh=source == "online",
        steps=steps,
        seed=cfg.seed,
        work_dir=work_dir,
        device=ctx.device.type,
        bf16=ctx.precision == "bfloat16",
        ddp_backend=backend(cfg) if rank_and_world()[1] > 1 else None,
        tracker=ctx.tracker,
        description=f"train {tag}",
        score_table=table,
        extra_callbacks=callbacks,
        curve=curve,
    )
    return trained, tokenizer  # its model: rank 0's complete copy (None elsewhere)


def warmup(ctx: Context, base: Artifact, data: TaskData) -> Artifact:
    """Models trained from scratch get a plain-CE warm-up, shared by every loss and alpha of a sweep."""
    if not needs_warmup(ctx.cfg):
        return base
    ctx = warmup_context(ctx)
    steps = ctx.cfg.train.warmup_steps
    return train_checkpoint(ctx, base, data, CE, steps, tag="warmup", role="start")[steps]


def needs_warmup(cfg) -> bool:
    return bool(cfg.model.from_scratch) and cfg.train.warmup_steps > 0


def warmup_context(ctx: Context) -> Context:
    """The warm-up's settings: `train.warmup_lr`, when set, is its learning rate (one warm-up for a whole
    learning-rate sweep)."""
    if ctx.cfg.train.warmup_lr is None:
        return ctx
    cfg = ctx.cfg.copy()
    cfg.train.lr, cfg.train.warmup_lr = cfg.train.warmup_lr, None
    return dataclasses.replace(ctx, cfg=cfg)


def starting_point(ctx: Context, data: TaskData) -> Artifact:
    from percontrast_cli.steps.models import base_model

    if ctx.cfg.checkpoint is not None:
        return named_checkpoint(ctx, ctx.cfg.checkpoint)
    return warmup(ctx, base_model(ctx, data), data)


def total_steps(train_cfg, n_examples: int, processes: int | None = None) -> int:
    """Optimiser steps of the main training: ``train.steps``, or ``train.epochs`` passes over the data, in
    examples over all processes (N processes at batch B/N take the steps of one at batch B: RankShare), as
    the Trainer counts them: a short last accumulation window still ends an epoch with a step."""
    if train_cfg.epochs is None:
        return int(train_cfg.steps)
    batches = math.ceil(n_examples / (train_cfg.batch_size * (processes or rank_and_world()[1])))
    return max(1, math.ceil(train_cfg.epochs * math.ceil(batches / train_cfg.grad_accum)))


def needs_estimate(cfg) -> bool:
    """Whether the main training reads an estimate artifact (only refresh=rounds PerContrast weightings)."""
    return reads_artifact(weight_source(cfg.loss, cfg.estimator.refresh)) == "estimate"


def train_main(
    ctx: Context, start: Artifact, first_estimate: Artifact | None, data: TaskData
) -> dict[int, Artifact]:
    """Main training. PerCE re-estimates its weights every step (online) or every steps/N steps of the same
    run (rounds, starting from `first_estimate`); LossCE reads the start checkpoint's NLL; the other
    weightings read the training pass itself. Returns the checkpoints by step: the end (the last), and the
    points eval.at_steps names (0: the start)."""
    cfg = ctx.cfg
    scores = None
    if main_scores_kind(cfg) == "estimate":
        scores = first_estimate or estimate(ctx, start, data)
    elif main_scores_kind(cfg) == "reference":
        scores = reference_nll(ctx, start, data)
    steps = total_steps(cfg.train, len(data.train))
    at_steps = curve_steps(cfg, steps)
    return train_checkpoint(ctx, start, data, cfg.loss, steps, training_tag(cfg), scores, at_steps=at_steps)


def main_scores_kind(cfg) -> str | None:
    """The artifact kind the main training reads its token weights from (None: it reads none)."""
    return reads_artifact(weight_source(cfg.loss, cfg.estimator.refresh))


def training_tag(cfg) -> str:
    source = weight_source(cfg.loss, cfg.estimator.refresh)
    return f"{cfg.loss.name}-rounds" if source == "rounds" else cfg.loss.name
