"""Teacher-forced scoring of the training set: PerContrast estimates and LossCE's reference NLL."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from percontrast_cli.method.estimate import (
    TokenRecord,
    auroc,
    classifier_metrics,
    load_labels,
    load_scores,
    save_scores,
    teacher_forced_pass,
)
from percontrast_cli.method.score_table import ScoreTable
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.runtime.progress import say
from percontrast_cli.steps import costs
from percontrast_cli.steps.context import Context
from percontrast_cli.steps.diagnostics import check_scores
from percontrast_cli.steps.models import load_model, named_checkpoint
from percontrast_cli.steps.produce import produce
from percontrast_cli.steps.task_data import TaskData, encode_items, retriever, retriever_fingerprint
from percontrast_cli.store.artifacts import Artifact
from percontrast_cli.store.identity import scores_identity


def estimate(ctx: Context, checkpoint: Artifact, data: TaskData) -> Artifact:
    """PerContrast scores of `checkpoint` for every training example, as an `estimate` artifact (AUROC against
    the ground-truth personal spans when the task has them; precision/recall/F1 at `estimator.tau` are
    computed from the stored scores when shown, see `estimate_metrics`)."""
    return score_training_set(ctx, "estimate", checkpoint, data)


def reference_nll(ctx: Context, reference: Artifact, data: TaskData) -> Artifact:
    """LossCE's reference: the per-token NLL of `reference` (the start checkpoint) on the training targets."""
    return score_training_set(ctx, "reference", reference, data)


def score_training_set(ctx: Context, kind: str, checkpoint: Artifact, data: TaskData) -> Artifact:
    """A teacher-forced pass of `checkpoint` over the training set: factual and counterfactual passes
    (`estimate`) or the factual NLL alone (`reference`)."""
    identity = training_set_identity(ctx, kind, checkpoint, data)

    def build(tmp: Path, manifest: dict) -> str:
        model, tokenizer = load_model(ctx, checkpoint)
        model.to(ctx.device)
        contrast = kind == "estimate"
        items = encode_items(tokenizer, data.train, ctx.cfg, with_counterfactual=contrast)
        started = time.perf_counter()
        records = teacher_forced_pass(
            model, tokenizer.pad_token_id, items, ctx.cfg.estimator.batch_size, ctx.device, kind, contrast
        )
        manifest["work"] = [costs.scoring_work(records, time.perf_counter() - started, contrast)]
        return write_scores(ctx, tmp, manifest, kind, data, records, checkpoint.id)

    artifact = produce(ctx, identity, build, role=kind)
    if kind == "estimate":
        show_estimate_metrics(ctx, artifact)
    return artifact


def training_set_identity(ctx: Context, kind: str, checkpoint: Artifact, data: TaskData):
    """The identity of the estimate/reference `score_training_set` makes of `checkpoint`."""
    return scores_identity(
        ctx.cfg,
        kind,
        precision=ctx.precision,
        checkpoint=checkpoint.id,
        data_fp=data.train_fp,
        tokenizer_fp=checkpoint.inputs["tokenizer"],
        retriever_fp=retriever_fingerprint(ctx.cfg),
    )


def write_scores(ctx, tmp: Path, manifest: dict, kind: str, data: TaskData, records, source: str) -> str:
    """The per-token values (estimate: PerContrast scores; reference: the reference NLL), with the personal
    labels beside them, after checking every value is finite."""
    rows = [r.scores for r in records] if kind == "estimate" else [-r.logp for r in records]
    for example, values in zip(data.train, rows, strict=True):
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise PercontrastError(
                f"{kind}: non-finite score for example {example.id!r} at target token {bad}: the model "
                f"({source}) gives NaN or infinite log-probabilities there"
            )
    if kind == "estimate":
        check_scores(rows, ctx.cfg)  # all zero: an error when the loss reads them, else a warning
    save_scores(tmp, [e.id for e in data.train], rows, [r.personal for r in records])
    if kind == "estimate":
        # threshold-free, so it may be stored under an id without `tau`
        manifest["metrics"] = {} if (score := auroc(records)) is None else {"estimator_auroc": score}
    return ""


def estimate_metrics(artifact: Artifact, tau: float) -> dict[str, float]:
    """AUROC, and precision/recall/F1 of ``s_t > tau`` against the personal spans, from an estimate's stored
    scores: `tau` is read here, where it is used, never stored under the estimate's id."""
    scores, labels = load_scores(artifact.path), load_labels(artifact.path)
    if labels is None:
        return {}
    records = [TokenRecord(scores[i], np.zeros_like(scores[i]), scores[i], labels[i]) for i in scores]
    return classifier_metrics(records, tau)


def show_estimate_metrics(ctx: Context, artifact: Artifact) -> None:
    metrics = estimate_metrics(artifact, ctx.cfg.estimator.tau)
    shown = ", ".join(f"{k.removeprefix('estimator_')} {v:.4f}" for k, v in metrics.items())
    say(
        f"estimate {artifact.id}: train-split estimator at tau={ctx.cfg.estimator.tau}: "
        f"{shown or 'n/a (no personal-span labels)'}"
    )
    ctx.tracker.summary({f"estimate/{k}": v for k, v in metrics.items()})


def round_estimate(
    ctx: Context, start: Artifact, run_id: str, step: int, data: TaskData, items, model, pad_id: int
) -> ScoreTable:
    """refresh=rounds: the scores of the model being trained in run `run_id` after `step` optimiser steps,
    published as an `estimate` artifact (for `inspect`); read back from it when the run resumes."""
    identity = scores_identity(
        ctx.cfg,
        "estimate",
        precision=ctx.precision,
        checkpoint=start.id,  # the run's start, whose tokenizer the scores share
        data_fp=data.train_fp,
        tokenizer_fp=start.inputs["tokenizer"],
        training_run=run_id,
        after_step=step,
        retriever_fp=retriever_fingerprint(ctx.cfg),
    )

    def build(tmp: Path, manifest: dict) -> str:
        records = teacher_forced_pass(
            model, pad_id, items, ctx.cfg.estimator.batch_size, ctx.device, f"estimate (step {step})"
        )
        write_scores(ctx, tmp, manifest, "estimate", data, records, run_id)
        return f" (checkpoint {run_id} after step {step})"

    found = produce(ctx, identity, build, done="estimated")
    return score_table(found, data, start.inputs["tokenizer"])


def score_table(artifact: Artifact, data: TaskData, tokenizer_fp: str) -> ScoreTable:
    """Per-token values of an estimate/reference artifact, checked against the data and tokenizer in use."""
    artifact.require_input("data", data.train_fp, "training data")
    artifact.require_input("tokenizer", tokenizer_fp, "tokenizer")
    values = load_scores(artifact.path)
    return ScoreTable([torch.from_numpy(values[e.id]) for e in data.train])


def given_estimate(ctx: Context, data: TaskData) -> Artifact | None:
    """The estimate named on the command line, checked against the data before any work starts."""
    if ctx.cfg.estimate is None:
        return None
    if ctx.cfg.estimator.refresh != "rounds":
        raise PercontrastError("estimate=<id> gives fixed weights: use it with estimator.refresh=rounds")
    artifact = ctx.store.resolve("estimate", ctx.cfg.estimate)
    artifact.require_input("data", data.train_fp, "training data")
    return artifact


def scored_tokens(ctx: Context, estimate_artifact: Artifact, data: TaskData, index: int) -> tuple:
    """The target tokens of one training example with their PerContrast scores from an estimate artifact, and
    the request and retrieved profile before them."""
    from percontrast_cli.data.encode import MIN_PROMPT_TOKENS, encode_target, shown_prompt
    from percontrast_cli.data.prompts import PromptFormat, factual_profile
    from percontrast_cli.reporting.heatmap import PromptView, ScoredToken

    estimate_artifact.require_input("data", data.train_fp, "training data")
    if not 0 <= index < len(data.train):
        raise PercontrastError(
            f"example={index} is out of range: the training split has {len(data.train)} examples"
        )
    example = data.train[index]
    checkpoint = named_checkpoint(ctx, estimate_artifact.inputs["checkpoint"])
    _, tokenizer = load_model(ctx, checkpoint, with_model=False)
    target = encode_target(
        tokenizer, example, ctx.cfg.model.max_length - MIN_PROMPT_TOKENS, ctx.cfg.model.chat_template
    )
    scores = load_scores(estimate_artifact.path)[example.id]
    if len(scores) != len(target.ids):
        raise PercontrastError(
            f"estimate {estimate_artifact.id}: {len(scores)} scores for {len(target.ids)} tokens"
        )
    tokens = [
        ScoredToken(t, float(s), p) for t, s, p in zip(target.texts, scores, target.personal, strict=True)
    ]
    cfg, chosen = ctx.cfg, retriever(ctx.cfg)
    fitted = shown_prompt(
        tokenizer,
        example,
        k=cfg.retrieval.k,
        max_length=cfg.model.max_length,
        chat=cfg.model.chat_template,
        fmt=PromptFormat.from_config(cfg),
        retriever=chosen,
    )
    retrieved = factual_profile(example, cfg.retrieval.k, chosen) or []
    return example, tokens, PromptView(example.input, retrieved, fitted.items)
