"""`percontrast eval task=aloe`: ALOE's multi-turn dialogue evaluation of a checkpoint (evaluation/aloe.py),
with a simulator and a judge model named by aloe.simulator / aloe.judge, as an `eval` artifact."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from percontrast_cli.data.aloe import load_personas, personas_fingerprint
from percontrast_cli.evaluation.aloe import (
    CONVERSATIONS,
    SCORES,
    Speaker,
    al_metrics,
    decoding,
    run_dialogues,
)
from percontrast_cli.evaluation.generate import metrics_table
from percontrast_cli.evaluation.judge import Judge
from percontrast_cli.modeling.load import resolve_dtype
from percontrast_cli.modeling.named import from_artifact, resolve_named
from percontrast_cli.runtime.progress import say, show
from percontrast_cli.steps.context import Context
from percontrast_cli.steps.produce import produce, write_jsonl
from percontrast_cli.store.artifacts import Artifact
from percontrast_cli.store.identity import dialogue_identity


def role_option(cfg, role: str) -> str:
    """The setting to fix for a role's model: aloe.<role>, or eval.judge where the role took its value."""
    return f"aloe.{role} (= eval.judge)" if cfg.aloe[role] == cfg.eval.judge else f"aloe.{role}"


def evaluate_dialogue(ctx: Context, checkpoint: Artifact) -> Artifact:
    """The dialogue evaluation of `checkpoint` (metrics AL(k), the conversations and per-round scores),
    skipped when it exists."""
    cfg = ctx.cfg
    personas = load_personas(cfg.data.path, cfg.task.get("n_profiles"), cfg.task.n_personalities)
    simulator_named = resolve_named(
        cfg.aloe.simulator, role_option(cfg, "simulator"), ctx.store, cfg.paths.cache
    )
    judge_named = resolve_named(cfg.aloe.judge, role_option(cfg, "judge"), ctx.store, cfg.paths.cache)
    identity = dialogue_identity(
        cfg,
        precision=ctx.precision,
        side_precision=ctx.side_precision,
        checkpoint=checkpoint.id,
        data_fp=personas_fingerprint(personas),
        simulator=simulator_named.identity,
        judge=judge_named.identity,
    )

    def build(tmp: Path, manifest: dict) -> None:
        say(
            f"aloe: {len(personas)} conversations x {cfg.aloe.rounds} rounds; simulator "
            f"{simulator_named.spec}, judge {judge_named.spec} ({cfg.judge.mode} score)"
        )
        loaded: dict[str, tuple] = {}  # one copy of a model that plays two roles

        def load(named, dtype):
            if named.identity not in loaded:
                loaded[named.identity] = named.load(dtype, ctx.device)
            return loaded[named.identity]

        under_test = load(from_artifact(checkpoint.id, checkpoint), ctx.dtype)
        model = Speaker(*under_test, decoding(cfg.aloe, "model", cfg.aloe.batch_size))
        auto = resolve_dtype("auto", ctx.device)  # keyed as ctx.side_precision
        simulator = Speaker(
            *load(simulator_named, auto), decoding(cfg.aloe, "simulator", cfg.aloe.batch_size)
        )
        judge = Judge.configured(*load(judge_named, auto), cfg.judge, ctx.device)
        torch.manual_seed(cfg.seed)  # the sampling simulator (and a sampling model) draw the same on a rerun
        conversations = run_dialogues(
            personas,
            model,
            simulator,
            judge,
            cfg.aloe.rounds,
            cfg.aloe.role_play_prompt,
            cfg.aloe.evaluate_prompt,
            cfg.aloe.raw_lines,
            ctx.device,
        )
        manifest["metrics"] = metrics = al_metrics(conversations)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_jsonl(tmp / CONVERSATIONS, [c.record() for c in conversations])
        write_jsonl(tmp / SCORES, [c.scores() for c in conversations])

    # A checkpoint trained on another task evaluated here (the paper's cross-scenario test): both recorded.
    extra = {
        "tasks": {"train": checkpoint.manifest.get("train_task"), "eval": cfg.task.name},
    }
    result = produce(ctx, identity, build, role="eval", done="evaluated", extra=extra)
    metrics = result.manifest["metrics"]
    ctx.tracker.summary({f"eval/{k}": v for k, v in metrics.items()})
    show(metrics_table(metrics, f"eval {result.id} (checkpoint {checkpoint.id}, task=aloe)"))
    return result
