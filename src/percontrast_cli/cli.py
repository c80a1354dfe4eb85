"""`percontrast <stage> [hydra overrides]`: dispatch a stage to its Hydra entry point.

Hydra has no subcommands, so the stage is taken off argv first; overrides are composed and validated up
front (every combination of a -m sweep) so a typo is one line and exit code 2, never a traceback.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import traceback
from importlib import resources
from pathlib import Path

import hydra
from filelock import FileLock
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode

from percontrast_cli.errors import PercontrastError
from percontrast_cli.stages import STAGES, prepare
from percontrast_cli.validation import validate_config
from percontrast_cli.worker import WORKER_ENV, launch

USAGE = """usage: percontrast <stage> [-m] [key=value ...] [hydra flags]

stages:
  estimate   PerContrast scores for the training split (artifact kind: estimate)
  train      CE or PerCE training, with bootstrap refresh (artifact kind: checkpoint)
  eval       generation, ROUGE, personal-token metrics, estimator AUROC (needs checkpoint=<id|path|latest>)
  run        estimate -> train -> eval in one go
  report     comparison table (terminal, Markdown, CSV) + plots over eval artifacts (report.evals=...)
  inspect    token heatmap of PerContrast scores (estimate=<id> example=<n>), terminal + HTML

config groups (pick with group=option, e.g. loss=ce):
{groups}
examples:
  percontrast run                                   # tiny model, synthetic_email, PerCE
  percontrast run -m loss=ce,perce seed=0,1,2       # a sweep; finished jobs are skipped on rerun
  percontrast eval checkpoint=latest
  percontrast train --cfg job                       # print the composed config
"""


def config_groups() -> str:
    root = resources.files("percontrast_cli") / "conf"
    lines = []
    for group in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        options = sorted(p.name[:-5] for p in (root / group).iterdir() if p.name.endswith(".yaml"))
        if options:
            lines.append(f"  {group:<11}{', '.join(options)}")
    return "\n".join(lines) + "\n"


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


def validate_overrides(overrides: list[str]) -> None:
    """Compose the config for every point of the sweep and check its values."""
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
        choices.append([f"{prefix}{key}={v}" if prefix != "~" else f"~{key}" for v in values])
    with initialize_config_module("percontrast_cli.conf", version_base="1.3"):
        for combination in itertools.islice(itertools.product(*choices), 256):
            try:
                cfg = compose("config", overrides=list(combination))
                validate_config(cfg)
            except PercontrastError as exc:
                fail(str(exc))
            except Exception as exc:
                fail(f"bad override: {first_line(exc)}")


FAILURES: list[dict] = []  # jobs of this process's sweep that failed
SWEEP_SUMMARY = "failures.jsonl"


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(exc: BaseException) -> None:
    """One failed job of a sweep: its traceback in the job's dir, one line in the sweep's summary file
    (appended under a file lock: Slurm jobs may finish at once), and a line on stderr; the sweep goes on."""
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "error.txt").write_text("".join(traceback.format_exception(exc)))
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
    with FileLock(f"{summary}.lock"):
        with open(summary, "a") as f:
            f.write(json.dumps(entry) + "\n")
    entry["summary"] = str(summary)
    FAILURES.append(entry)
    print(f"percontrast: job #{entry['job']} ({entry['overrides']}) failed: {reason}", file=sys.stderr)


def make_entry(stage: str):
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
            if not in_multirun():
                raise
            record_failure(exc)

    entry.__name__ = f"percontrast_{stage}"
    return hydra.main(config_path="conf", config_name="config", version_base="1.3")(entry)


def report_failures() -> None:
    """After a sweep: which jobs failed and why, then a non-zero exit."""
    if not FAILURES:
        return
    print(f"percontrast: {len(FAILURES)} job(s) of the sweep failed:", file=sys.stderr)
    for entry in FAILURES:
        print(f"  #{entry['job']} {entry['overrides']}: {entry['reason']} ({entry['dir']})", file=sys.stderr)
    print(f"  summary: {FAILURES[0]['summary']}", file=sys.stderr)
    sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE.format(groups=config_groups()))
        return
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        fail(f"unknown stage {stage!r}; choose one of: {', '.join(STAGES)} (see percontrast --help)")
    if not any(flag in rest for flag in ("--help", "-h", "--hydra-help", "--info")):
        validate_overrides([a for a in rest if not a.startswith("-")])
    sys.argv = [f"percontrast-{stage}", *rest]
    make_entry(stage)()
    report_failures()


if __name__ == "__main__":
    main()
