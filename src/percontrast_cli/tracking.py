"""Experiment trackers: a no-op one and wandb (offline by default), behind one interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


class NullTracker:
    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def log_html(self, name: str, page: str) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbTracker(NullTracker):
    def __init__(self, cfg, tracker_cfg, run_dir: str):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=tracker_cfg.project,
            group=tracker_cfg.group or sweep_group(),
            mode=tracker_cfg.mode,
            dir=run_dir,
            config=OmegaConf.to_container(cfg, resolve=True),
            reinit="finish_previous",
        )

    def log(self, metrics, step=None):
        self.run.log(metrics, step=step)

    def summary(self, metrics):
        self.run.summary.update(metrics)

    def log_html(self, name, page):
        self.run.log({name: self.wandb.Html(page)})

    def finish(self):
        self.run.finish()


def sweep_group() -> str | None:
    """Jobs of one Hydra multirun share a group named after the sweep directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    return f"sweep-{sweep_dir.parent.name}-{sweep_dir.name}"


def make_tracker(cfg, run_dir: str) -> NullTracker:
    from percontrast_cli.distributed import is_main

    if cfg.tracker.name == "wandb" and is_main():  # one run per job: rank 0 logs
        return WandbTracker(cfg, cfg.tracker, run_dir)
    return NullTracker()
