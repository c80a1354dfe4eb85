"""Experiment trackers: a no-op one and wandb (offline by default), behind one interface.

A wandb run is one job. Its name is the job's swept settings (``loss=perce seed=1``), its group the sweep. Its
metrics come from the artifacts the job used, read from their manifests at the end of the stage
(``record_artifacts``), so a job whose stages were all reused (a finished sweep rerun with ``tracker=wandb``)
logs the same numbers as the job that computed them; training curves are logged live while a training runs,
and from the checkpoint's ``log_history.json`` when it was reused. Keys never contain spaces
(``train_perce/loss``). Every run leaves ``percontrast_summary.json`` beside its wandb files: its name, the
sync command and every metric's final value, readable without wandb (an offline run has no other summary).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

SUMMARY_FILE = "percontrast_summary.json"


def clean_key(key: str) -> str:
    """A metric key without whitespace (W&B panels and filters treat spaces badly): ``train perce/loss`` ->
    ``train_perce/loss``."""
    return re.sub(r"\s+", "_", key.strip())


def training_prefix(tag: str) -> str:
    """The key prefix of a training run's curves, the same live (train.LogHistory) and from a manifest."""
    return clean_key(f"train {tag}")


class NullTracker:
    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def log_html(self, name: str, page: str) -> None:
        pass

    def record_artifacts(self, artifacts) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbTracker(NullTracker):
    def __init__(self, cfg, tracker_cfg, run_dir: str):
        import wandb

        self.wandb = wandb
        self.name = run_name(cfg)
        self.values: dict[str, Any] = {}  # every key's latest value: the readable summary
        self.live: set[str] = set()  # key prefixes logged while this job ran (training curves)
        self.stepped: set[str] = set()  # prefixes charted against their own `<prefix>/step`
        self.run = wandb.init(
            project=tracker_cfg.project,
            group=tracker_cfg.group or sweep_group(),
            name=self.name,
            mode=tracker_cfg.mode,
            dir=run_dir,
            config=OmegaConf.to_container(cfg, resolve=True),
            reinit="finish_previous",
            settings=wandb.Settings(silent=True),  # our one line at the end replaces wandb's banner
        )

    def log(self, metrics, step=None):
        metrics = {clean_key(k): v for k, v in metrics.items()}
        for key in metrics:
            prefix = key.split("/", 1)[0]
            if key == f"{prefix}/step" and prefix not in self.stepped:
                # a training curve: charted against its own optimiser step, not wandb's call counter
                self.run.define_metric(f"{prefix}/*", step_metric=key)
                self.stepped.add(prefix)
            self.live.add(prefix)
        self.values.update(metrics)
        self.run.log(metrics, step=step)

    def summary(self, metrics):
        metrics = {clean_key(k): v for k, v in metrics.items()}
        self.values.update(metrics)
        self.run.summary.update(metrics)

    def log_html(self, name, page):
        self.run.log({clean_key(name): self.wandb.Html(page)})

    def record_artifacts(self, artifacts) -> None:
        """The job's artifacts: their ids, their manifests' metrics (estimate, eval), and the training curve
        of a checkpoint this job did not train itself (reused: nothing was logged live)."""
        for artifact in artifacts:
            tag = artifact.manifest.get("tag")
            self.summary({f"artifacts/{artifact.kind}" + (f"_{tag}" if tag else ""): artifact.id})
            if artifact.kind in ("estimate", "eval"):
                metrics = artifact.manifest.get("metrics") or {}
                self.summary({f"{artifact.kind}/{k}": v for k, v in metrics.items()})
            history = artifact.path / "log_history.json"
            if (
                artifact.kind == "checkpoint"
                and tag
                and training_prefix(tag) not in self.live
                and history.is_file()
            ):
                prefix = training_prefix(tag)
                for entry in json.loads(history.read_text()):
                    numbers = {k: v for k, v in entry.items() if isinstance(v, int | float)}
                    if "step" in numbers:
                        self.log({f"{prefix}/{k}": v for k, v in numbers.items()})

    def finish(self):
        run_path = Path(self.run.dir).parent  # wandb/<mode>-run-<time>-<id>/files -> the run's directory
        offline = self.run.settings.mode == "offline"
        summary = {
            "name": self.name,
            "group": self.run.group,
            "project": self.run.project,
            "mode": self.run.settings.mode,
            "run_dir": str(run_path),
            "sync": f"wandb sync {run_path}" if offline else None,
            "metrics": dict(sorted(self.values.items())),
        }
        self.run.finish()
        if run_path.is_dir():
            (run_path / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, default=str) + "\n")
            from percontrast_cli.runtime.progress import say

            upload = f"; upload with `wandb sync {run_path}`" if offline else ""
            say(
                f"wandb run '{self.name}': {len(self.values)} metrics, summary in "
                f"{run_path / SUMMARY_FILE}{upload}"
            )


def swept_keys(argv: list[str]) -> set[str]:
    """The keys a Hydra multirun command line sweeps (``loss=ce,perce``, ``seed=range(3)``...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(
            [a for a in argv if "=" in a and not a.startswith("-")]
        )
    except Exception:  # not an override list (the command line of another launcher's process): no sweep known
        return set()
    return {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}


def run_name(cfg) -> str:
    """The job's swept settings (``loss=perce seed=1``); without a sweep, its command-line overrides; without
    those, its loss and task."""
    fallback = f"loss={cfg.loss.name} task={cfg.task.name}"
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return fallback
    where = ("hydra.", "paths.", "tracker")  # where things go, not what was run
    overrides = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(where)]
    swept = swept_keys(sys.argv[1:])
    chosen = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept] or overrides
    return " ".join(chosen) or fallback


def sweep_group() -> str | None:
    """Jobs of one Hydra multirun share a group named after the sweep directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    return f"sweep-{sweep_dir.parent.name}-{sweep_dir.name}"


def make_tracker(cfg, run_dir: str) -> NullTracker:
    from percontrast_cli.runtime.distributed import is_main

    if cfg.tracker.name == "wandb" and is_main():  # one run per job: rank 0 logs
        return WandbTracker(cfg, cfg.tracker, run_dir)
    return NullTracker()
