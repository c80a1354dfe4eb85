"""Models named by one option value, for the side roles (the LLM judge, ALOE's user simulator): a model
option (``smollm2``, ``qwen``... as ``model=`` takes them), a checkpoint or model artifact (id or path), a
local model directory, or a hub id. Resolving is cheap (no weights loaded) and gives the identity that the
artifacts using the model record."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

from percontrast_cli.modeling.load import (
    converted_smollm2,
    hub_revision,
    load_model_and_tokenizer,
    weights_fingerprint,
)
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.store.artifacts import Artifact, ArtifactStore, load_artifact
from percontrast_cli.store.fingerprint import fingerprint

NONE = ("none", "null", "", None)


@dataclass(frozen=True)
class NamedModel:
    spec: str  # as given on the command line
    location: str  # a local directory or a hub id
    revision: str | None  # hub commit (None for local directories)
    identity: str  # fingerprint of the weights: what artifacts record

    def load(self, dtype, device):
        model, tokenizer = load_model_and_tokenizer(self.location, revision=self.revision, dtype=dtype)
        return model.to(device).eval(), tokenizer


def model_options() -> list[str]:
    root = resources.files("percontrast_cli") / "conf" / "model"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def artifact_weights(artifact: Artifact) -> tuple[str, str | None]:
    """Where a model/checkpoint artifact's weights are: its own ``model/`` payload, or the pretrained source
    it points at (pinned to the revision it was registered with)."""
    if (artifact.path / "model").is_dir():
        return str(artifact.path / "model"), None
    source = json.loads((artifact.path / "source.json").read_text())
    return source["name_or_path"], source.get("revision")


def resolve_named(spec: str, option: str, store: ArtifactStore, cache_root: str | Path) -> NamedModel:
    """The model ``option=spec`` names (``option`` only words the errors)."""
    spec = str(spec)
    if spec in model_options():
        model_cfg = OmegaConf.load(
            str(resources.files("percontrast_cli") / "conf" / "model" / f"{spec}.yaml")
        )
        if model_cfg.source == "tiny":
            raise PercontrastError(
                f"{option}=tiny: the tiny model is built per task and untrained; name a tiny checkpoint by "
                "artifact id or path instead"
            )
        if model_cfg.source == "smollm2":
            location = converted_smollm2(cache_root)
            return NamedModel(spec, str(location), None, weights_fingerprint(location, None, cache_root))
        return hub_model(spec, model_cfg.name_or_path, model_cfg.get("revision"), cache_root)
    for kind in ("checkpoint", "model"):
        if "/" not in spec and (found := store.find(kind, spec)) is not None:
            return from_artifact(spec, found)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "manifest.json").is_file():
            return from_artifact(spec, load_artifact(path))
        return NamedModel(spec, str(path), None, weights_fingerprint(path, None, cache_root))
    if spec.startswith((".", "/", "~")):
        raise PercontrastError(f"{option}={spec}: no such directory")
    return hub_model(spec, spec, None, cache_root)


def from_artifact(spec: str, artifact: Artifact) -> NamedModel:
    if artifact.kind not in ("checkpoint", "model"):
        raise PercontrastError(f"{spec} is a {artifact.kind} artifact, not a checkpoint or model")
    location, revision = artifact_weights(artifact)
    return NamedModel(spec, location, revision, fingerprint({artifact.kind: artifact.id}))


def hub_model(spec: str, repo_id: str, revision: str | None, cache_root) -> NamedModel:
    # a model option may point at a local copy: fingerprinted by content, no revision to resolve
    resolved = None if Path(repo_id).is_dir() else hub_revision(repo_id, revision)
    return NamedModel(spec, repo_id, resolved, weights_fingerprint(repo_id, resolved, cache_root))
