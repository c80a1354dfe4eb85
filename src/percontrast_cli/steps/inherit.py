"""Consumers read their inputs' settings: an artifact's manifest is the source of truth for what it was
built with. `eval checkpoint=X` and `inspect estimate=X` take the task, its data, the prompt and the length
settings from X's recorded config unless the command line sets them; an override that makes the input
unusable is one line naming the setting and both values. A cross-task eval (`task=<other>`) is the explicit,
recorded exception, and `experiment=<preset>` re-states the whole setup (nothing is inherited)."""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.runtime.progress import say
from percontrast_cli.store.artifacts import Artifact

INHERITED = (
    "task",
    "data",
    "prompt",
    "retrieval",
    "model.max_length",
    "model.chat_template",
    "estimator.counterfactual",
)
# Settings whose value must equal the input's for its scores to apply (an estimate's training data).
MUST_MATCH = {"estimate": ("task", "data")}
# What an estimate's scores are, beyond its data and tokenizer (checked where they are loaded): the prompt
# they were teacher-forced under and the counterfactual profile P'. `train estimate=X` weights its tokens
# with X's scores, so a run under other settings would train another method than the one it records.
DEFINES_ESTIMATE = (
    "prompt",
    "retrieval",
    "task.longlamp_connector",
    "model.max_length",
    "model.chat_template",
    "estimator.counterfactual",
)


def parsed(overrides: list[str]) -> list[tuple[str, object]]:
    """(key, value) of the command line's overrides, Hydra's own overrides left out."""
    out = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if not override.is_hydra_override() and not override.is_sweep_override():
            out.append((override.key_or_group, override.value()))
    return out


def under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def leaves(node, prefix: str) -> dict:
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        out.update(leaves(value, f"{prefix}.{key}"))
    return out


def inherit(cfg, artifact: Artifact, overrides: list[str]):
    """`cfg` with the artifact's recorded settings for every INHERITED key the command line does not set."""
    recorded = artifact.manifest.get("run_config")
    given = parsed(overrides)
    if not recorded:
        return cfg
    if any(key == "experiment" for key, _ in given):  # the preset's setup, said so, and still checked
        before = (recorded.get("task") or {}).get("name")
        if before is not None and before != cfg.task.name:
            say(
                f"[yellow]note[/yellow]: experiment= re-states the setup: a cross-task eval on task="
                f"{cfg.task.name} of {artifact.kind} {artifact.id} (built on task={before})"
            )
        check_usable(cfg, artifact, given)
        return cfg
    cfg = cfg.copy()
    with open_dict(cfg):
        for key in INHERITED:
            if any(k == key for k, _ in given):  # `task=persona_review`: the user's choice (cross-task eval)
                continue
            value = OmegaConf.select(OmegaConf.create(recorded), key)
            if value is not None or key in ("model.max_length",):
                OmegaConf.update(cfg, key, value, merge=False)
        for (
            key,
            value,
        ) in given:  # re-apply the user's settings inside an inherited group (task.n_test_users=3)
            if any(under(key, inherited) and key != inherited for inherited in INHERITED):
                OmegaConf.update(cfg, key, value, merge=False)
    check_usable(cfg, artifact, given)
    return cfg


def check_usable(cfg, artifact: Artifact, given) -> None:
    """An override that cannot work with this input stops here, naming the setting and both values."""
    recorded = artifact.manifest["run_config"]
    current = OmegaConf.to_container(cfg, resolve=True)
    trained_length = recorded.get("model", {}).get("max_length")
    if trained_length is not None and cfg.model.max_length < trained_length and artifact.kind == "checkpoint":
        raise PercontrastError(
            f"model.max_length={cfg.model.max_length} is shorter than checkpoint {artifact.id} was trained "
            f"with ({trained_length}): prompts would be cut where training never cut them (drop the override)"
        )
    for group in MUST_MATCH.get(artifact.kind, ()):
        before, now = leaves(recorded.get(group), group), leaves(current.get(group), group)
        for key in sorted(set(before) | set(now)):
            if before.get(key) != now.get(key) and any(under(key, k) or under(k, key) for k, _ in given):
                raise PercontrastError(
                    f"{key}={now.get(key)!r}, but {artifact.kind} {artifact.id} was computed with "
                    f"{key}={before.get(key)!r}: its scores fit only its own training data "
                    "(drop the override)"
                )


def check_estimate_fits(cfg, artifact: Artifact) -> None:
    """`train estimate=X`: the run's prompt and counterfactual settings must be X's (one line naming the
    first that differs, both values, and the two ways out)."""
    recorded = OmegaConf.create(artifact.manifest.get("run_config") or {})
    if not recorded:
        return
    for key in DEFINES_ESTIMATE:
        if (found := OmegaConf.select(recorded, key, default=ABSENT)) is ABSENT:
            continue  # recorded by a version without this setting: nothing to compare
        before = leaves(container(found), key)
        now = leaves(container(OmegaConf.select(cfg, key)), key)
        for leaf in sorted(set(before) | set(now)):
            if before.get(leaf) != now.get(leaf):
                raise PercontrastError(
                    f"{leaf}={now.get(leaf)!r}, but estimate {artifact.id} was scored with "
                    f"{leaf}={before.get(leaf)!r}: its weights belong to that setting (set {leaf}="
                    f"{before.get(leaf)!r}, or let the run re-estimate without estimate=)"
                )


ABSENT = object()


def container(node):
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
