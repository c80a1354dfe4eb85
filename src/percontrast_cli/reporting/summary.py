"""What a run or a sweep leaves, printed on stdout when it ends: its directory and the exact `report` command
that compares its evals (a Hydra callback, so it runs once in the launching process, whatever the launcher).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from hydra.experimental.callback import Callback
from rich.markup import escape

from percontrast_cli.runtime.progress import show
from percontrast_cli.store.artifacts import JOB_ARTIFACTS


def report_command(evals_dir: Path, config) -> str:
    """`percontrast report` over a run or sweep dir, with the command line's `paths.*` overrides (the report
    must read the same artifact store)."""
    overrides = [o for o in config.hydra.overrides.task if o.startswith("paths.")]
    words = ["percontrast", "report", f"report.evals=[{evals_dir}]", *overrides]
    return " ".join(shlex.quote(w) for w in words)


def jobs_with_evals(job_files: list[Path]) -> int:
    count = 0
    for path in job_files:
        try:
            count += "eval" in json.loads(path.read_text())
        except (OSError, ValueError, TypeError):  # a job that failed while writing it, or a broken file
            continue
    return count


class RunSummary(Callback):
    """After a sweep: the sweep dir, how many jobs left an eval, and the `report` command. After a single
    `run` / `eval`: its run dir and the same command (only those stages write artifacts.json; `inspect`,
    `report` and the rest keep stdout to their own output)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir).absolute()
        evals = jobs_with_evals(sorted(sweep.glob(f"*/{JOB_ARTIFACTS}")))
        show(escape(f"sweep dir: {sweep}"))
        if evals:
            show(escape(f"compare its {evals} evals: {report_command(sweep, config)}"))

    def on_run_end(self, config, **kwargs) -> None:
        run_dir = Path(config.hydra.runtime.output_dir).absolute()
        if not jobs_with_evals([run_dir / JOB_ARTIFACTS]):
            return
        log_file = f"{config.hydra.job.name}.log"
        show(escape(f"run dir: {run_dir} ({JOB_ARTIFACTS}: the artifact ids; {log_file}: the log)"))
        show(escape(f"report: {report_command(run_dir, config)}"))
