"""`percontrast <stage> [hydra overrides]`: dispatch a stage to its Hydra entry point.

Hydra has no subcommands, so the stage is taken off argv first; overrides are composed and validated up
front (every combination of a -m sweep) so a typo is one line and exit code 2, never a traceback. The
outputs root is checked up front too, and Ctrl-C / SIGTERM end with one line saying how to resume.

Imports are lazy: `percontrast --help` and `--version` load neither torch nor Hydra.
"""

from __future__ import annotations

import difflib
import errno
import itertools
import json
import os
import shutil
import sys
import tempfile
import traceback
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from percontrast_cli import __version__
from percontrast_cli.runtime import environment, interrupts
from percontrast_cli.runtime.errors import PercontrastError, filesystem_message

# Hydra resolves this against this file (cli/), so the package's conf/ is one folder up.
CONFIG_PATH = "../conf"
# The stages of stages.STAGES, named here so that --help and a typo need not import the stages (torch).
STAGE_NAMES = ("estimate", "train", "eval", "run", "report", "inspect", "calibrate")


def list_things(args: list[str]) -> None:
    from percontrast_cli.cli.inventory import main as inventory

    inventory(args)


def print_environment(args: list[str]) -> None:
    from percontrast_cli.cli.environment import main as environment

    environment(args)


def plan(rest: list[str]) -> None:
    """`percontrast plan`: run's command line, composed and validated as `run` would, then planned."""
    from percontrast_cli.cli.plan import show_plan

    parser = hydra_parser()
    overrides, flags = split_command_line(rest, parser)
    args = parser.parse_args([*overrides, *flags])
    points = validate_overrides(overrides, args, with_points=True)
    if len(points) > 1 and not args.multirun:
        fail("plan: these overrides sweep several values: add -m, as `run` needs it")
    show_plan(points, overrides)


# Commands that read configs and files only: they skip Hydra's job machinery.
QUICK_COMMANDS = {"ls": list_things, "env": print_environment, "plan": plan}

USAGE = """usage: percontrast <stage> [-m] [key=value ...] [hydra flags]
       percontrast --help | --version

stages:
  estimate   PerContrast scores for the training split (artifact kind: estimate)
  train      CE or PerCE training, with bootstrap refresh (artifact kind: checkpoint)
  eval       generation, ROUGE, personal-token metrics, estimator AUROC (needs checkpoint=<id|path|latest>)
  run        estimate -> train -> eval in one go
  report     comparison table (terminal, Markdown, CSV) + plots over eval artifacts (report.evals=...)
  inspect    token heatmap of PerContrast scores (estimate=<id> example=<n>), terminal + HTML
  calibrate  `run` at a few steps in a temporary store: measures what each stage costs here, for `plan`

commands that read only (no torch, answered at once):
  ls         presets, tasks, models, losses; `ls artifacts [key=value ...]`: the store, filtered
  env        versions, torch build, devices and bf16 support, threads, store, WordNet: for a bug report
  plan       `plan [-m] <run's overrides>`: each job's stages found / partly done / to compute, with
             steps, tokens, estimated time and peak memory; nothing is computed, loaded or written

config groups (pick with group=option, e.g. loss=ce):
{groups}
hydra flags (after the stage):
  -m, --multirun       a sweep over comma-separated values
  --cfg job|hydra|all  print the composed config instead of running (-p PKG: one package of it)
  -cd DIR, -cn NAME    add a config directory / pick another primary config
  --info [WHAT]        Hydra's information (config, defaults, searchpath, ...)

examples:
  percontrast run                                   # tiny model, synthetic_email, PerCE
  percontrast run -m loss=ce,perce seed=0,1,2       # a sweep; finished jobs are skipped on rerun
  percontrast eval checkpoint=latest
  percontrast train --cfg job                       # print the composed config
"""


def config_groups() -> str:
    root = resources.files("percontrast_cli") / "conf"
    groups = {}
    for group in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        options = sorted(p.name[:-5] for p in (root / group).iterdir() if p.name.endswith(".yaml"))
        if options:
            groups[group] = options
    width = max(map(len, groups), default=0) + 2  # aligned, and never `distributedddp`
    return "".join(f"  {group:<{width}}{', '.join(options)}\n" for group, options in groups.items())


def version() -> str:
    # what every artifact id's code hash depends on; imports no torch
    from percontrast_cli.store.code_scope import package_code_hash

    return f"percontrast {__version__} (code {package_code_hash()})"


def first_line(exc: BaseException) -> str:
    """The first non-empty message line of an exception or of the exceptions that caused it."""
    while exc is not None:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        if lines:
            return lines[0]
        exc = exc.__cause__ or exc.__context__
    return "invalid configuration"


def fail(message: str, code: int = 2) -> None:
    print(f"percontrast: error: {message}", file=sys.stderr)
    sys.exit(code)


def note(message: str) -> None:
    print(f"percontrast: note: {message}", file=sys.stderr)


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else ""


# ---------------------------------------------------------------------------------------------------------
# Hydra's flags and the overrides


def hydra_parser():
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.error = lambda message: fail(f"bad command line: {message} (see percontrast --help)")
    return parser


def split_command_line(rest: list[str], parser) -> tuple[list[str], list[str]]:
    """(overrides, flags with their values). Hydra's flags that take a value (`--cfg job`, `-c job`,
    `-p PKG`, `-cd DIR`, `-cn NAME`, `-cp DIR`, `--info [WHAT]`) keep it: the value is no override."""
    actions = {option: action for action in parser._actions for option in action.option_strings}
    overrides, flags = [], []
    i = 0
    while i < len(rest):
        token, following = rest[i], rest[i + 1] if i + 1 < len(rest) else None
        i += 1
        if not token.startswith("-"):
            overrides.append(token)
            continue
        flags.append(token)
        action = actions.get(token)  # `--cfg=job` carries its value; unknown flags are argparse's to reject
        if action is None or following is None or action.nargs == 0:
            continue
        if action.nargs is None or (action.nargs == "?" and following in (action.choices or ())):
            flags.append(following)  # `--cfg job`; `--info config` (only a valid choice is its value)
            i += 1
    return overrides, flags


@contextmanager
def hydra_like(args):
    """Hydra's global state as `hydra.main` sets it up for this command line: the primary config path
    (`-cp`) and the extra config dir (`-cd`, before the structured configs, as Hydra puts it), so that
    validation composes exactly what the run will."""
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    config_path = (args.config_path if args is not None else None) or CONFIG_PATH
    # this module by name: run as `python -m percontrast_cli.cli.main` it is __main__
    search_path = create_automatic_config_search_path(None, "percontrast_cli.cli.main", config_path)
    if args is not None and args.config_dir:
        directory = Path(args.config_dir).expanduser().absolute()
        if not directory.is_dir():
            fail(f"--config-dir {args.config_dir}: no such directory")
        search_path.prepend(
            provider="command-line", path=f"file://{directory}", anchor=SearchPathQuery(provider="schema")
        )
    backup = get_gh_backup()
    version.setbase("1.3")
    GlobalHydra.instance().clear()
    Hydra.create_main_hydra2(task_name="percontrast", config_search_path=search_path)
    try:
        yield
    finally:
        restore_gh_from_backup(backup)


def explain(exc: BaseException, cfg_base) -> str:
    """Hydra's composition errors as one line that keeps the list of valid options and adds a guess."""
    from hydra.errors import MissingConfigException
    from omegaconf import OmegaConf

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        guess = did_you_mean(name, exc.options)
        hint = f" (did you mean {group}={guess}?)" if guess else ""
        return (
            f"bad override: Could not find '{exc.missing_cfg_file}'{hint}; available options in "
            f"'{group}': {', '.join(exc.options)}"
        )
    cause = exc.__cause__
    full_key = getattr(cause, "full_key", None)
    if full_key and cfg_base is not None and "is not in struct" in str(cause):
        parent, _, leaf = str(full_key).rpartition(".")
        node = OmegaConf.select(cfg_base, parent) if parent else cfg_base
        keys = sorted(str(k) for k in node.keys()) if hasattr(node, "keys") else []
        guess = did_you_mean(leaf, keys)
        wrong = first_line(exc).removeprefix("Could not override ").rstrip(".").strip("'")
        hint = ""
        if guess:
            fixed = f"{parent}.{guess}" if parent else guess
            hint = f" (did you mean {wrong.replace(str(full_key), fixed, 1)}?)"
        where = f"'{parent}'" if parent else "the config"
        return (
            f"bad override: Could not override '{wrong}': no key '{leaf}' in {where}{hint}; "
            f"keys: {', '.join(keys)}"
        )
    return f"bad override: {first_line(exc)}"


def validate_overrides(overrides: list[str], args=None, with_points: bool = False) -> list:
    """Compose the config for every point of the sweep and check its values; the composed configs (with
    `with_points`: (the point's overrides, its config) pairs)."""
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from percontrast_cli.cli.validation import check_added_key, validate_config

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # Hydra's parse errors carry a useful message and a noisy cause chain
        fail(f"bad override: {first_line(exc)}")
    choices = []
    for override in parsed:
        if override.is_hydra_override():
            continue
        key = override.get_key_element()
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        prefix = {"ADD": "+", "FORCE_ADD": "++", "DEL": "~"}.get(override.type.name, "")
        if prefix in ("+", "++"):
            try:
                check_added_key(override.key_or_group, override.input_line or key)
            except PercontrastError as exc:
                fail(str(exc))
        # the key element carries its prefix already (`+train.x`, `~seed`): never a second one
        choices.append([f"{key}={v}" if prefix != "~" or v else key for v in values])
    config_name = (args.config_name if args is not None else None) or "config"
    composed = []
    with hydra_like(args):
        for combination in itertools.islice(itertools.product(*choices), 256):
            try:
                cfg = compose(config_name, overrides=list(combination))
                validate_config(cfg)
            except PercontrastError as exc:
                fail(str(exc))
            except Exception as exc:
                try:  # the config without the overrides: where a key typo looks for its neighbours
                    base = compose(config_name)
                except Exception:
                    base = None
                fail(explain(exc, base))
            composed.append((list(combination), cfg) if with_points else cfg)
    return composed


# ---------------------------------------------------------------------------------------------------------
# The outputs root, checked before Hydra makes its run dir there


def unwritable(path: Path) -> OSError | None:
    """Why nothing can be written in the existing directory `path` (read-only, no permission, full)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".percontrast-probe-", dir=path)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)  # delayed allocation: a full disk may only say so here
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        return exc
    if shutil.disk_usage(path).free < (1 << 20):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


def check_directory(path: Path, role: str) -> OSError | None:
    """Up front: `path` must be a directory that exists or can be made (else one line, exit 2). Returns why
    it cannot be written (a read-only or full store can still serve what it holds), None when it can."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        fail(filesystem_message(OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing)), path))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create {role} {path}: {exc.strerror}; point PERCONTRAST_OUTPUTS (or paths.root) at a "
             "writable directory")  # fmt: skip
    return unwritable(path)


def check_outputs(configs: list, overrides: list[str]) -> list[str]:
    """Hydra's run dir lives under the outputs root: when that root cannot be written, the run dir moves to
    a temp dir (said so), so a rerun that only skips and an eval that only reads still work; writing an
    artifact then fails with one line. Returns the extra overrides for Hydra."""
    extra: list[str] = []
    seen = set()
    for cfg in configs:
        root, artifacts = Path(str(cfg.paths.root)), Path(str(cfg.paths.artifacts))
        if (root, artifacts) in seen:
            continue
        seen.add((root, artifacts))
        where, problem = root, check_directory(root, "outputs root")
        if problem is None:
            where, problem = artifacts, check_directory(artifacts, "artifact store")
        if problem is None or extra:
            continue
        cause = os.strerror(problem.errno) if problem.errno else str(problem)
        logs = Path(tempfile.gettempdir()) / f"percontrast-{os.getuid()}" / "hydra"
        if not any(o.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for o in overrides):
            extra = [
                f"hydra.run.dir={logs}/${{now:%Y-%m-%d}}/${{now:%H-%M-%S-%f}}",
                f"hydra.sweep.dir={logs}/multirun/${{now:%Y-%m-%d}}/${{now:%H-%M-%S-%f}}",
            ]
        note(
            f"{where} cannot be written ({cause}): only artifacts that already exist can be used"
            + (f"; this run's log goes under {logs}" if extra else "")
        )
    return extra


# ---------------------------------------------------------------------------------------------------------
# Running a stage


FAILURES: list[dict] = []  # jobs of this process's sweep that failed
SWEEP_SUMMARY = "failures.jsonl"


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(exc: BaseException) -> None:
    """One failed job of a sweep: its traceback in the job's dir, one line in the sweep's summary file
    (appended under a file lock: Slurm jobs may finish at once), and a line on stderr; the sweep goes on."""
    from filelock import FileLock
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    reason = (
        first_line(exc) if isinstance(exc, PercontrastError) else f"{type(exc).__name__}: {first_line(exc)}"
    )
    entry = {
        "job": hydra_cfg.job.num,
        "overrides": " ".join(hydra_cfg.overrides.task),
        "reason": reason,
        "dir": str(job_dir),
    }
    summary = Path(hydra_cfg.sweep.dir) / SWEEP_SUMMARY
    try:  # the sweep dir may sit on the disk that just filled up: the line on stderr still tells
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / "error.txt").write_text("".join(traceback.format_exception(exc)))
        with FileLock(f"{summary}.lock"):
            with open(summary, "a") as f:
                f.write(json.dumps(entry) + "\n")
    except OSError:
        pass
    entry["summary"] = str(summary)
    FAILURES.append(entry)
    print(f"percontrast: job #{entry['job']} ({entry['overrides']}) failed: {reason}", file=sys.stderr)


def filesystem_fault(exc: Exception, cfg) -> PercontrastError | None:
    """A file-system fault anywhere in a stage (a Trainer checkpoint, a report, Hydra's job dir...) as the
    user-facing one-liner; libraries that hide the errno (torch's "file write failed") are recognised by the
    outputs root's disk being full."""
    root = Path(str(cfg.paths.root))
    if (message := filesystem_message(exc, root)) is not None:
        return PercontrastError(message)
    try:
        full = shutil.disk_usage(root).free < (1 << 20)
    except OSError:
        full = False
    if full:
        message = filesystem_message(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root)))
        return PercontrastError(f"{message} ({type(exc).__name__}: {first_line(exc)})")
    return None


def make_entry(stage: str):
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from percontrast_cli.cli.stages import STAGES, prepare
    from percontrast_cli.cli.worker import WORKER_ENV, launch

    def entry(cfg):
        try:
            # a consumer runs on its input's recorded settings (eval checkpoint=X, inspect estimate=X)
            cfg = prepare(stage, cfg, list(HydraConfig.get().overrides.task))
            if cfg.distributed.name != "none" and WORKER_ENV not in os.environ:
                return launch(stage, cfg, HydraConfig.get().runtime.output_dir)
            return STAGES[stage](cfg)
        except PercontrastError as exc:
            if not in_multirun():
                fail(str(exc), getattr(exc, "exit_code", 2))  # a relayed worker failure keeps its code
            record_failure(exc)
        except Exception as exc:
            if (fault := filesystem_fault(exc, cfg)) is not None:
                if not in_multirun():
                    fail(str(fault))
                record_failure(fault)
                return None
            if not in_multirun():
                raise
            record_failure(exc)

    entry.__name__ = f"percontrast_{stage}"
    return hydra.main(config_path=CONFIG_PATH, config_name="config", version_base="1.3")(entry)


def report_failures() -> None:
    """After a sweep: which jobs failed and why, then a non-zero exit."""
    if not FAILURES:
        return
    print(f"percontrast: {len(FAILURES)} job(s) of the sweep failed:", file=sys.stderr)
    for entry in FAILURES:
        print(f"  #{entry['job']} {entry['overrides']}: {entry['reason']} ({entry['dir']})", file=sys.stderr)
    print(f"  summary: {FAILURES[0]['summary']}", file=sys.stderr)
    sys.exit(1)


def run_stage(stage: str, rest: list[str]) -> None:
    parser = hydra_parser()
    overrides, flags = split_command_line(rest, parser)
    args = parser.parse_args([*overrides, *flags])  # argparse errors: one line (hydra_parser)
    only_shows = args.help or args.hydra_help or args.info or args.shell_completion
    extra: list[str] = []
    if not only_shows and not args.experimental_rerun:
        configs = validate_overrides(overrides, args)
        if not args.cfg:  # printing the config writes nothing
            extra = check_outputs(configs, overrides)
            paths = configs[0].paths
            if home := environment.keep_writes_inside(str(paths.root), str(paths.cache)):
                note(f"HOME is not set: caches go under {home}")
    # Overrides first, then flags: an optional flag value (`--info [WHAT]`) never swallows an override.
    sys.argv = [f"percontrast-{stage}", *overrides, *extra, *flags]
    make_entry(stage)()
    report_failures()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE.format(groups=config_groups()))
        return
    if argv[0] in ("-V", "--version"):
        print(version())
        return
    stage, rest = argv[0], argv[1:]
    if stage in QUICK_COMMANDS:  # no Hydra job: they read and never write (`ls`, `env`: no torch either)
        try:
            return QUICK_COMMANDS[stage](rest)
        except PercontrastError as exc:
            fail(str(exc))
    if stage not in STAGE_NAMES:
        guess = did_you_mean(stage, STAGE_NAMES + tuple(QUICK_COMMANDS))
        hint = f" (did you mean {guess!r}?)" if guess else ""
        fail(
            f"unknown stage {stage!r}{hint}; choose one of: {', '.join(STAGE_NAMES + tuple(QUICK_COMMANDS))} "
            "(see percontrast --help)"
        )
    import logging

    logging.raiseExceptions = False  # a log file on a full disk must not print a traceback per message
    interrupts.install()
    environment.drop_empty_settings()  # `PERCONTRAST_OUTPUTS=` is the default, not the filesystem root
    try:
        run_stage(stage, rest)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (interrupts.Terminated): cleanups have run
        print(f"percontrast: {interrupts.message()}", file=sys.stderr)
        sys.exit(interrupts.exit_code(exc))


if __name__ == "__main__":
    main()
