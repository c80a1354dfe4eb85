"""Scale-out: `percontrast <stage> distributed=ddp ...` starts its workers with `accelerate launch` on this
module, which runs the stage on the config the parent composed and validated (no `@hydra.main` in the
workers: each rank re-running Hydra would make its own output dir, race on `.hydra/` and choke on
`--local_rank`).

    percontrast train distributed=ddp distributed.num_processes=8 ...     # the parent: writes and launches
    python -m percontrast_cli.cli.worker --agent <accelerate config> <stage> <resolved config.yaml>
        # accelerate's launcher (torchrun), quiet: the parent reports a failed worker in one line
    python -m percontrast_cli.cli.worker <stage> <resolved config.yaml>      # what each rank runs

The parent hands the workers its Hydra job directory and job log (environment variables): rank 0 writes the
job record (artifacts.json, for `report`), the tracker's files and the progress lines there, as one process
does. A failing rank leaves its error in the job directory (worker_errors/) and the parent raises it.
Multi-machine runs (Slurm: one task per node, each launching its node's workers) write one accelerate config
per machine.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from percontrast_cli.runtime import orphans
from percontrast_cli.runtime.distributed import CPU_FSDP_ENV, backend, per_machine
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.steps.produce import JOB_DIR_ENV, job_dir  # the job dir the workers record into
from percontrast_cli.store.artifacts import ArtifactStore

WORKER_ENV = "PERCONTRAST_WORKER"
JOB_LOG_ENV = "PERCONTRAST_JOB_LOG"  # the parent's job log file (Hydra's job_logging file handler)
ERRORS = "worker_errors"  # under the job directory: one JSON report per failed rank
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # as conf/hydra/job_logging
# Stages whose work is shared out over the ranks; the others (report, inspect) run in the parent alone.
PARALLEL_STAGES = ("estimate", "train", "eval", "run")

# `${percontrast.per_machine:${distributed.num_processes},${distributed.num_machines}}` in conf/hydra/launcher
OmegaConf.register_new_resolver("percontrast.per_machine", per_machine, replace=True)


class WorkerFailed(PercontrastError):
    """A worker's failure, relayed by the parent: its message, and the exit code one process would have had
    (2 for a percontrast error, 1 for any other exception)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def accelerate_config(cfg) -> dict:
    """The accelerate config file for this machine: the option's `accelerate` block plus the process layout
    (num_processes counts all machines' processes: accelerate starts num_processes / num_machines here)."""
    config = OmegaConf.to_container(cfg.distributed.accelerate, resolve=True)
    per_machine(cfg.distributed.num_processes, cfg.distributed.num_machines)  # a clear error if uneven
    config.update(
        num_processes=cfg.distributed.num_processes,
        num_machines=cfg.distributed.num_machines,
        machine_rank=int(cfg.distributed.machine_rank),  # Slurm gives it as a string
        main_process_port=cfg.distributed.main_process_port,
    )
    if cfg.distributed.num_machines > 1:
        config["main_process_ip"] = main_process_ip(cfg)
    elif cfg.distributed.main_process_ip:
        config["main_process_ip"] = cfg.distributed.main_process_ip
    return config


def main_process_ip(cfg) -> str:
    """The main machine's address: distributed.main_process_ip, or under Slurm the job's first node."""
    if cfg.distributed.main_process_ip:
        return str(cfg.distributed.main_process_ip)
    if os.environ.get("SLURM_JOB_NODELIST"):
        import submitit

        return submitit.JobEnvironment().hostnames[0]
    raise PercontrastError(
        f"distributed.num_machines={cfg.distributed.num_machines} needs distributed.main_process_ip (the "
        "main machine's address; under Slurm it defaults to the job's first node)"
    )


@dataclass
class LaunchPlan:
    """What one machine's parent writes and runs."""

    files: dict[Path, str] = field(default_factory=dict)  # path -> content
    command: list[str] = field(default_factory=list)
    machine_rank: int = 0


def launch_plan(stage: str, cfg, job_dir: str | Path) -> LaunchPlan:
    """The files and the command that start this machine's workers. With several machines (one Slurm task
    per node, all in one job directory), each machine writes its own files, named by its rank: one shared
    accelerate config would hold whichever machine rank was written last."""
    job_dir = Path(job_dir)
    rank = int(cfg.distributed.machine_rank)
    suffix = f".machine{rank}" if cfg.distributed.num_machines > 1 else ""
    resolved = job_dir / f"resolved_config{suffix}.yaml"
    accelerate_file = job_dir / f"accelerate_config{suffix}.yaml"
    agent = ["--agent", str(accelerate_file), stage, str(resolved)]
    command = [sys.executable, "-m", "percontrast_cli.cli.worker", *agent]
    files = {
        resolved: OmegaConf.to_yaml(cfg, resolve=True),
        accelerate_file: yaml.safe_dump(accelerate_config(cfg), sort_keys=False),
    }
    return LaunchPlan(files, command, rank)


def launch(stage: str, cfg, job_dir: str | Path):
    """Write this machine's resolved config and accelerate config into the job's directory, then start the
    workers; a failed worker is one error with that worker's message. Stages with nothing to share out
    (report, inspect) run here, in this one process."""
    if stage not in PARALLEL_STAGES:
        from percontrast_cli.cli.stages import STAGES

        return STAGES[stage](cfg)
    job_dir = Path(job_dir)
    plan = launch_plan(stage, cfg, job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    for path, content in plan.files.items():
        path.write_text(content)
    errors = job_dir / ERRORS
    for stale in errors.glob("*.json"):  # from an earlier launch in the same directory
        stale.unlink()
    env = {**os.environ, WORKER_ENV: "1", JOB_DIR_ENV: str(job_dir.resolve()), **orphans.hand_down()}
    if log_file := job_log_file():
        env[JOB_LOG_ENV] = log_file
    result = subprocess.run(plan.command, env=env)
    if result.returncode != 0:
        # a rank the launcher had to kill mid-write could not remove its temp dir: nothing half-written stays
        ArtifactStore(cfg.paths.artifacts).clean_temporaries()
        raise worker_failure(stage, cfg, errors, result.returncode)
    return None


def job_log_file() -> str | None:
    """The file this (Hydra job) process logs to: the workers' rank 0 appends its progress lines there."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None


def worker_failure(stage: str, cfg, errors: Path, returncode: int) -> WorkerFailed:
    """The first failed rank's report (failures that stop the other ranks leave none of their own)."""
    reports = []
    for path in errors.glob("rank*.json"):
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    where = f"{stage} with distributed={cfg.distributed.name}"
    if not reports:
        why = "without an error report (killed, out of memory?)"
        return WorkerFailed(f"{where}: a worker exited with code {returncode} {why}", 1)
    first = min(reports, key=lambda r: (r["time"], r["rank"]))
    where = f"rank {first['rank']} of {first['world']}; traceback: {first['traceback_file']}"
    return WorkerFailed(f"{first['message']} ({where})", first["exit_code"])


def report_error(exc: BaseException, rank: int, world: int) -> int:
    """Record a worker's failure for the parent (or print it when run by hand); the exit code to end with."""
    import time

    code = 2 if isinstance(exc, PercontrastError) else 1
    message = str(exc) if isinstance(exc, PercontrastError) else f"{type(exc).__name__}: {exc}"
    directory = job_dir()
    if directory is None:
        print(f"percontrast: error: rank {rank}: {message}", file=sys.stderr)
        return code
    errors = directory / ERRORS
    errors.mkdir(parents=True, exist_ok=True)
    trace = errors / f"rank{rank}.traceback.txt"
    trace.write_text("".join(traceback.format_exception(exc)))
    report = {
        "rank": rank,
        "world": world,
        "message": message,
        "exit_code": code,
        "time": time.time(),
        "traceback_file": str(trace),
    }
    tmp = errors / f".rank{rank}.json.tmp"
    tmp.write_text(json.dumps(report))
    tmp.replace(errors / f"rank{rank}.json")  # whole or absent: the parent may read it at any time
    return code


def log_to_job_file(rank: int) -> None:
    """Rank 0 appends to the parent's job log, as a single process's Hydra logging does (the `percontrast`
    logger's messages and progress lines; warnings still reach the terminal)."""
    path = os.environ.get(JOB_LOG_ENV)
    if rank != 0 or not path:
        return
    root = logging.getLogger()
    file_handler = logging.FileHandler(path)  # append: the parent has written its own lines already
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(file_handler)
    root.addHandler(console)
    root.setLevel(logging.INFO)


def init_process_group(cfg) -> None:
    """The process group from the launcher's environment (accelerate's shared state, which the Trainer
    reuses), with FSDP made to work on CPU.

    accelerate (1.16) applies its FSDP plugin only to accelerator devices: a CPU (gloo) launch is MULTI_CPU,
    and `distributed=fsdp` would silently train plain DDP. torch itself shards on a CPU mesh (FSDP 2's
    fully_shard), so on CPU the shared state is marked as a multi-device one and the Trainer told to keep it
    (train.training_arguments reads CPU_FSDP_ENV): the FSDP path then runs on CPU as it does on GPUs."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    gloo = backend(cfg) == "gloo"
    # An explicit timeout: a collective that waits longer (a peer that hangs) ends the run with an error.
    timeout = timedelta(seconds=float(cfg.distributed.get("timeout_s", 1800)))
    state = PartialState(cpu=gloo, backend=backend(cfg), timeout=timeout)
    if gloo and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        state._shared_state["distributed_type"] = DistributedType.MULTI_GPU
        os.environ[CPU_FSDP_ENV] = "1"


def run_worker(stage: str, path: str) -> None:
    from percontrast_cli.cli.stages import STAGES
    from percontrast_cli.runtime.distributed import rank_and_world

    orphans.die_with_parent()  # the agent gone (its launcher killed): this rank goes too, publishing nothing
    cfg = OmegaConf.load(path)
    init_process_group(cfg)
    rank, world = rank_and_world()
    log_to_job_file(rank)
    try:
        if stage in PARALLEL_STAGES or rank == 0:  # report / inspect: one writer
            STAGES[stage](cfg)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the parent's one error line
        code = report_error(exc, rank, world)
        if world > 1:
            # Out now, without the interpreter's teardown (it may wait on a process group the other ranks
            # still hold): the launcher sees this rank end and stops the others, who never learn of it
            # through a collective that could hang.
            sys.stdout.flush()
            sys.stderr.flush()
            logging.shutdown()
            os._exit(code)
        sys.exit(code)


def run_agent(accelerate_file: str, stage: str, path: str) -> None:
    """accelerate's launcher (torchrun's elastic agent) without its failure report: that multi-screen
    traceback ends up under the one-line error the parent raises from the failed rank's own report."""
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    orphans.die_with_parent()  # `percontrast` killed (kill -9): the agent, and so its workers, end too
    os.environ.update(orphans.hand_down())  # the workers watch this agent
    noisy = ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher")
    for name in list(logging.root.manager.loggerDict):  # "failed (exitcode: 1)", "Sending SIGTERM", banners
        if name.startswith(noisy):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    args = launch_command_parser().parse_args(
        ["--config_file", accelerate_file, "-m", "percontrast_cli.cli.worker", stage, path]
    )
    try:
        launch_command(args)
    except ChildFailedError as exc:
        directory = job_dir()
        if directory is None or not any((directory / ERRORS).glob("rank*.json")):
            print(str(exc), file=sys.stderr)  # no report of ours (a crash, a kill): torch's own account
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--agent":
        run_agent(*argv[1:4])
    else:
        run_worker(*argv[:2])


if __name__ == "__main__":
    main()
