"""Scale-out: `percontrast <stage> distributed=ddp ...` starts its workers with `accelerate launch` on this
module, which runs the stage on the config the parent composed and validated (no `@hydra.main` in the
workers: each rank re-running Hydra would make its own output dir, race on `.hydra/` and choke on
`--local_rank`).

    percontrast train distributed=ddp distributed.num_processes=8 ...   # the parent: writes and launches
    python -m percontrast_cli.worker <stage> <resolved config.yaml>     # what each rank runs
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from percontrast_cli.errors import PercontrastError

WORKER_ENV = "PERCONTRAST_WORKER"


def backend(cfg) -> str:
    if cfg.distributed.backend != "auto":
        return cfg.distributed.backend
    import torch

    return "nccl" if cfg.device != "cpu" and torch.cuda.is_available() else "gloo"


def accelerate_config(cfg) -> dict:
    """The accelerate config file for this run: the option's `accelerate` block plus the process layout."""
    config = OmegaConf.to_container(cfg.distributed.accelerate, resolve=True)
    config.update(
        num_processes=cfg.distributed.num_processes,
        num_machines=cfg.distributed.num_machines,
        machine_rank=int(cfg.distributed.machine_rank),  # Slurm gives it as a string
        main_process_port=cfg.distributed.main_process_port,
    )
    if cfg.distributed.main_process_ip:
        config["main_process_ip"] = cfg.distributed.main_process_ip
    return config


def launch(stage: str, cfg, job_dir: str | Path) -> None:
    """Write the resolved config and the accelerate config into the job's directory, then start the
    workers; a failed worker is an error naming its log."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    resolved = job_dir / "resolved_config.yaml"
    resolved.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    accelerate_file = job_dir / "accelerate_config.yaml"
    accelerate_file.write_text(yaml.safe_dump(accelerate_config(cfg), sort_keys=False))
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_file),
        "-m", "percontrast_cli.worker", stage, str(resolved),
    ]  # fmt: skip
    env = {**os.environ, WORKER_ENV: "1"}
    result = subprocess.run(command, env=env)
    if result.returncode != 0:
        raise PercontrastError(
            f"{stage} with distributed={cfg.distributed.name}: a worker exited with code {result.returncode} "
            f"(config: {resolved})"
        )


def main(argv: list[str] | None = None) -> None:
    from accelerate import PartialState

    from percontrast_cli.distributed import is_main
    from percontrast_cli.stages import STAGES

    stage, path = (argv or sys.argv[1:])[:2]
    cfg = OmegaConf.load(path)
    PartialState(
        cpu=backend(cfg) == "gloo", backend=backend(cfg)
    )  # the process group, from the launcher's env
    try:
        STAGES[stage](cfg)
    except PercontrastError as exc:
        if is_main():
            print(f"percontrast: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C reaches every rank; the parent CLI prints the one line
        sys.exit(130)


if __name__ == "__main__":
    main()
