"""What identifies each artifact: the one place that decides it.

An artifact's id is a hash of three parts, declared here per kind:

- ``config``: exactly the settings that can change the artifact's payload, as resolved values
  (``model.dtype=auto`` keys as the precision it resolved to), and nothing else: logging and
  Trainer-checkpoint intervals, activation checkpointing, the estimator's batch size or the eval
  threshold ``tau`` never key a checkpoint;
- ``inputs``: the fingerprints of what it was computed from (data, tokenizer, weights, upstream artifacts);
- ``code``: a hash of the modules that kind's computation runs, followed through their imports, as abstract
  syntax trees without docstrings (so a comment or docstring edit changes nothing); modules that only
  display, log or launch (``report``, ``heatmap``, ``progress``, ``tracking``, the CLI) and the data
  generators and loaders (the data itself is fingerprinted as an input) never key an artifact, nor do config
  presets or docs.

docs/identity.md lists the rules as a table; tests/test_identity.py checks them through these functions.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from percontrast_cli.store.fingerprint import fingerprint

PACKAGE = "percontrast_cli"
KINDS = ("model", "checkpoint", "estimate", "reference", "eval")

# Where each kind's computation starts; the modules they import (transitively) count too.
ENTRY_MODULES = {
    "model": ("steps.models",),
    "checkpoint": ("steps.training",),
    "estimate": ("steps.scoring",),
    "reference": ("steps.scoring",),
    "eval": ("steps.evaluation", "steps.dialogue"),  # task=aloe evaluates in dialogue
}
# Modules that cannot change a payload: presentation, logging, launching, the store itself, and the data
# sources and generators (their output is fingerprinted as the `data` input instead).
NEVER_KEYS = frozenset(
    {
        "cli.main",
        "cli.stages",
        "cli.worker",
        "reporting.report",
        "reporting.heatmap",
        "runtime.progress",
        "method.training_progress",  # the training run's progress bar and lines
        "method.curve",  # eval.at_steps: times the steps, publishes the points (each keyed by its step)
        "cli.tracking",
        "runtime.errors",
        "store.artifacts",
        "store.identity",
        "store.fingerprint",
        "cli.validation",
        "steps.diagnostics",  # warnings and refusals about degenerate runs: they stop a run, never change one
        "steps.produce",  # find-or-compute bookkeeping
        "steps.costs",  # what a stage cost (time, memory): recorded beside the payload, never in it
        "store.calibration",
        "steps.inherit",  # which settings a consumer takes from its input's manifest
        "data.schema",
        "data.sources",
        "data.synthetic",
        "data.personas",
        "data.bounds",  # the cap on texts: what it leaves is the fingerprinted data
    }
)
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

    @property
    def code(self) -> str:
        return code_hash(self.kind)

    @property
    def id(self) -> str:
        return fingerprint(
            {"kind": self.kind, "config": self.config, "inputs": self.inputs, "code": self.code}
        )


# --- code -------------------------------------------------------------------------------------------------


ROOT = Path(__file__).parent.parent  # the package root: module names are relative to it


def module_path(name: str) -> Path | None:
    """The file of the package's module `name` (e.g. ``data.encode``); None for packages and non-modules."""
    path = ROOT.joinpath(*name.split(".")).with_suffix(".py")
    return path if path.is_file() else None


def imported_modules(name: str) -> set[str]:
    """The package's own modules that module `name` imports, anywhere in its body (lazy imports too)."""
    tree = ast.parse(module_path(name).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from percontrast_cli import report` imports a module; `from percontrast_cli.x import y`, x
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for full in names:
            short = full.removeprefix(f"{PACKAGE}.")
            if full.startswith(f"{PACKAGE}.") and module_path(short) is not None:
                found.add(short)
    return found


def code_modules(kind: str) -> list[str]:
    """The modules whose code can change an artifact of `kind`: its entry modules and what they import."""
    seen: set[str] = set()
    todo = list(ENTRY_MODULES[kind])
    while todo:
        name = todo.pop()
        if name in seen or name in NEVER_KEYS:
            continue
        seen.add(name)
        todo.extend(imported_modules(name))
    return sorted(seen)


def stripped_source(path: Path) -> str:
    """A module's syntax tree without docstrings: comments, docstrings and layout do not count."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


@functools.cache
def code_hash(kind: str) -> str:
    digest = hashlib.sha256()
    for name in code_modules(kind):
        digest.update(name.encode() + b"\0" + stripped_source(module_path(name)).encode() + b"\0")
    return digest.hexdigest()[:12]


@functools.cache
def package_code_hash() -> str:
    """Every module of the package (for `percontrast --version`): what any kind's code hash can depend on."""
    digest = hashlib.sha256()
    for kind in KINDS:
        digest.update(code_hash(kind).encode())
    return digest.hexdigest()[:12]


# --- settings ---------------------------------------------------------------------------------------------


def container(node) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def prompt_settings(cfg) -> dict:
    """The settings that decide a prompt's ids (every stage that encodes examples)."""
    method = cfg.retrieval.method
    retrieval = {"method": method, "k": cfg.retrieval.k}
    if method == "bm25":
        retrieval["bm25_tokens"] = cfg.retrieval.bm25_tokens
    if method == "contriever":
        retrieval["model"] = cfg.retrieval.model
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
    if cfg.model.source == "tiny":
        architecture = {key: cfg.model[key] for key in TINY_ARCHITECTURE}
        return Identity(
            "model", {"source": "tiny", "architecture": architecture, "seed": cfg.seed}, {"data": data_fp}
        )
    return Identity("model", {"source": cfg.model.source}, {"weights": weights_fp})


def train_settings(cfg) -> dict:
    """The training options that can change the weights; LoRA settings only with peft=lora; the global
    batch, not how it is split over micro-batches and processes (the loss is normalised over the step)."""
    train = {k: v for k, v in container(cfg.train).items() if k not in TRAIN_NOT_RESULT}
    if cfg.train.peft != "lora":
        train.pop("lora", None)
    processes = cfg.distributed.num_processes if cfg.distributed.name != "none" else 1
    train["global_batch"] = train.pop("batch_size") * train.pop("grad_accum") * processes
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
) -> Identity:
    """A trained checkpoint. ``loss``: the loss as trained (plain CE for every CE-equivalent setting);
    ``source``: where its weights come from (see losses.weight_source); ``scores``: (kind, id) of the estimate
    or reference artifact the weights read. ``steps``: the optimiser steps it was trained for; a checkpoint
    saved at step ``steps`` of a longer run (eval.at_steps) whose first steps differ from a ``steps``-step
    run's (a learning-rate schedule shaped by the run's length) also keys that run's ``schedule_steps``;
    otherwise it is the ``steps``-step run's checkpoint, and has its id."""
    config = {
        "train": train_settings(cfg),
        "steps": steps,
        "loss": loss,
        "weights_from": weight_source_settings(cfg, source),
        "seed": cfg.seed,
        "prompt": prompt_settings(cfg),
        "precision": precision,
    }
    if schedule_steps is not None:
        config["schedule_steps"] = schedule_steps
    inputs = {"start": start, "data": data_fp, "tokenizer": tokenizer_fp}
    if scores is not None:
        inputs[scores[0]] = scores[1]
    return Identity("checkpoint", config, inputs)


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
) -> Identity:
    """Per-token values of the training set: PerContrast scores (`estimate`) or a reference model's NLL
    (`reference`). ``tau`` is not part of it: metrics at a threshold are computed where it is read."""
    config: dict[str, Any] = {"prompt": prompt_settings(cfg), "precision": precision}
    if kind == "estimate":
        config["counterfactual"] = cfg.estimator.counterfactual
    if training_run is not None:  # refresh=rounds: the scores of a run's model after `after_step` steps
        config.update(training_run=training_run, after_step=after_step)
    inputs = {"checkpoint": checkpoint, "data": data_fp, "tokenizer": tokenizer_fp}
    return Identity(kind, config, inputs)


def eval_identity(cfg, *, precision: str, checkpoint: str, data_fp: str) -> Identity:
    """An evaluation: decoding settings as used (greedy decoding, temperature 0, ignores the seed and top_p;
    plain decoding ignores ``cad_alpha``; CAD's counterfactual is the estimator's, keyed below),
    the threshold of its precision/recall/F1, the prompt settings and the precision it ran at."""
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
        "prompt": prompt_settings(cfg),
        "seed": cfg.seed if sampled else None,
        "precision": precision,
    }
    return Identity("eval", config, {"checkpoint": checkpoint, "data": data_fp})
