"""What identifies each artifact: the one place that decides it.

An artifact's id is a hash of three parts, declared here per kind:

- ``config``: exactly the settings that can change the artifact's payload, as resolved values
  (``model.dtype=auto`` keys as the precision it resolved to), and nothing else: logging and
  Trainer-checkpoint intervals, activation checkpointing, the estimator's batch size or the eval
  threshold ``tau`` never key a checkpoint. ``LEAVES`` classifies every leaf of the composed config;
- ``inputs``: the fingerprints of what it was computed from (data, tokenizer, weights, upstream artifacts);
- ``code``: a hash of the modules that kind's computation runs under its settings (store/code_scope.py).

docs/identity.md lists the rules as a table; tests/test_identity.py checks them through these functions.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from percontrast_cli.store.code_scope import DIALOGUE_ENTRY, KINDS, code_hash
from percontrast_cli.store.fingerprint import fingerprint

# Settings of `train` that cannot change the weights (or are recorded apart: `steps`).
TRAIN_NOT_RESULT = (
    "steps",
    "epochs",
    "warmup_steps",
    "warmup_lr",  # keys the warm-up checkpoint, which is the main training's `start` input
    "log_every",
    "save_every",
    "gradient_checkpointing",  # activation checkpointing: the same gradients (tests/test_modeling.py)
)
# Settings of the tiny model that shape the tokenizer and the initial weights.
TINY_ARCHITECTURE = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "max_length",
)


@dataclass(frozen=True)
class Identity:
    kind: str
    config: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)
    code: str = ""  # code_of(kind, cfg): the modules this artifact's computation runs

    @property
    def id(self) -> str:
        return fingerprint(
            {"kind": self.kind, "config": self.config, "inputs": self.inputs, "code": self.code}
        )


# --- code: the modules an artifact's settings run ---------------------------------------------------------

NO_JUDGE = ("none", "null", "", None)


def judged(cfg) -> bool:
    """Whether an eval runs an LLM judge: eval.judge names one, or task=aloe (its judge scores each reply)."""
    return cfg.task.source == "aloe" or cfg.eval.judge not in NO_JUDGE


# Modules that run only under some settings: left out of a kind's code where their predicate is false.
RUNS_ONLY_WHEN = {
    "modeling.tiny": lambda cfg: cfg.model.source == "tiny",  # builds the tiny model and its tokenizer
    "evaluation.judge": judged,  # with its chat and side-model loading modules
}


def skipped_modules(cfg) -> frozenset[str]:
    return frozenset(name for name, runs in RUNS_ONLY_WHEN.items() if not runs(cfg))


def code_of(kind: str, cfg) -> str:
    """The code hash of an artifact of `kind` made under `cfg`: its entry modules for this task (a dialogue
    eval starts in steps.dialogue) and what they run, without the modules `cfg` does not run."""
    entries = DIALOGUE_ENTRY if kind == "eval" and cfg.task.source == "aloe" else None
    return code_hash(kind, entries, skipped_modules(cfg))


# --- every config leaf, classified ------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """How one config leaf enters ids: the kinds whose id it can change (none: it never keys) and how."""

    kinds: tuple[str, ...]
    how: str


def keys(*kinds: str, how: str) -> Leaf:
    return Leaf(kinds, how)


def never(why: str) -> Leaf:
    return Leaf((), why)


DATA = keys(*KINDS, how="input: the data fingerprint (the examples it selects or builds)")
PROMPT = keys("checkpoint", "estimate", "reference", "eval", how="prompt settings")
TRAINING = keys("checkpoint", how="training settings (train_settings)")
EVAL = keys("eval", how="decoding and metric settings")
DISPLAY = never("display, reporting or bookkeeping only")
WHERE = never("where the processes run or the files go, not what they compute")
TASK_DATA = ("name", "source", "hub_dataset", "hub_config", "split_style", "train_split", "val_split")
TASK_DATA += ("test_split", "user_field", "n_train_users", "n_test_users", "examples_per_user", "seed")
TASK_DATA += ("longlamp_item", "profile_template", "retrieval_text", "query_after", "word_limits")

# Every leaf of every composed config, in order (fnmatch patterns; `*` spans dots; the first match counts).
# A whole-group row (`judge.*`) is for groups whose every key keys alike; every other key has its own row, so
# a new key fails tests/test_identity.py until it is classified here and in docs/identity.md.
LEAVES: dict[str, Leaf] = {
    "seed": keys("model", "checkpoint", "eval", how="tiny init; training; evals that sample or run ALOE"),
    "device": never("the precision it resolves to keys instead"),
    "estimate": keys("checkpoint", how="input: the estimate refresh=rounds training reads"),
    "checkpoint": keys("checkpoint", "estimate", "reference", "eval", how="input: the start/scored artifact"),
    "example": DISPLAY,
    **dict.fromkeys(["data.path", "data.test_fraction", "data.limit", "data.max_profile_items"], DATA),
    "data.max_text_chars": DATA,
    "prompt.style": PROMPT,
    "retrieval.method": PROMPT,
    "retrieval.k": PROMPT,
    "retrieval.bm25_tokens": keys(*PROMPT.kinds, how="prompt settings, with retrieval.method=bm25"),
    "retrieval.model": keys(*PROMPT.kinds, how="prompt settings: the encoder's weights fingerprint"),
    "model.name": never("a label: model.source and the weights key"),
    "model.source": keys("model", how="the model pointer, and which code builds it"),
    "model.name_or_path": keys("model", how="input: the weights' content fingerprint (hub: its commit)"),
    "model.revision": keys("model", how="input: the weights fingerprint (the commit it resolves to)"),
    "model.from_scratch": keys("checkpoint", how="whether the warm-up runs: the `start` input"),
    "model.chat_template": PROMPT,
    "model.max_length": keys("model", *PROMPT.kinds, how="prompt settings; the tiny architecture"),
    **dict.fromkeys(
        [f"model.{key}" for key in TINY_ARCHITECTURE if key != "max_length"],
        keys("model", how="the tiny architecture"),
    ),
    "model.dtype": keys("checkpoint", "estimate", "reference", "eval", how="the resolved precision"),
    "task.longlamp_connector": PROMPT,
    "task.prompt_style": keys(*PROMPT.kinds, how="through prompt.style (its default)"),
    "task.bm25_tokens": keys(*PROMPT.kinds, how="through retrieval.bm25_tokens (its default)"),
    "task.max_length": keys("model", *PROMPT.kinds, how="through model.max_length (its default)"),
    "task.max_new_tokens": keys("eval", how="through eval.max_new_tokens (its default)"),
    "task.n_profiles": keys("eval", how="input: the ALOE personas' fingerprint"),
    "task.n_personalities": keys("eval", how="input: the ALOE personas' fingerprint"),
    "task.word_limits.*": DATA,
    **{f"task.{key}": DATA for key in TASK_DATA},
    "estimator.name": never("one estimator"),
    "estimator.counterfactual": keys(
        "checkpoint", "estimate", "eval", how="PerContrast's P' (checkpoints: PerContrast weightings only)"
    ),
    "estimator.refresh": keys("checkpoint", how="the weight source (PerContrast weightings only)"),
    "estimator.rounds": keys("checkpoint", how="with refresh=rounds"),
    "estimator.batch_size": never("the batching of a no-grad scoring pass: the same scores"),
    "estimator.tau": keys("eval", how="the eval's precision/recall/F1 at tau (estimates store scores)"),
    "loss.*": keys("checkpoint", how="the loss as trained (every CE-equivalent setting keys as CE)"),
    "train.steps": keys("checkpoint", how="the steps trained, as counted (train.steps or train.epochs)"),
    "train.epochs": keys("checkpoint", how="the steps trained, as counted (train.steps or train.epochs)"),
    "train.warmup_steps": keys("checkpoint", how="the warm-up's steps: the main training's `start` input"),
    "train.warmup_lr": keys("checkpoint", how="the warm-up's lr: the main training's `start` input"),
    "train.batch_size": keys(
        "checkpoint", how="the global batch; the micro-batch too where the loss reads its statistics"
    ),
    "train.grad_accum": keys("checkpoint", how="the global batch (with train.batch_size)"),
    "train.lr_warmup_steps": keys("checkpoint", how="the effective warm-up (capped at a tenth of the run)"),
    **dict.fromkeys(["train.lr", "train.scheduler", "train.weight_decay", "train.max_grad_norm"], TRAINING),
    **dict.fromkeys(["train.group_by_length", "train.peft"], TRAINING),
    "train.log_every": DISPLAY,
    "train.save_every": never("Trainer checkpoints for resuming: the same weights"),
    "train.gradient_checkpointing": never("recomputed activations: the same gradients"),
    "train.lora.*": keys("checkpoint", how="with train.peft=lora"),
    "eval.judge": keys("eval", how="input: the judge's weights (and the judge settings)"),
    "eval.temperature": keys("eval", how="decoding (0: greedy; > 0 samples, and the seed keys too)"),
    "eval.top_p": keys("eval", how="with eval.temperature > 0"),
    "eval.samples": keys("eval", how="generations per test target"),
    "eval.decoding": keys("eval", how="plain or context-aware decoding (cad)"),
    "eval.cad_alpha": keys("eval", how="with eval.decoding=cad"),
    "eval.at_steps": never(
        "which checkpoints of a run are evaluated: each point is its own checkpoint input"
    ),
    "eval.split": keys("eval", how="input: the evaluated split's fingerprint"),
    "eval.limit": keys("eval", how="input: the evaluated examples' fingerprint"),
    **dict.fromkeys(["eval.batch_size", "eval.max_new_tokens"], EVAL),
    **dict.fromkeys(["eval.meteor", "eval.rouge_stemmer"], EVAL),
    "judge.*": keys("eval", how="judged evals only (eval.judge, or task=aloe)"),
    "aloe.*": keys("eval", how="task=aloe evals only"),
    "distributed.name": keys("checkpoint", how="the strategy's numeric mode (DeepSpeed: its saved dtype)"),
    "distributed.num_processes": keys("checkpoint", how="the global batch (and the micro-batch split)"),
    "distributed.accelerate.deepspeed_config.zero_stage": keys("checkpoint", how="the strategy's mode"),
    "distributed.accelerate.deepspeed_config.zero3_save_16bit_model": keys(
        "checkpoint", how="the saved dtype"
    ),
    "distributed.accelerate.*": never("launcher settings (the precision comes from model.dtype)"),
    **dict.fromkeys(
        [f"distributed.{key}" for key in ("num_machines", "machine_rank", "main_process_ip")], WHERE
    ),
    **dict.fromkeys(["distributed.main_process_port", "distributed.backend"], WHERE),
    "distributed.timeout_s": never("how long a collective may wait before the run fails"),
    "paths.*": WHERE,
    "report.*": DISPLAY,
    "inspect.*": DISPLAY,
    "tracker.*": DISPLAY,
}
# Where `+key=value` may add keys no row names (they are passed on as they are).
FREE_FORM = ("distributed.accelerate", "task.word_limits")
CLASSIFY_HERE = "src/percontrast_cli/store/identity.py (LEAVES) and docs/identity.md"


def classify(path: str) -> Leaf | None:
    """The first row whose pattern matches the leaf `path` (rows are ordered, specific ones first)."""
    for pattern, leaf in LEAVES.items():
        if fnmatch.fnmatchcase(path, pattern) or path == pattern.removesuffix(".*"):  # `x.*` covers `x: {}`
            return leaf
    return None


def free_form(path: str) -> bool:
    """Whether `path` lies under a group whose keys are passed on as they are (any key may be added)."""
    return any(path == group or path.startswith(f"{group}.") for group in FREE_FORM)


def nearest_key(path: str, candidates) -> str | None:
    """The known key closest to a mistyped one (`train.lrr` -> `train.lr`), or None."""
    close = difflib.get_close_matches(path, sorted(set(candidates)), n=1, cutoff=0.6)
    return close[0] if close else None


# --- settings ---------------------------------------------------------------------------------------------


def container(node) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def prompt_settings(cfg, retriever_fp: str | None = None) -> dict:
    """The settings that decide a prompt's ids (every stage that encodes examples); ``retriever_fp``: the
    dense retriever's weights fingerprint (retrieval.method=contriever), not its name."""
    method = cfg.retrieval.method
    retrieval = {"method": method, "k": cfg.retrieval.k}
    if method == "bm25":
        retrieval["bm25_tokens"] = cfg.retrieval.bm25_tokens
    if method == "contriever":
        retrieval["model"] = retriever_fp or cfg.retrieval.model
    return {
        "style": cfg.prompt.style,
        "connector": cfg.task.get("longlamp_connector"),
        "retrieval": retrieval,
        "max_length": cfg.model.max_length,
        "chat_template": cfg.model.chat_template,
    }


def model_identity(cfg, *, data_fp: str | None = None, weights_fp: str | None = None) -> Identity:
    """A base model: the tiny model built here (its tokenizer is trained on the data), or a pointer to
    pretrained weights (identified by their content fingerprint, not by how they are loaded later)."""
    code = code_of("model", cfg)
    if cfg.model.source == "tiny":
        architecture = {key: cfg.model[key] for key in TINY_ARCHITECTURE}
        config = {"source": "tiny", "architecture": architecture, "seed": cfg.seed}
        return Identity("model", config, {"data": data_fp}, code)
    return Identity("model", {"source": cfg.model.source}, {"weights": weights_fp}, code)


def process_count(cfg) -> int:
    return cfg.distributed.num_processes if cfg.distributed.name != "none" else 1


def effective_lr_warmup(lr_warmup_steps: int, steps: int) -> int:
    """The learning-rate warm-up the Trainer runs (trainer.training_arguments): at most a tenth of the run."""
    return min(int(lr_warmup_steps), max(steps // 10, 1))


def strategy_mode(cfg) -> dict | None:
    """What a strategy changes in the numbers: one process, DDP and FSDP train fp32 master weights (bf16 as
    autocast) and match one process; DeepSpeed trains in its own mixed precision, and ZeRO-3 can save 16-bit
    weights. None where the strategy cannot change the weights."""
    if not str(cfg.distributed.name).startswith("deepspeed"):
        return None
    deepspeed = cfg.distributed.accelerate.get("deepspeed_config") or {}
    stage = deepspeed.get("zero_stage")
    return {
        "deepspeed_zero": stage,
        "saves_16bit": bool(stage == 3 and deepspeed.get("zero3_save_16bit_model")),
    }


def train_settings(cfg, steps: int, micro_batch_statistics: bool = False) -> dict:
    """The training options that can change the weights; LoRA settings only with peft=lora; the global
    batch, and how it is split over micro-batches and processes only where the loss reads statistics of a
    micro-batch (losses.reads_micro_batch_statistics: elsewhere the loss is normalised over the step)."""
    train = {k: v for k, v in container(cfg.train).items() if k not in TRAIN_NOT_RESULT}
    if cfg.train.peft != "lora":
        train.pop("lora", None)
    batch, accumulation, count = train.pop("batch_size"), train.pop("grad_accum"), process_count(cfg)
    train["global_batch"] = batch * accumulation * count
    if micro_batch_statistics:
        train["micro_batch"] = {"examples": batch, "processes": count}
    train["lr_warmup_steps"] = effective_lr_warmup(train["lr_warmup_steps"], steps)
    return train


def weight_source_settings(cfg, source: str | None) -> dict | None:
    """What the PerContrast weights were computed with (None for every other weighting)."""
    if source not in ("online", "rounds"):
        return None
    settings = {"refresh": source, "counterfactual": cfg.estimator.counterfactual}
    if source == "rounds":
        settings["rounds"] = cfg.estimator.rounds
    return settings


def checkpoint_identity(
    cfg,
    *,
    loss: dict,
    source: str | None,
    steps: int,
    precision: str,
    start: str,
    data_fp: str,
    tokenizer_fp: str,
    scores: tuple[str, str] | None = None,
    schedule_steps: int | None = None,
    micro_batch_statistics: bool = False,
    retriever_fp: str | None = None,
) -> Identity:
    """A trained checkpoint. ``loss``: the loss as trained (plain CE for every CE-equivalent setting);
    ``source``: where its weights come from (see losses.weight_source); ``scores``: (kind, id) of the estimate
    or reference artifact the weights read. ``steps``: the optimiser steps it was trained for; a checkpoint
    saved at step ``steps`` of a longer run (eval.at_steps) whose first steps differ from a ``steps``-step
    run's (a learning-rate schedule shaped by the run's length) also keys that run's ``schedule_steps``;
    otherwise it is the ``steps``-step run's checkpoint, and has its id. ``micro_batch_statistics``: whether
    the loss reads statistics of each micro-batch (then the split of the global batch keys too)."""
    config = {
        # the schedule (and its capped warm-up) is the whole run's when the checkpoint is a point on it
        "train": train_settings(cfg, schedule_steps or steps, micro_batch_statistics),
        "steps": steps,
        "loss": loss,
        "weights_from": weight_source_settings(cfg, source),
        "seed": cfg.seed,
        "prompt": prompt_settings(cfg, retriever_fp),
        "precision": precision,
    }
    if schedule_steps is not None:
        config["schedule_steps"] = schedule_steps
    if (mode := strategy_mode(cfg)) is not None:
        config["strategy"] = mode
    inputs = {"start": start, "data": data_fp, "tokenizer": tokenizer_fp}
    if scores is not None:
        inputs[scores[0]] = scores[1]
    return Identity("checkpoint", config, inputs, code_of("checkpoint", cfg))


def scores_identity(
    cfg,
    kind: str,
    *,
    precision: str,
    checkpoint: str,
    data_fp: str,
    tokenizer_fp: str,
    training_run: str | None = None,
    after_step: int | None = None,
    retriever_fp: str | None = None,
) -> Identity:
    """Per-token values of the training set: PerContrast scores (`estimate`) or a reference model's NLL
    (`reference`). ``tau`` is not part of it: metrics at a threshold are computed where it is read."""
    config: dict[str, Any] = {"prompt": prompt_settings(cfg, retriever_fp), "precision": precision}
    if kind == "estimate":
        config["counterfactual"] = cfg.estimator.counterfactual
    if training_run is not None:  # refresh=rounds: the scores of a run's model after `after_step` steps
        config.update(training_run=training_run, after_step=after_step)
    inputs = {"checkpoint": checkpoint, "data": data_fp, "tokenizer": tokenizer_fp}
    return Identity(kind, config, inputs, code_of(kind, cfg))


def eval_identity(
    cfg,
    *,
    precision: str,
    checkpoint: str,
    data_fp: str,
    train_fp: str | None = None,
    judge: str | None = None,
    side_precision: str | None = None,
    retriever_fp: str | None = None,
) -> Identity:
    """An evaluation: decoding settings as used (greedy decoding, temperature 0, ignores the seed and top_p;
    plain decoding ignores ``cad_alpha``; CAD's counterfactual is the estimator's, keyed below), the
    threshold of its precision/recall/F1, the prompt settings and the precision it ran at. ``train_fp``:
    the training split, where leakage reads other users' values; ``judge``: the judge's weights fingerprint
    (eval.judge), which adds the judge settings and the precision the judge ran at (``side_precision``)."""
    decoding = container(cfg.eval)
    if decoding.get("judge") in ("", "null", None):  # `eval.judge=` is no judge, the same eval as `none`
        decoding["judge"] = "none"
    decoding.pop("at_steps", None)  # which checkpoints of a run are evaluated: each is its own input
    sampled = cfg.eval.temperature > 0
    decoding["temperature"] = float(cfg.eval.temperature)  # `eval.temperature=0` and `=0.0`: one setting
    if not sampled:
        decoding.pop("top_p", None)
    if decoding.get("decoding", "plain") != "cad":  # CAD's strength: only with CAD
        decoding.pop("cad_alpha", None)
    config = {
        "eval": decoding,
        "counterfactual": cfg.estimator.counterfactual,
        "tau": cfg.estimator.tau,
        "prompt": prompt_settings(cfg, retriever_fp),
        "seed": cfg.seed if sampled else None,
        "precision": precision,
    }
    inputs = {"checkpoint": checkpoint, "data": data_fp}
    if train_fp is not None:
        inputs["train_data"] = train_fp
    if judge is not None:
        config["judge"] = {"settings": container(cfg.judge), "precision": side_precision}
        inputs["judge"] = judge
    return Identity("eval", config, inputs, code_of("eval", cfg))


# Judge settings that cannot change an ALOE score (they shape eval.judge's persona prompt).
PERSONA_JUDGE_ONLY = ("prompt", "profile_items", "item_chars")


def dialogue_identity(
    cfg, *, precision: str, side_precision: str, checkpoint: str, data_fp: str, simulator: str, judge: str
) -> Identity:
    """task=aloe: the multi-turn dialogue eval: ALOE's protocol settings, the judge settings it reads, the
    seed (the simulator samples), the precision of the model under test and of the side models (simulator
    and judge load at the device's `auto` precision), and the simulator's and judge's weights."""
    judge_settings = {k: v for k, v in container(cfg.judge).items() if k not in PERSONA_JUDGE_ONLY}
    config = {
        "aloe": container(cfg.aloe),
        "judge": judge_settings,
        "seed": cfg.seed,
        "precision": precision,
        "side_precision": side_precision,
    }
    inputs = {"checkpoint": checkpoint, "data": data_fp, "simulator": simulator, "judge": judge}
    return Identity("eval", config, inputs, code_of("eval", cfg))
