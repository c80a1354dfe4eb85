"""Checks on a composed config, run before any work so a bad value is one clear line, not a late crash."""

from __future__ import annotations

import functools
import math
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from percontrast_cli.data.aloe import check_task_config
from percontrast_cli.data.prompts import COUNTERFACTUALS, STYLES
from percontrast_cli.data.retrieval import BM25_TOKENS, METHODS
from percontrast_cli.data.show import SHOW, SPLITS
from percontrast_cli.data.sources import SUFFIXES
from percontrast_cli.evaluation.aloe import check_aloe_config
from percontrast_cli.evaluation.judge import check_judge_config
from percontrast_cli.method.losses import NORMALIZATIONS, WEIGHTINGS, negative_weights
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.store.identity import CLASSIFY_HERE, FREE_FORM, free_form, nearest_key

INT64_MAX = 2**63 - 1  # the largest count torch, numpy and the tokenizers take
SEED_MAX = 2**32 - 1  # numpy's (and so the data order's) seed range
BOOLEANS = (
    "model.from_scratch",
    "train.gradient_checkpointing",
    "train.group_by_length",
    "eval.meteor",
    "eval.rouge_stemmer",
    "aloe.raw_lines",
)


def _choice(value, name: str, allowed) -> None:
    if value not in allowed:
        raise PercontrastError(f"{name}={value!r} is not one of: {', '.join(map(str, allowed))}")


def _at_least(value, name: str, low) -> None:
    _number(value, name, low=low)


def _number(value, name: str, low=None, high=None, low_open=False, high_open=False) -> None:
    """A finite number within bounds: NaN and infinities pass every `<` test, so they are checked first."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    finite = is_number and math.isfinite(value)
    inside = finite and (
        (low is None or (value > low if low_open else value >= low))
        and (high is None or (value < high if high_open else value <= high))
    )
    if inside:
        return
    if low is not None and high is not None:
        bounds = f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        bounds = f" {'>' if low_open else '>='} {low}"
    elif high is not None:
        bounds = f" {'<' if high_open else '<='} {high}"
    else:
        bounds = ""
    why = " (not NaN or infinite)" if is_number and not finite else ""
    raise PercontrastError(f"{name}={value!r} must be a number{bounds}{why}")


def _check_nextquill(cfg) -> None:
    """NextQuill's weightings read both passes' whole distributions inside the step (no estimate artifact
    stores them), and its causal term trains through the counterfactual pass those weightings run."""
    _number(cfg.loss.threshold, "loss.threshold")
    _at_least(cfg.loss.causal_alpha, "loss.causal_alpha", 0)
    contrast = WEIGHTINGS[cfg.loss.weighting] == "contrast"
    if cfg.loss.causal_alpha != 0 and not contrast:
        raise PercontrastError(
            f"loss.causal_alpha={cfg.loss.causal_alpha} needs NextQuill's weighting (loss.weighting=js or "
            f"target, e.g. loss=nextquill), not loss.weighting={cfg.loss.weighting}; "
            "or set loss.causal_alpha=0"
        )
    if contrast and cfg.estimator.refresh != "online":
        raise PercontrastError(
            f"loss.weighting={cfg.loss.weighting} re-estimates inside every step: estimator.refresh="
            f"{cfg.estimator.refresh} is not supported (no estimate artifact holds whole distributions); "
            "use estimator.refresh=online"
        )


def _finite_everywhere(cfg) -> None:
    """No option anywhere holds NaN or an infinity (literal values; interpolations point at checked ones)."""

    def walk(node, prefix: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict | list):
                walk(value, name)
            elif isinstance(value, float) and not math.isfinite(value):
                raise PercontrastError(f"{name}={value!r} must be a finite number (not NaN or infinite)")
            elif isinstance(value, int) and not -INT64_MAX <= value <= INT64_MAX:
                raise PercontrastError(f"{name}={value!r} is out of range (at most 2**63 - 1)")

    if isinstance(cfg, DictConfig | ListConfig):
        walk(OmegaConf.to_container(cfg, resolve=False), "")


def _reference(value, name: str) -> None:
    """An artifact reference (id, path or `latest`): never empty, never the current directory."""
    if value is None:
        return
    if isinstance(value, float):
        # Hydra parses an id of digits with one "e" as a float (420540606e36 -> 4.20540606e+44): the id is
        # lost before it gets here, so say how to pass it (digits only stay exact: 12 digits, an int)
        raise PercontrastError(
            f"{name}={value!r} was read as a number, not an artifact id (Hydra parses ids such as "
            f"420540606e36 as numbers): quote it, {name}=\"'<id>'\" (a sweep: {name}=\"'<id>','<id>'\")"
        )
    text = str(value)
    if not text.strip() or Path(text.strip()) == Path("."):
        raise PercontrastError(
            f"{name}={text!r} does not name an artifact: give an artifact id, the path of an artifact "
            "directory, or latest"
        )


def _integer(value, name: str, low: int, high: int = INT64_MAX) -> None:
    """Counts must be whole numbers: `train.steps=2.5` is an error, not a silent 2; and ones that the
    libraries take (a C integer, numpy's 32-bit seed), not a traceback after the work started."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise PercontrastError(f"{name}={value!r} must be an integer >= {low}")
    if value > high:
        raise PercontrastError(f"{name}={value!r} must be an integer in [{low}, {high}]")


def _boolean(cfg, name: str) -> None:
    """`eval.meteor=maybe` is an error, not a truthy string."""
    value = OmegaConf.select(cfg, name, default=False)
    if not isinstance(value, bool):
        raise PercontrastError(f"{name}={value!r} must be true or false")


def _path_given(value, name: str, unset: str) -> None:
    """An empty path is no path: `paths.root=` would put the store at the filesystem root."""
    if value is not None and not str(value).strip():
        raise PercontrastError(f"{name}={str(value)!r} is empty: {unset}")


# Learning-rate schedules every transformers release has: they pass without importing SchedulerType, whose
# module imports the Trainer's dependencies (peft and more: seconds, in every command, `report` included).
COMMON_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")


def _check_scheduler(name) -> None:
    if name in COMMON_SCHEDULERS:
        return
    from transformers import SchedulerType

    _choice(name, "train.scheduler", tuple(s.value for s in SchedulerType))


def _writable_place(value, name: str, is_file: bool = False) -> None:
    """An output path whose nearest existing part is a file (`report.out_dir=notes.txt/x`), or a file path
    that is a directory, fails here, not after the work."""
    if value is None or not str(value).strip():
        return
    path = Path(str(value)).expanduser()
    if is_file and path.is_dir():
        raise PercontrastError(
            f"{name}={value}: is a directory; give a file path (e.g. {path / 'page.html'})"
        )
    existing = path if not is_file else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise PercontrastError(f"{name}={value}: {existing} is a file, not a directory; pick another place")


def _paths_and_counts(cfg) -> None:
    """Paths that must not be empty, and the counts the groups' own checks leave out."""
    for key in ("root", "artifacts", "cache"):
        _path_given(cfg.paths[key], f"paths.{key}", "give a directory (unset PERCONTRAST_OUTPUTS / "
                    "PERCONTRAST_CACHE or drop the override for the defaults)")  # fmt: skip
    _path_given(cfg.data.path, "data.path", "give a file or directory, or data.path=null for the task's own")
    _path_given(cfg.report.out_dir, "report.out_dir", "give a directory (drop it for the default)")
    if not Path(str(cfg.report.out_dir)).is_relative_to(str(cfg.paths.root)):  # the root: cli.main's check
        _writable_place(cfg.report.out_dir, "report.out_dir")
    _writable_place(cfg.inspect.out, "inspect.out", is_file=True)
    _path_given(cfg.model.name_or_path, "model.name_or_path", "give a hub id or a local model directory")
    if cfg.retrieval.method == "contriever":
        _path_given(cfg.retrieval.model, "retrieval.model", "give a hub id or a local encoder directory")
    for key in ("n_train_users", "n_test_users", "examples_per_user"):
        if key in cfg.task:
            _integer(cfg.task[key], f"task.{key}", 1)
    if "seed" in cfg.task:
        _integer(cfg.task.seed, "task.seed", 0, SEED_MAX)
    _integer(cfg.example, "example", 0)
    _integer(cfg.inspect.top_k, "inspect.top_k", 1)
    for name in BOOLEANS:
        _boolean(cfg, name)


def validate_config(cfg) -> None:
    _integer(cfg.seed, "seed", 0, SEED_MAX)
    _paths_and_counts(cfg)
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
    _choice(cfg.task.source, "task.source", ("synthetic", "longlamp", "aloe"))
    check_judge_config(cfg.judge)
    if cfg.task.source == "aloe":
        check_task_config(cfg.task, cfg.data.path)
        check_aloe_config(cfg)
        for key in ("data.limit", "data.max_profile_items", "eval.limit"):  # never silently ignored
            if OmegaConf.select(cfg, key) is not None:
                raise PercontrastError(
                    f"{key}={OmegaConf.select(cfg, key)} does not apply to task=aloe (it evaluates whole "
                    "simulated users): use task.n_profiles=N and task.n_personalities=M for a smaller run"
                )
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
    _reference(cfg.checkpoint, "checkpoint")
    _reference(cfg.estimate, "estimate")
    evals = cfg.report.evals
    for index, ref in enumerate([evals] if isinstance(evals, str) or evals is None else evals):
        _reference(
            "" if ref is None else ref, "report.evals" if isinstance(evals, str) else f"report.evals[{index}]"
        )
    if cfg.task.source == "longlamp" and not cfg.task.hub_dataset and not cfg.data.path:
        raise PercontrastError(
            f"task={cfg.task.name} is not public: pass its data with data.path=FILE_OR_DIR (LongLaMP schema)"
        )
    _choice(cfg.prompt.style, "prompt.style", STYLES)
    _choice(cfg.retrieval.method, "retrieval.method", METHODS)
    _choice(cfg.retrieval.bm25_tokens, "retrieval.bm25_tokens", BM25_TOKENS)
    _choice(cfg.eval.split, "eval.split", ("test", "val"))
    _choice(cfg.eval.decoding, "eval.decoding", ("plain", "cad"))
    _at_least(cfg.eval.cad_alpha, "eval.cad_alpha", 0)
    _integer(cfg.retrieval.k, "retrieval.k", 0)
    if cfg.data.limit is not None:
        _integer(cfg.data.limit, "data.limit", 1)
    if cfg.data.max_profile_items is not None:
        _integer(cfg.data.max_profile_items, "data.max_profile_items", 0)
    if cfg.data.max_text_chars is not None:
        _integer(cfg.data.max_text_chars, "data.max_text_chars", 1)
    _choice(cfg.estimator.counterfactual, "estimator.counterfactual", COUNTERFACTUALS)
    _choice(cfg.estimator.refresh, "estimator.refresh", ("online", "rounds"))
    _integer(cfg.estimator.rounds, "estimator.rounds", 1)
    _integer(cfg.estimator.batch_size, "estimator.batch_size", 1)
    _number(cfg.estimator.tau, "estimator.tau")
    _choice(cfg.loss.weighting, "loss.weighting", WEIGHTINGS)
    _choice(cfg.loss.normalize, "loss.normalize", NORMALIZATIONS)
    _at_least(cfg.loss.alpha, "loss.alpha", 0)
    _number(cfg.loss.clip_min, "loss.clip_min")
    _at_least(cfg.loss.clip_max, "loss.clip_max", cfg.loss.clip_min)
    if cfg.loss.weighting in ("exp_pir", "linear_pir"):
        _at_least(cfg.loss.clip_max, "loss.clip_max", 1)
    _number(cfg.loss.keep_ratio, "loss.keep_ratio", 0, 1, low_open=True)
    _check_nextquill(cfg)
    if (problem := negative_weights(cfg.loss)) is not None:
        raise PercontrastError(problem)
    for key in ("steps", "batch_size", "grad_accum", "log_every", "save_every"):
        _integer(cfg.train[key], f"train.{key}", 1)
    _integer(cfg.train.lr_warmup_steps, "train.lr_warmup_steps", 0)
    _check_scheduler(cfg.train.scheduler)
    if cfg.train.epochs is not None and (
        not isinstance(cfg.train.epochs, int | float)
        or isinstance(cfg.train.epochs, bool)
        or not math.isfinite(cfg.train.epochs)
        or cfg.train.epochs <= 0
    ):
        raise PercontrastError(
            f"train.epochs={cfg.train.epochs!r} must be a finite number > 0 (or null: use train.steps)"
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
    _number(cfg.train.lr, "train.lr", low=0, low_open=True)
    if cfg.train.warmup_lr is not None:
        _number(cfg.train.warmup_lr, "train.warmup_lr", low=0, low_open=True)
    _number(cfg.train.weight_decay, "train.weight_decay", low=0)
    _number(cfg.train.max_grad_norm, "train.max_grad_norm", low=0)
    _integer(cfg.train.lora.r, "train.lora.r", 1)
    _number(cfg.train.lora.alpha, "train.lora.alpha", low=0, low_open=True)
    _number(cfg.train.lora.dropout, "train.lora.dropout", 0, 1, high_open=True)
    _integer(cfg.eval.batch_size, "eval.batch_size", 1)
    _integer(cfg.eval.max_new_tokens, "eval.max_new_tokens", 1)
    if cfg.eval.limit is not None:
        _integer(cfg.eval.limit, "eval.limit", 1)
    _at_steps(cfg.eval.at_steps)
    _number(cfg.eval.temperature, "eval.temperature", low=0)
    _number(cfg.eval.top_p, "eval.top_p", 0, 1, low_open=True)
    _integer(cfg.eval.samples, "eval.samples", 1)
    if cfg.eval.samples > 1 and cfg.eval.temperature == 0:
        raise PercontrastError(
            f"eval.samples={cfg.eval.samples} needs eval.temperature > 0 (e.g. eval.temperature=0.4): greedy "
            "decoding writes the same text every time"
        )
    _distributed(cfg.distributed)
    _finite_everywhere(cfg)  # the options without a rule of their own above
    if cfg.tracker.name == "wandb":
        _choice(cfg.tracker.mode, "tracker.mode", ("offline", "online", "disabled"))


def _at_steps(at_steps) -> None:
    """A list of optimiser steps (0: the starting model); the end of the run is checked at training."""
    if not isinstance(at_steps, ListConfig | list):
        raise PercontrastError(f"eval.at_steps={at_steps!r} must be a list of optimiser steps: [0,10,30]")
    for index, step in enumerate(at_steps):
        _integer(step, f"eval.at_steps[{index}]", 0)


def _distributed(dist) -> None:
    _integer(dist.num_processes, "distributed.num_processes", 1)
    _integer(dist.num_machines, "distributed.num_machines", 1)
    _number(dist.timeout_s, "distributed.timeout_s", low=0, low_open=True)
    rank = dist.machine_rank
    try:  # from Slurm's environment it arrives as a string
        rank = int(str(rank))
    except ValueError:
        pass
    if not isinstance(rank, int) or not 0 <= rank < dist.num_machines:
        raise PercontrastError(
            f"distributed.machine_rank={dist.machine_rank!r} must be an integer in [0, "
            f"distributed.num_machines={dist.num_machines})"
        )
    _integer(dist.main_process_port, "distributed.main_process_port", 1)
    if dist.main_process_port > 65535:
        raise PercontrastError(f"distributed.main_process_port={dist.main_process_port} must be <= 65535")


# --- keys added with `+` ------------------------------------------------------------------------------------


def _leaves(node, prefix: str, into: set[str]) -> None:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            if key != "defaults":
                _leaves(value, f"{prefix}.{key}" if prefix else str(key), into)
    elif prefix:
        into.add(prefix)


@functools.cache
def config_groups() -> frozenset[str]:
    root = resources.files("percontrast_cli") / "conf"
    return frozenset(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))


@functools.cache
def known_keys() -> frozenset[str]:
    """Every key some option or preset of the shipped config sets (read from the YAML files, without
    composing): what a `+key=value` override may add."""
    root = Path(str(resources.files("percontrast_cli") / "conf"))
    found: set[str] = set()
    for path in sorted(root.rglob("*.yaml")):
        group = path.parent.relative_to(root).as_posix()
        if group.split("/")[0] == "hydra":
            continue
        text = path.read_text()
        prefix = "" if group == "." or "@package _global_" in text.split("\n", 1)[0] else group
        content = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
        if group == ".":
            content.pop("hydra", None)
        _leaves(content, prefix.replace("/", "."), found)
    return frozenset(found)


def check_added_key(key: str, override: str) -> None:
    """`+key=value` adds a key the config does not have: it must be one some option sets, or lie under a
    free-form group; a typo (`+train.lrr=1`) is one line naming the nearest known key."""
    if key in config_groups() or key.split("@")[0] in config_groups() or free_form(key):
        return
    known = known_keys()
    if key in known or any(k.startswith(f"{key}.") for k in known):
        return
    guess = nearest_key(key, known)
    hint = f" (did you mean {guess}?)" if guess else ""
    raise PercontrastError(
        f"{override}: no config key {key}{hint}; a new key is first classified in {CLASSIFY_HERE} "
        f"(free-form groups, which take any key: {', '.join(FREE_FORM)})"
    )
