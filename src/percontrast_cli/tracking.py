"""Experiment trackers: a no-op one and wandb (offline by default), behind one interface."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


class NullTracker:
    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbTracker(NullTracker):
    def __init__(self, cfg, tracker_cfg, run_dir: str):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=tracker_cfg.project,
            group=tracker_cfg.group,
            mode=tracker_cfg.mode,
            dir=run_dir,
            config=OmegaConf.to_container(cfg, resolve=True),
            reinit="finish_previous",
        )

    def log(self, metrics, step=None):
        self.run.log(metrics, step=step)

    def summary(self, metrics):
        self.run.summary.update(metrics)

    def finish(self):
        self.run.finish()


def make_tracker(cfg, run_dir: str) -> NullTracker:
    if cfg.tracker.name == "wandb":
        return WandbTracker(cfg, cfg.tracker, run_dir)
    return NullTracker()
