"""The stages and how they chain: task data -> base model -> warm-up -> estimate -> train -> eval.

Every stage is idempotent: its artifact id is a fingerprint of its config and inputs, and an existing
artifact is reused (and said so) instead of recomputed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from percontrast_cli.artifacts import Artifact, ArtifactStore
from percontrast_cli.data import personas, synthetic
from percontrast_cli.data.encode import CUT, encode_example, end_of_turn_id
from percontrast_cli.data.prompts import PromptFormat
from percontrast_cli.data.retrieval import Retriever
from percontrast_cli.data.schema import Example, dataset_fingerprint
from percontrast_cli.data.sources import load_splits
from percontrast_cli.distributed import is_main, rank_and_world
from percontrast_cli.errors import PercontrastError
from percontrast_cli.estimate import classifier_metrics, load_scores, save_scores, teacher_forced_pass
from percontrast_cli.evaluate import example_rows, generate, metrics_table, token_metrics
from percontrast_cli.losses import CE, weight_signal
from percontrast_cli.metrics import rouge_scores, text_metrics, wordnet
from percontrast_cli.modeling.load import (
    converted_smollm2,
    hub_revision,
    load_model_and_tokenizer,
    resolve_dtype,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from percontrast_cli.modeling.lora import save_trained, wrap_lora
from percontrast_cli.modeling.tiny import build_tiny_model, train_tokenizer
from percontrast_cli.progress import say
from percontrast_cli.train import RoundsRefresh, ScoreTable, fit, total_steps
from percontrast_cli.worker import backend


@dataclass
class Context:
    cfg: object
    store: ArtifactStore
    device: torch.device
    tracker: object


@dataclass
class TaskData:
    train: list[Example]
    test: list[Example]

    @functools.cached_property
    def train_fp(self) -> str:
        return dataset_fingerprint(self.train)


def container(node) -> object:
    return OmegaConf.to_container(node, resolve=True)


def load_task(cfg) -> TaskData:
    """The task's train/test examples: generated (synthetic), from data.path, or from the hub."""
    task_cfg, data_cfg = cfg.task, cfg.data
    if task_cfg.source == "synthetic" and not data_cfg.path:
        if cfg.eval.split != "test":
            raise PercontrastError(
                f"task={task_cfg.name} generates train and test splits only: use eval.split=test"
            )
        size = task_cfg.n_train_users, task_cfg.n_test_users, task_cfg.examples_per_user
        generator = personas if task_cfg.name in personas.TASKS else synthetic
        splits = generator.generate(task_cfg.name, *size, task_cfg.seed)
    else:
        splits = load_splits(task_cfg, data_cfg, cfg.prompt.style, cfg.eval.split)
    trimmed = {name: [trim(e, data_cfg) for e in rows[: data_cfg.limit]] for name, rows in splits.items()}
    retriever(cfg)  # a retriever that cannot load fails here, before any work
    return TaskData(trimmed["train"], trimmed["test"])


def trim(example: Example, data_cfg) -> Example:
    if data_cfg.max_profile_items is None or len(example.profile) <= data_cfg.max_profile_items:
        return example
    keep = len(example.profile) - data_cfg.max_profile_items
    texts = None if example.retrieval_texts is None else example.retrieval_texts[keep:]
    return dataclasses.replace(example, profile=example.profile[keep:], retrieval_texts=texts)


def reuse(kind: str, artifact: Artifact | None) -> Artifact | None:
    if artifact is not None:
        say(f"[dim]skip[/dim] {kind} {artifact.id} exists ({artifact.path})")
    return artifact


def weights_dtype(ctx: Context, training: bool) -> torch.dtype:
    """model.dtype resolved for this device. Training keeps fp32 master weights (bf16 then runs as autocast,
    see train.training_arguments); scoring and generation load bf16 weights directly."""
    if training:
        return torch.float32
    return resolve_dtype(ctx.cfg.model.dtype, ctx.device)


def load_model(ctx: Context, artifact: Artifact, with_model: bool = True, training: bool = False):
    """A model/checkpoint artifact's model and tokenizer: its own payload, or the pretrained source it
    points at (a local directory, or a hub id pinned to the revision it was registered with)."""
    dtype = weights_dtype(ctx, training)
    if (artifact.path / "model").is_dir():
        return load_model_and_tokenizer(artifact.path / "model", with_model=with_model, dtype=dtype)
    source = json.loads((artifact.path / "source.json").read_text())
    return load_model_and_tokenizer(
        source["name_or_path"], with_model, revision=source.get("revision"), dtype=dtype
    )


def pretrained_model(ctx: Context) -> Artifact:
    """A `model` artifact that points at pretrained weights (embedded SmolLM2, hub id or local dir)."""
    cfg = ctx.cfg
    revision = None
    if cfg.model.source == "smollm2":
        location: str | Path = converted_smollm2(cfg.paths.cache)
    else:
        location = cfg.model.name_or_path
        if not Path(location).is_dir():
            revision = hub_revision(location, cfg.model.get("revision"))
    config = {"model": container(cfg.model)}
    inputs = {"weights": weights_fingerprint(location, revision, cfg.paths.cache)}
    artifact_id = ctx.store.artifact_id("model", config, inputs)
    if found := reuse("model", ctx.store.claim("model", artifact_id)):
        return found
    _, tokenizer = load_model_and_tokenizer(location, with_model=False, revision=revision)
    with ctx.store.create("model", artifact_id, config, inputs) as (tmp, manifest):
        (tmp / "source.json").write_text(json.dumps({"name_or_path": str(location), "revision": revision}))
        manifest["inputs"]["tokenizer"] = tokenizer_fingerprint(tokenizer)
    say(f"[green]registered[/green] model {artifact_id} ({location})")
    return ctx.store.find("model", artifact_id)


def base_model(ctx: Context, data: TaskData) -> Artifact:
    """The starting point: pretrained weights, or for model=tiny a new tokenizer + initial weights."""
    cfg = ctx.cfg
    if cfg.model.source != "tiny":
        return pretrained_model(ctx)
    config = {"model": container(cfg.model), "seed": cfg.seed}
    inputs = {"data": data.train_fp}
    artifact_id = ctx.store.artifact_id("model", config, inputs)
    if found := reuse("model", ctx.store.claim("model", artifact_id)):
        return found
    texts = [t for e in data.train for t in (e.input, e.output, *e.profile)]
    tokenizer = train_tokenizer(texts, cfg.model.vocab_size)
    model = build_tiny_model(cfg.model, tokenizer, cfg.seed)
    with ctx.store.create("model", artifact_id, config, inputs) as (tmp, manifest):
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        manifest["inputs"]["tokenizer"] = tokenizer_fingerprint(tokenizer)
    say(f"[green]built[/green] model {artifact_id}")
    return ctx.store.find("model", artifact_id)


def encode_items(tokenizer, examples: list[Example], cfg, with_counterfactual: bool) -> list[dict]:
    """The one encoding of every stage: training, scoring and generation all start from these ids."""
    items = []
    fmt, chosen = PromptFormat.from_config(cfg), retriever(cfg)
    for index, example in enumerate(examples):
        item = encode_example(
            tokenizer,
            example,
            k=cfg.retrieval.k,
            max_length=cfg.model.max_length,
            counterfactual=cfg.estimator.counterfactual if with_counterfactual else None,
            pool=examples,
            chat=cfg.model.chat_template,
            fmt=fmt,
            retriever=chosen,
        )
        item["index"], item["id"] = index, example.id
        items.append(item)
    if cut := sum(item[CUT] for item in items):
        say(
            f"[yellow]warning[/yellow]: {cut} of {len(items)} targets are longer than model.max_length="
            f"{cfg.model.max_length} allows and were cut at the end (without an end token)"
        )
    return items


def retriever(cfg) -> Retriever:
    """The configured retriever, built once per process (a dense one loads a model)."""
    return _retriever(cfg.retrieval.method, cfg.retrieval.bm25_tokens, cfg.retrieval.get("model"))


@functools.cache
def _retriever(method: str, bm25_tokens: str, model: str | None) -> Retriever:
    return Retriever(method, bm25_tokens, model)


# What identifies each artifact: every setting that can change its result, and nothing else. (Inputs, such
# as the data, the tokenizer and upstream artifacts, are fingerprinted beside these; so is the package code.)
NOT_RESULT_KEYS = ("steps", "epochs", "warmup_steps", "log_every", "save_every")


def train_identity(cfg) -> dict:
    """`steps` is recorded apart (train.steps, train.epochs or the warm-up's own steps); the logging and
    Trainer-checkpoint intervals cannot change the weights; LoRA settings only matter with peft=lora."""
    train = {k: v for k, v in container(cfg.train).items() if k not in NOT_RESULT_KEYS}
    if cfg.train.peft != "lora":
        train.pop("lora")
    # The global batch, not how it is split over micro-batches and processes: the same training either way
    # (the loss is normalised over the whole step), so the same id with any number of processes.
    processes = cfg.distributed.num_processes if cfg.distributed.name != "none" else 1
    train["global_batch"] = train.pop("batch_size") * train.pop("grad_accum") * processes
    return train


def eval_identity(cfg) -> dict:
    """Decoding settings as used: greedy decoding ignores the seed, temperature and top_p."""
    decoding = container(cfg.eval)
    if not cfg.eval.do_sample:
        decoding.pop("temperature")
        decoding.pop("top_p")
    return {
        "eval": decoding,
        "counterfactual": cfg.estimator.counterfactual,
        "tau": cfg.estimator.tau,
        "prompt": prompt_config(cfg),
        "seed": cfg.seed if cfg.eval.do_sample else None,
    }


def prompt_config(cfg) -> dict:
    """The settings that decide a prompt's ids, for every stage's artifact id."""
    return {
        "style": container(cfg.prompt),
        "connector": cfg.task.get("longlamp_connector"),
        "retrieval": container(cfg.retrieval),
        "max_length": cfg.model.max_length,
        "chat_template": cfg.model.chat_template,
    }


def score_table(artifact: Artifact, data: TaskData, tokenizer_fp: str) -> ScoreTable:
    """Per-token values of an estimate/reference artifact, checked against the data and tokenizer in use."""
    artifact.require_input("data", data.train_fp, "training data")
    artifact.require_input("tokenizer", tokenizer_fp, "tokenizer")
    values = load_scores(artifact.path)
    return ScoreTable([torch.from_numpy(values[e.id]) for e in data.train])


def train_checkpoint(
    ctx: Context,
    start: Artifact,
    data: TaskData,
    loss_cfg,
    steps: int,
    tag: str,
    fixed_scores: Artifact | None = None,
) -> Artifact:
    """Train from `start` and publish a `checkpoint` artifact (skipped when it already exists).

    ``fixed_scores``: the estimate (refresh=rounds: the first round's) or reference artifact whose per-token
    values the weighting reads; without it a PerContrast weighting re-estimates inside every step."""
    cfg = ctx.cfg
    signal = weight_signal(loss_cfg)
    rounds = cfg.estimator.rounds if signal == "pir" and fixed_scores is not None else 1
    config = {
        "train": train_identity(cfg),
        "steps": steps,
        # Every CE-equivalent setting (loss=ce with any alpha, alpha 0 for any weighting) trains the same
        # checkpoint.
        "loss": container(loss_cfg if signal else CE),
        "estimator": container(cfg.estimator) if signal == "pir" else None,
        "seed": cfg.seed,
        "prompt": prompt_config(cfg),
    }
    tokenizer_fp = start.inputs["tokenizer"]
    inputs = {
        "start": start.id,
        # what the weights read: a PerContrast estimate, or LossCE's reference NLL
        "reference" if signal == "reference" else "estimate": fixed_scores.id if fixed_scores else None,
        "data": data.train_fp,
        "tokenizer": tokenizer_fp,
    }
    artifact_id = ctx.store.artifact_id("checkpoint", config, inputs)
    if found := reuse("checkpoint", ctx.store.claim("checkpoint", artifact_id)):
        return found
    model, tokenizer = load_model(ctx, start, training=True)
    if cfg.train.peft == "lora":
        model = wrap_lora(model, cfg.train.lora)
    online = signal == "pir" and fixed_scores is None
    items = encode_items(tokenizer, data.train, cfg, with_counterfactual=online or rounds > 1)
    table = score_table(fixed_scores, data, tokenizer_fp) if fixed_scores else None
    callbacks = ()
    if rounds > 1:
        boundaries = [r * steps // rounds for r in range(1, rounds)]

        def rescore(step: int, current_model) -> list[torch.Tensor]:
            return round_estimate(
                ctx, start, artifact_id, step, data, items, current_model, tokenizer.pad_token_id
            ).values

        callbacks = (RoundsRefresh(table, boundaries, rescore),)
    work_dir = ctx.store.root / ".work" / f"checkpoint-{artifact_id}"
    trained = fit(
        model,
        tokenizer,
        items,
        train_cfg=cfg.train,
        loss_cfg=loss_cfg,
        online_refresh=online,
        steps=steps,
        seed=cfg.seed,
        work_dir=work_dir,
        device=ctx.device.type,
        bf16=resolve_dtype(cfg.model.dtype, ctx.device) == torch.bfloat16,
        ddp_backend=backend(cfg) if rank_and_world()[1] > 1 else None,
        tracker=ctx.tracker,
        description=f"train {tag}",
        score_table=table,
        extra_callbacks=callbacks,
    )
    extra = {"tag": tag, "train_task": cfg.task.name}  # recorded, not part of the id (the data is)
    with ctx.store.create("checkpoint", artifact_id, config, inputs, **extra) as (tmp, manifest):
        if is_main():  # fit gathered the trained model (sharded or not) onto rank 0; it writes
            save_trained(trained.model, tokenizer, tmp)
            (tmp / "log_history.json").write_text(json.dumps(trained.history, indent=1))
    shutil.rmtree(work_dir, ignore_errors=True)
    say(f"[green]trained[/green] checkpoint {artifact_id} ({tag})")
    return ctx.store.find("checkpoint", artifact_id)


def warmup(ctx: Context, base: Artifact, data: TaskData) -> Artifact:
    """Models trained from scratch get a plain-CE warm-up, shared by every loss and alpha of a sweep."""
    if not ctx.cfg.model.from_scratch or ctx.cfg.train.warmup_steps == 0:
        return base
    if ctx.cfg.train.warmup_lr is not None:  # one warm-up for a whole learning-rate sweep
        cfg = ctx.cfg.copy()
        cfg.train.lr, cfg.train.warmup_lr = cfg.train.warmup_lr, None
        ctx = dataclasses.replace(ctx, cfg=cfg)
    return train_checkpoint(ctx, base, data, CE, ctx.cfg.train.warmup_steps, tag="warmup")


def estimate(ctx: Context, checkpoint: Artifact, data: TaskData) -> Artifact:
    """PerContrast scores for every training example, as an `estimate` artifact (with AUROC, precision,
    recall and F1 against the ground-truth personal spans when the task has them)."""
    config = {"counterfactual": ctx.cfg.estimator.counterfactual, "prompt": prompt_config(ctx.cfg)}
    return score_training_set(ctx, "estimate", checkpoint, data, config)


def reference_nll(ctx: Context, reference: Artifact, data: TaskData) -> Artifact:
    """LossCE's reference: the per-token NLL of `reference` (the start checkpoint) on every training target,
    scored once and kept as a `reference` artifact."""
    return score_training_set(ctx, "reference", reference, data, {"prompt": prompt_config(ctx.cfg)})


def score_training_set(
    ctx: Context, kind: str, checkpoint: Artifact, data: TaskData, config: dict
) -> Artifact:
    """A teacher-forced pass of `checkpoint` over the training set: PerContrast scores (`estimate`, factual
    and counterfactual passes) or the factual NLL alone (`reference`)."""
    inputs = {"checkpoint": checkpoint.id, "data": data.train_fp, "tokenizer": checkpoint.inputs["tokenizer"]}
    artifact_id = ctx.store.artifact_id(kind, config, inputs)
    if found := reuse(kind, ctx.store.claim(kind, artifact_id)):
        return found
    model, tokenizer = load_model(ctx, checkpoint)
    model.to(ctx.device)
    contrast = kind == "estimate"
    items = encode_items(tokenizer, data.train, ctx.cfg, with_counterfactual=contrast)
    records = teacher_forced_pass(
        model, tokenizer.pad_token_id, items, ctx.cfg.estimator.batch_size, ctx.device, kind, contrast
    )
    return publish_estimate(ctx, kind, artifact_id, config, inputs, data, records, "")


def publish_estimate(ctx, kind, artifact_id, config, inputs, data, records, what) -> Artifact:
    # estimate: PerContrast scores; reference: the reference model's per-token NLL
    rows = [r.scores for r in records] if kind == "estimate" else [-r.logp for r in records]
    for example, values in zip(data.train, rows, strict=True):
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise PercontrastError(
                f"{kind}: non-finite score for example {example.id!r} at target token {bad}: the model "
                f"({inputs['checkpoint']}) gives NaN or infinite log-probabilities there"
            )
    metrics = classifier_metrics(records, ctx.cfg.estimator.tau) if kind == "estimate" else {}
    with ctx.store.create(kind, artifact_id, config, inputs, metrics=metrics) as (tmp, _):
        save_scores(tmp, [e.id for e in data.train], rows)
    shown = ", ".join(f"{k.removeprefix('estimator_')} {v:.4f}" for k, v in metrics.items())
    if kind == "estimate":
        shown = f": train-split estimator {shown or 'n/a (no personal-span labels)'}"
        ctx.tracker.summary({f"estimate/{k}": v for k, v in metrics.items()})
    say(f"[green]estimated[/green] {kind} {artifact_id}{what}{shown}")
    return ctx.store.find(kind, artifact_id)


def round_estimate(
    ctx, start: Artifact, run_id: str, step: int, data: TaskData, items, model, pad_id: int
) -> ScoreTable:
    """refresh=rounds: the scores of the model being trained in run `run_id` after `step` optimiser steps,
    published as an `estimate` artifact (for `inspect`); read back from it when the run resumes."""
    cfg = ctx.cfg
    config = {
        "counterfactual": cfg.estimator.counterfactual,
        "prompt": prompt_config(cfg),
        "training_run": run_id,
        "after_step": step,
    }
    # `checkpoint` names the run's start, whose tokenizer the scores share.
    inputs = {"checkpoint": start.id, "data": data.train_fp, "tokenizer": start.inputs["tokenizer"]}
    artifact_id = ctx.store.artifact_id("estimate", config, inputs)
    found = ctx.store.claim("estimate", artifact_id)
    if found is None:
        records = teacher_forced_pass(
            model, pad_id, items, cfg.estimator.batch_size, ctx.device, f"estimate (step {step})"
        )
        what = f" (checkpoint {run_id} after step {step})"
        found = publish_estimate(ctx, "estimate", artifact_id, config, inputs, data, records, what)
    return score_table(found, data, start.inputs["tokenizer"])


def train_with_bootstrap(
    ctx: Context, start: Artifact, first_estimate: Artifact | None, data: TaskData
) -> Artifact:
    """Main training. PerCE re-estimates its weights every step (online) or every steps/N steps of the same
    run (rounds, starting from `first_estimate`); LossCE reads the start checkpoint's NLL; the other
    weightings read the training pass itself."""
    cfg = ctx.cfg
    steps = total_steps(cfg.train, len(data.train))
    signal = weight_signal(cfg.loss)
    fixed = None
    if signal == "pir" and cfg.estimator.refresh == "rounds":
        fixed = first_estimate or estimate(ctx, start, data)
    elif signal == "reference":
        fixed = reference_nll(ctx, start, data)
    tag = cfg.loss.name if cfg.estimator.refresh == "online" or signal != "pir" else f"{cfg.loss.name}-rounds"
    return train_checkpoint(ctx, start, data, cfg.loss, steps, tag, fixed)


def evaluate(ctx: Context, checkpoint: Artifact, data: TaskData) -> Artifact:
    cfg = ctx.cfg
    test = data.test if cfg.eval.limit is None else data.test[: cfg.eval.limit]
    config = eval_identity(cfg)
    inputs = {"checkpoint": checkpoint.id, "data": dataset_fingerprint(test)}
    artifact_id = ctx.store.artifact_id("eval", config, inputs)
    if found := reuse("eval", ctx.store.claim("eval", artifact_id)):
        say(metrics_table(found.manifest["metrics"], f"eval {found.id} (checkpoint {checkpoint.id})"))
        return found
    # Fails before generating when WordNet is missing.
    wn = wordnet(cfg.paths.cache) if cfg.eval.meteor else None
    model, tokenizer = load_model(ctx, checkpoint)
    model.to(ctx.device)
    torch.manual_seed(cfg.seed)
    items = encode_items(tokenizer, test, cfg, with_counterfactual=True)
    records = teacher_forced_pass(
        model, tokenizer.pad_token_id, items, cfg.eval.batch_size, ctx.device, "score"
    )
    metrics = token_metrics(records, cfg.estimator.tau)
    # Generation starts from the same (truncated) prompt ids that scoring used, and stops where the model
    # was trained to stop.
    stop_ids = sorted({end_of_turn_id(tokenizer, cfg.model.chat_template), tokenizer.eos_token_id})
    predictions, throughput = generate(model, tokenizer, items, cfg.eval, ctx.device, stop_ids)
    metrics.update(throughput)
    references = [e.output for e in test]
    rouge = rouge_scores(predictions, references, cfg.eval.rouge_stemmer)  # per example: also the report's
    metrics.update(text_metrics(predictions, references, wn=wn, with_meteor=cfg.eval.meteor, scores=rouge))
    # A checkpoint trained on one task can be evaluated on another (cross-task transfer): both are recorded.
    tasks = {"train": checkpoint.manifest.get("train_task"), "eval": cfg.task.name}
    extra = {"metrics": metrics, "run_config": container(cfg), "tasks": tasks}
    with ctx.store.create("eval", artifact_id, config, inputs, **extra) as (tmp, _):
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        with open(tmp / "per_example.jsonl", "w") as f:
            for row in example_rows([e.id for e in test], records, rouge["rougeL"]):
                f.write(json.dumps(row) + "\n")
        with open(tmp / "predictions.jsonl", "w") as f:
            for example, prediction in zip(test, predictions, strict=True):
                f.write(
                    json.dumps({"id": example.id, "prediction": prediction, "reference": example.output})
                    + "\n"
                )
    ctx.tracker.summary({f"eval/{k}": v for k, v in metrics.items()})
    say(metrics_table(metrics, f"eval {artifact_id} (checkpoint {checkpoint.id})"))
    return ctx.store.find("eval", artifact_id)


def named_checkpoint(ctx: Context, ref: str) -> Artifact:
    """A `checkpoint` (or base `model`) artifact named by id, path or `latest`."""
    try:
        return ctx.store.resolve("checkpoint", ref)
    except PercontrastError:
        found = ctx.store.find("model", ref) if ref != "latest" else None
        if found is None:
            raise
        return found


def starting_point(ctx: Context, data: TaskData) -> Artifact:
    if ctx.cfg.checkpoint is not None:
        return named_checkpoint(ctx, ctx.cfg.checkpoint)
    return warmup(ctx, base_model(ctx, data), data)


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
    """The target tokens of one training example with their PerContrast scores from an estimate artifact."""
    from percontrast_cli.data.encode import MIN_PROMPT_TOKENS, encode_target
    from percontrast_cli.heatmap import ScoredToken

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
    return example, tokens
