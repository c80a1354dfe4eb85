"""Checks on a composed config, run before any work so a bad value is one clear line, not a late crash."""

from __future__ import annotations

from pathlib import Path

from percontrast_cli.data.prompts import COUNTERFACTUALS
from percontrast_cli.errors import PercontrastError
from percontrast_cli.losses import NORMALIZATIONS, WEIGHTINGS


def _choice(value, name: str, allowed) -> None:
    if value not in allowed:
        raise PercontrastError(f"{name}={value!r} is not one of: {', '.join(map(str, allowed))}")


def _at_least(value, name: str, low) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < low:
        raise PercontrastError(f"{name}={value!r} must be a number >= {low}")


def validate_config(cfg) -> None:
    _choice(cfg.device, "device", ("auto", "cpu", "cuda"))
    _choice(cfg.model.source, "model.source", ("tiny", "smollm2", "hub"))
    if cfg.model.source == "hub" and not cfg.model.name_or_path:
        raise PercontrastError("model.source=hub needs model.name_or_path (a hub id or a local directory)")
    _choice(cfg.train.peft, "train.peft", ("none", "lora"))
    _choice(cfg.task.source, "task.source", ("synthetic", "longlamp"))
    if cfg.data.path and not Path(cfg.data.path).exists():
        raise PercontrastError(f"data.path={cfg.data.path!r}: no such file or directory")
    if cfg.task.source == "longlamp" and not cfg.task.hub_dataset and not cfg.data.path:
        raise PercontrastError(
            f"task={cfg.task.name} is not public: pass its data with data.path=FILE_OR_DIR (LongLaMP schema)"
        )
    _choice(cfg.retrieval.method, "retrieval.method", ("bm25",))
    _at_least(cfg.retrieval.k, "retrieval.k", 0)
    if cfg.data.limit is not None:
        _at_least(cfg.data.limit, "data.limit", 1)
    if cfg.data.max_profile_items is not None:
        _at_least(cfg.data.max_profile_items, "data.max_profile_items", 0)
    _choice(cfg.estimator.counterfactual, "estimator.counterfactual", COUNTERFACTUALS)
    _choice(cfg.estimator.refresh, "estimator.refresh", ("online", "rounds"))
    _at_least(cfg.estimator.rounds, "estimator.rounds", 1)
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
        _at_least(cfg.train[key], f"train.{key}", 1)
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
    _at_least(cfg.train.warmup_steps, "train.warmup_steps", 0)
    _at_least(cfg.train.lr, "train.lr", 0)
    _at_least(cfg.eval.batch_size, "eval.batch_size", 1)
    _at_least(cfg.eval.max_new_tokens, "eval.max_new_tokens", 1)
    if cfg.tracker.name == "wandb":
        _choice(cfg.tracker.mode, "tracker.mode", ("offline", "online", "disabled"))
