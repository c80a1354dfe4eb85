"""The one stage-artifact helper: identity -> lock/claim -> find or compute -> publish -> job record.

Every step that makes an artifact goes through `produce`, so each holds only its computation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf

from percontrast_cli.runtime.distributed import is_main
from percontrast_cli.runtime.progress import say
from percontrast_cli.steps import costs
from percontrast_cli.store.artifacts import JOB_ARTIFACTS, Artifact
from percontrast_cli.store.identity import Identity

# A worker process of a multi-process run has no Hydra; its launcher names the job directory here.
JOB_DIR_ENV = "PERCONTRAST_JOB_DIR"

# build(tmp_dir, manifest) writes the payload into tmp_dir, may add manifest entries, and returns a note
# for the "built" line (or None).
Build = Callable[[Path, dict], str | None]


def job_dir() -> Path | None:
    """The job's own directory (Hydra's output dir, or the launcher's for a worker); None outside a job."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    # Hydra's config can be set without a job (an in-process `--cfg` or compose): then there is no job dir.
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    output_dir = OmegaConf.select(hydra_cfg, "runtime.output_dir") if hydra_cfg is not None else None
    if output_dir:
        return Path(output_dir)
    return Path(os.environ[JOB_DIR_ENV]) if os.environ.get(JOB_DIR_ENV) else None


def record(role: str, artifact_id: str | dict) -> None:
    """Add `role: id` to the job's artifacts.json (written as each artifact is ready, so a failed job still
    names what it finished): `report` finds a sweep's evals, and scripts its checkpoints, in the sweep.
    ``curve`` maps optimiser steps to eval ids (eval.at_steps)."""
    directory = job_dir()
    if directory is None or not is_main():
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / JOB_ARTIFACTS
    ids = json.loads(path.read_text()) if path.is_file() else {}
    ids[role] = artifact_id
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ids, indent=1))
    tmp.replace(path)


def produce(
    ctx,
    identity: Identity,
    build: Build,
    *,
    role: str | None = None,
    done: str = "built",
    extra: dict | None = None,
) -> Artifact:
    """The artifact `identity` names: reused when it exists (another process building it is waited for),
    otherwise built by `build` into a temp dir and published atomically. ``extra``: manifest entries that
    are recorded but are not part of the id; every manifest also records the job's resolved config
    (`run_config`: what consumers inherit, see steps.inherit, and what `report` reads)."""
    kind, artifact_id = identity.kind, identity.id
    found = ctx.store.claim(kind, artifact_id)
    if found is not None:
        say(f"[dim]skip[/dim] {kind} {artifact_id} exists ({found.path})")
    else:
        # a copy: `build` may add inputs to the manifest (e.g. the tokenizer) without changing the identity
        inputs = dict(identity.inputs)
        recorded = {"run_config": OmegaConf.to_container(ctx.cfg, resolve=True), **(extra or {})}
        with ctx.store.create(kind, artifact_id, identity.config, inputs, code=identity.code, **recorded) as (
            tmp,
            manifest,
        ):
            if is_main():
                costs.record_startup(ctx)
            with costs.measured(ctx.device) as spent:
                note = build(tmp, manifest)
            # what it cost: recorded, never part of the id; `plan` estimates the next one from it
            # (a build that names no work counts as one unit of work of its kind: a base model's build)
            work = manifest.pop("work", None) or [costs.work_entry(kind, 1, spent["seconds"])]
            manifest["timing"] = costs.timing(spent, work)
        say(f"[green]{done}[/green] {kind} {artifact_id}{note or ''}")
        if is_main():
            costs.record(ctx, kind, artifact_id, manifest["timing"])
        found = ctx.store.find(kind, artifact_id)
    if role is not None:
        record(role, artifact_id)
    return found


def write_jsonl(path: Path, rows) -> None:
    """A payload file of one JSON object per line (per-example rows, ALOE conversations and scores)."""
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
