"""Evaluation: teacher-forced token metrics and generation metrics of a checkpoint on the test split."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from percontrast_cli.data.encode import end_of_turn_id
from percontrast_cli.data.schema import dataset_fingerprint
from percontrast_cli.evaluation.generate import generate, metrics_table, score_outputs, token_metrics
from percontrast_cli.evaluation.judge import judge_eval, judge_weights
from percontrast_cli.evaluation.sampling import per_sample, sample_numbers, sampling_of
from percontrast_cli.evaluation.text_metrics import wordnet
from percontrast_cli.method.estimate import teacher_forced_pass
from percontrast_cli.runtime.progress import show
from percontrast_cli.steps import costs
from percontrast_cli.steps.context import Context
from percontrast_cli.steps.models import load_model
from percontrast_cli.steps.produce import produce, write_jsonl
from percontrast_cli.steps.task_data import TaskData, encode_items, retriever_fingerprint
from percontrast_cli.store.artifacts import Artifact
from percontrast_cli.store.identity import eval_identity


def evaluate(ctx: Context, checkpoint: Artifact, data: TaskData, role: str | None = "eval") -> Artifact:
    """The eval of `checkpoint` on the test split (found or computed), recorded in the job as ``role``."""
    cfg = ctx.cfg
    test = eval_examples(cfg, data)
    identity = evaluation_identity(ctx, checkpoint, data)

    def build(tmp: Path, manifest: dict) -> None:
        wn = wordnet(cfg.paths.cache) if cfg.eval.meteor else None  # fails before generating without WordNet
        model, tokenizer = load_model(ctx, checkpoint)
        model.to(ctx.device)
        torch.manual_seed(cfg.seed)
        items = encode_items(tokenizer, test, cfg, with_counterfactual=True)
        started = time.perf_counter()
        records = teacher_forced_pass(
            model, tokenizer.pad_token_id, items, cfg.eval.batch_size, ctx.device, "score"
        )
        scored = costs.scoring_work(records, time.perf_counter() - started, contrast=True)
        metrics = token_metrics(records, cfg.estimator.tau)
        # Generation starts from the same (truncated) prompt ids that scoring used, and stops where the model
        # was trained to stop.
        stop_ids = sorted({end_of_turn_id(tokenizer, cfg.model.chat_template), tokenizer.eos_token_id})
        # eval.samples generations per target (one when greedy), each its own row; metrics pool them all, and
        # the report averages a target's samples before resampling targets.
        samples = cfg.eval.samples
        sampling = sampling_of(cfg.eval, cfg.seed, [e.id for e in test])
        targets = per_sample(test, samples)
        started = time.perf_counter()
        predictions, throughput = generate(
            model, tokenizer, per_sample(items, samples), cfg.eval, ctx.device, stop_ids, sampling
        )
        requested = len(targets) * cfg.eval.max_new_tokens  # the plan's count: an early stop makes it a bound
        generated = costs.work_entry("generate", requested, time.perf_counter() - started)
        manifest["work"] = [scored, generated]
        metrics.update(throughput)
        rows, scores = score_outputs(
            targets,
            predictions,
            per_sample(records, samples),
            cfg.eval,
            wn,
            pool=data.train + data.test,
            task=cfg.task.name,
        )
        numbers = sample_numbers(len(test), samples)
        for row, number in zip(rows, numbers, strict=True):
            row["sample"] = number
        metrics.update(scores)
        metrics.update(judge_eval(cfg, ctx.store, ctx.device, targets, predictions, rows))  # eval.judge
        manifest["metrics"] = metrics
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_jsonl(tmp / "per_example.jsonl", rows)
        write_jsonl(
            tmp / "predictions.jsonl",
            [
                {"id": e.id, "sample": k, "prediction": p, "reference": e.output}
                for e, k, p in zip(targets, numbers, predictions, strict=True)
            ],
        )

    # A checkpoint trained on one task can be evaluated on another (cross-task transfer): both are recorded.
    extra = {
        "tasks": {"train": checkpoint.manifest.get("train_task"), "eval": cfg.task.name},
        "decoding": decoding_record(cfg),
    }
    result = produce(ctx, identity, build, role=role, done="evaluated", extra=extra)
    metrics = result.manifest["metrics"]
    ctx.tracker.summary({f"eval/{k}": v for k, v in metrics.items()})
    show(metrics_table(metrics, f"eval {result.id} (checkpoint {checkpoint.id})"))
    return result


def eval_examples(cfg, data: TaskData) -> list:
    """The test examples an eval scores and generates for (`eval.limit` of them)."""
    return data.test if cfg.eval.limit is None else data.test[: cfg.eval.limit]


def decoding_record(cfg) -> dict:
    """How the generations were decoded, recorded in the eval's manifest."""
    record = {"decoding": cfg.eval.decoding, "temperature": cfg.eval.temperature}
    if cfg.eval.decoding == "cad":
        record.update(cad_alpha=cfg.eval.cad_alpha, counterfactual=cfg.estimator.counterfactual)
    return record


def evaluation_identity(ctx: Context, checkpoint: Artifact, data: TaskData):
    """The identity of the eval `evaluate` makes of `checkpoint` on `data`'s test examples (its training
    split keys it too: leakage counts its users' values as another user's)."""
    return eval_identity(
        ctx.cfg,
        precision=ctx.precision,
        checkpoint=checkpoint.id,
        data_fp=dataset_fingerprint(eval_examples(ctx.cfg, data)),
        train_fp=data.train_fp,
        judge=judge_weights(ctx.cfg, ctx.store),
        side_precision=ctx.side_precision,
        retriever_fp=retriever_fingerprint(ctx.cfg),
    )
