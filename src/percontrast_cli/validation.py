"""Checks on a composed config, run before any work so a bad value is one clear line, not a late crash."""

from __future__ import annotations

from pathlib import Path

from percontrast_cli.data.prompts import COUNTERFACTUALS, STYLES
from percontrast_cli.data.retrieval import BM25_TOKENS, METHODS
from percontrast_cli.data.show import SHOW, SPLITS
from percontrast_cli.data.sources import SUFFIXES
from percontrast_cli.errors import PercontrastError
from percontrast_cli.losses import NORMALIZATIONS, WEIGHTINGS


def _choice(value, name: str, allowed) -> None:
    if value not in allowed:
        raise PercontrastError(f"{name}={value!r} is not one of: {', '.join(map(str, allowed))}")


def _at_least(value, name: str, low) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < low:
        raise PercontrastError(f"{name}={value!r} must be a number >= {low}")


def _integer(value, name: str, low: int) -> None:
    """Counts must be whole numbers: `train.steps=2.5` is an error, not a silent 2."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise PercontrastError(f"{name}={value!r} must be an integer >= {low}")


def _scheduler_names() -> tuple[str, ...]:
    from transformers import SchedulerType

    return tuple(s.value for s in SchedulerType)


def validate_config(cfg) -> None:
    _integer(cfg.seed, "seed", 0)
    _choice(cfg.device, "device", ("auto", "cpu", "cuda"))
    _choice(cfg.model.source, "model.source", ("tiny", "smollm2", "hub"))
    _choice(cfg.model.dtype, "model.dtype", ("auto", "float32", "bfloat16"))
    _integer(cfg.model.max_length, "model.max_length", 32)
    if cfg.model.source == "tiny":
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads"):
            _integer(cfg.model[key], f"model.{key}", 1)
        if cfg.model.hidden_size % cfg.model.num_heads:
            raise PercontrastError(
                f"model.hidden_size={cfg.model.hidden_size} is not divisible by "
                f"model.num_heads={cfg.model.num_heads}"
            )
    if cfg.model.source == "hub" and not cfg.model.name_or_path:
        raise PercontrastError("model.source=hub needs model.name_or_path (a hub id or a local directory)")
    _choice(cfg.train.peft, "train.peft", ("none", "lora"))
    _choice(cfg.train.group_by_length, "train.group_by_length", (True, False))
    _choice(cfg.train.gradient_checkpointing, "train.gradient_checkpointing", (True, False))
    _choice(cfg.task.source, "task.source", ("synthetic", "longlamp"))
    _choice(cfg.inspect.show, "inspect.show", SHOW)
    _choice(cfg.inspect.split, "inspect.split", SPLITS)
    if cfg.data.path and not Path(cfg.data.path).exists():
        raise PercontrastError(f"data.path={cfg.data.path!r}: no such file or directory")
    if cfg.data.path and Path(cfg.data.path).is_file() and Path(cfg.data.path).suffix not in SUFFIXES:
        raise PercontrastError(
            f"data.path={cfg.data.path!r}: unsupported file type {Path(cfg.data.path).suffix!r} "
            f"(use {', '.join(SUFFIXES)})"
        )
    test_fraction = cfg.data.test_fraction
    if (
        not isinstance(test_fraction, int | float)
        or isinstance(test_fraction, bool)
        or not 0 < test_fraction < 1
    ):
        raise PercontrastError(f"data.test_fraction={test_fraction!r} must be a number in (0, 1)")
    if cfg.task.source == "longlamp" and not cfg.task.hub_dataset and not cfg.data.path:
        raise PercontrastError(
            f"task={cfg.task.name} is not public: pass its data with data.path=FILE_OR_DIR (LongLaMP schema)"
        )
    _choice(cfg.prompt.style, "prompt.style", STYLES)
    _choice(cfg.retrieval.method, "retrieval.method", METHODS)
    _choice(cfg.retrieval.bm25_tokens, "retrieval.bm25_tokens", BM25_TOKENS)
    _choice(cfg.eval.split, "eval.split", ("test", "val"))
    _integer(cfg.retrieval.k, "retrieval.k", 0)
    if cfg.data.limit is not None:
        _integer(cfg.data.limit, "data.limit", 1)
    if cfg.data.max_profile_items is not None:
        _integer(cfg.data.max_profile_items, "data.max_profile_items", 0)
    _choice(cfg.estimator.counterfactual, "estimator.counterfactual", COUNTERFACTUALS)
    _choice(cfg.estimator.refresh, "estimator.refresh", ("online", "rounds"))
    _integer(cfg.estimator.rounds, "estimator.rounds", 1)
    _integer(cfg.estimator.batch_size, "estimator.batch_size", 1)
    _at_least(cfg.estimator.tau, "estimator.tau", float("-inf"))
    _choice(cfg.loss.weighting, "loss.weighting", WEIGHTINGS)
    _choice(cfg.loss.normalize, "loss.normalize", NORMALIZATIONS)
    _at_least(cfg.loss.alpha, "loss.alpha", 0)
    _at_least(cfg.loss.clip_min, "loss.clip_min", float("-inf"))
    _at_least(cfg.loss.clip_max, "loss.clip_max", cfg.loss.clip_min)
    if cfg.loss.weighting in ("exp_pir", "linear_pir"):
        _at_least(cfg.loss.clip_max, "loss.clip_max", 1)
    _at_least(cfg.loss.keep_ratio, "loss.keep_ratio", 0)
    if not 0 < cfg.loss.keep_ratio <= 1:
        raise PercontrastError(f"loss.keep_ratio={cfg.loss.keep_ratio!r} must be in (0, 1]")
    for key in ("steps", "batch_size", "grad_accum", "log_every", "save_every"):
        _integer(cfg.train[key], f"train.{key}", 1)
    _integer(cfg.train.lr_warmup_steps, "train.lr_warmup_steps", 0)
    _choice(cfg.train.scheduler, "train.scheduler", _scheduler_names())
    if cfg.train.epochs is not None and (
        not isinstance(cfg.train.epochs, int | float)
        or isinstance(cfg.train.epochs, bool)
        or cfg.train.epochs <= 0
    ):
        raise PercontrastError(
            f"train.epochs={cfg.train.epochs!r} must be a number > 0 (or null: use train.steps)"
        )
    if (
        cfg.estimator.refresh == "rounds"
        and cfg.train.epochs is None
        and cfg.estimator.rounds > cfg.train.steps
    ):
        raise PercontrastError(
            f"estimator.rounds={cfg.estimator.rounds} > train.steps={cfg.train.steps}: "
            "each round needs at least one training step"
        )
    _integer(cfg.train.warmup_steps, "train.warmup_steps", 0)
    _at_least(cfg.train.lr, "train.lr", 0)
    if cfg.train.warmup_lr is not None:
        _at_least(cfg.train.warmup_lr, "train.warmup_lr", 0)
    _integer(cfg.eval.batch_size, "eval.batch_size", 1)
    _integer(cfg.eval.max_new_tokens, "eval.max_new_tokens", 1)
    if cfg.eval.limit is not None:
        _integer(cfg.eval.limit, "eval.limit", 1)
    if cfg.tracker.name == "wandb":
        _choice(cfg.tracker.mode, "tracker.mode", ("offline", "online", "disabled"))
