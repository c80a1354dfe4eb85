"""Versioned, fingerprinted, atomically written artifacts.

Layout: ``<root>/<kind>/<id>/manifest.json`` plus the payload. The id is a hash of the stage's config and the
fingerprints of its inputs, so the same inputs give the same id and a finished stage can be skipped. A stage
writes into a hidden temp dir and renames it into place only when the payload is complete: a crash leaves no
half artifact behind.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from percontrast_cli import __version__
from percontrast_cli.errors import PercontrastError
from percontrast_cli.fingerprint import fingerprint

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Artifact:
    kind: str
    id: str
    path: Path
    manifest: dict[str, Any]

    @property
    def inputs(self) -> dict[str, Any]:
        return self.manifest.get("inputs", {})

    def require_input(self, name: str, expected: Any, what: str) -> None:
        """Reject an artifact built from different inputs (another tokenizer, another dataset...)."""
        found = self.inputs.get(name)
        if found != expected:
            raise PercontrastError(
                f"{self.kind} artifact {self.id} ({self.path}) was built with {what} {found!r}, "
                f"but this run uses {expected!r}; re-run that stage or pick a matching artifact"
            )


class ArtifactStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def artifact_id(self, kind: str, config: Any, inputs: dict[str, Any]) -> str:
        return fingerprint({"kind": kind, "config": config, "inputs": inputs, "version": __version__})

    def find(self, kind: str, artifact_id: str) -> Artifact | None:
        path = self.root / kind / artifact_id
        return load_artifact(path) if (path / MANIFEST).is_file() else None

    def latest(self, kind: str) -> Artifact | None:
        candidates = [load_artifact(p.parent) for p in (self.root / kind).glob(f"*/{MANIFEST}")]
        return max(candidates, key=lambda a: a.manifest["created"], default=None)

    def resolve(self, kind: str, ref: str | Path) -> Artifact:
        """An artifact named by id, by path to its directory, or ``latest``."""
        ref = str(ref)
        if ref == "latest":
            found = self.latest(kind)
            if found is None:
                raise PercontrastError(f"no {kind} artifact exists yet under {self.root / kind}")
            return found
        found = self.find(kind, ref) if "/" not in ref else None
        if found is not None:
            return found
        path = Path(ref)
        if (path / MANIFEST).is_file():
            artifact = load_artifact(path)
            if artifact.kind != kind:
                raise PercontrastError(f"{path} is a {artifact.kind} artifact, expected a {kind} artifact")
            return artifact
        raise PercontrastError(
            f"no {kind} artifact {ref!r}: not an id under {self.root / kind} nor a directory with {MANIFEST}"
        )

    @contextmanager
    def create(
        self, kind: str, artifact_id: str, config: Any, inputs: dict[str, Any], **extra: Any
    ) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Yield a temp dir and a manifest dict to fill; publish both atomically on success."""
        final = self.root / kind / artifact_id
        tmp = self.root / kind / f".tmp-{artifact_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        manifest: dict[str, Any] = {
            "kind": kind,
            "id": artifact_id,
            "created": time.time(),
            "created_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "code_version": __version__,
            "config": config,
            "inputs": inputs,
            **extra,
        }
        try:
            yield tmp, manifest
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            if final.exists():  # a concurrent identical job won the race; its result is equivalent
                shutil.rmtree(tmp)
            else:
                tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def load_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PercontrastError(f"{path / MANIFEST}: unreadable artifact manifest ({exc})") from exc
    return Artifact(kind=manifest["kind"], id=manifest["id"], path=path, manifest=manifest)
