"""Versioned, fingerprinted, atomically written artifacts.

Layout: ``<root>/<kind>/<id>/manifest.json`` plus the payload. The id is a hash of the stage's config, the
fingerprints of its inputs and the package's source code, so the same inputs give the same id and a finished
stage can be skipped. A stage writes into a hidden temp dir and renames it into place only when the payload
is complete: a crash leaves no half artifact behind. The manifest lists every payload file with its size; an
artifact is checked against that list before it is reused.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from percontrast_cli import __version__
from percontrast_cli.distributed import broadcast, is_main, rank_and_world, settle
from percontrast_cli.errors import PercontrastError
from percontrast_cli.progress import say

MANIFEST = "manifest.json"
REQUIRED = ("kind", "id", "created", "config", "inputs")
TMP_PREFIX = ".tmp-"
BROKEN_PREFIX = ".broken-"
JOB_ARTIFACTS = "artifacts.json"  # a job's record of the artifacts it used, in its own (Hydra) directory


@functools.cache
def code_fingerprint() -> str:
    """Hash of the package's own source and shipped configs: any code change gives new artifact ids."""
    package = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted([*package.rglob("*.py"), *package.rglob("*.yaml")]):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def payload_files(path: Path) -> dict[str, int]:
    """Every file under an artifact directory except the manifest, with its size."""
    return {
        str(p.relative_to(path)): p.stat().st_size
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def incomplete_reason(path: Path) -> str | None:
    """Why an artifact directory cannot be used as it is (None when it is complete)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {MANIFEST}"
    except (OSError, json.JSONDecodeError) as exc:
        return f"unreadable {MANIFEST} ({exc})"
    if not isinstance(manifest, dict) or any(key not in manifest for key in REQUIRED):
        return f"{MANIFEST} lacks {', '.join(k for k in REQUIRED if k not in (manifest or {}))}"
    return None


def missing_payload(path: Path, manifest: dict) -> str | None:
    expected = manifest.get("payload")
    if expected is None:
        return None
    found = payload_files(path)
    for name, size in expected.items():
        if name not in found:
            return f"{name} is missing"
        if found[name] != size:
            return f"{name} has {found[name]} bytes, the manifest says {size}"
    return None


def _host() -> str:
    return socket.gethostname().replace("-", "_")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        self.held: dict[tuple[str, str], FileLock] = {}

    def claim(self, kind: str, artifact_id: str) -> Artifact | None:
        """The artifact if it exists; otherwise None, with this process holding the (kind, id) lock until it
        publishes the artifact (or its stage ends): two jobs that need the same artifact (a parallel sweep,
        Slurm jobs on a shared file system) build it once, and the second waits, then reuses it. In a
        multi-process run, rank 0 decides (and holds the lock) and the other ranks follow its decision."""
        if rank_and_world()[1] > 1:
            exists = broadcast(self._claim(kind, artifact_id) is not None if is_main() else None)
            return self.find(kind, artifact_id) if exists else None
        return self._claim(kind, artifact_id)

    def _claim(self, kind: str, artifact_id: str) -> Artifact | None:
        found = self.find(kind, artifact_id)
        if found is not None:
            return found
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(locks / f"{kind}-{artifact_id}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            say(f"[yellow]waiting[/yellow] for {kind} {artifact_id}: another process is building it")
            lock.acquire()
        self.held[(kind, artifact_id)] = lock
        found = self.find(kind, artifact_id)
        if found is not None:  # built by the process we waited for
            self.release(kind, artifact_id)
        return found

    def release(self, kind: str, artifact_id: str) -> None:
        lock = self.held.pop((kind, artifact_id), None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        for kind, artifact_id in list(self.held):
            self.release(kind, artifact_id)

    def find(self, kind: str, artifact_id: str) -> Artifact | None:
        """The complete artifact, or None. A directory left incomplete (a crash, a hand copy) is moved aside
        so the stage is rebuilt; a complete manifest whose payload files are missing is an error."""
        if is_main():  # one rank tidies the store
            self.clean_temporaries(kind)
        path = self.root / kind / artifact_id
        if not path.exists():
            return None
        reason = incomplete_reason(path)
        if reason is not None:
            if is_main():
                self.move_aside(path, reason)
            return None
        return checked(load_artifact(path))

    def move_aside(self, path: Path, reason: str) -> Path:
        aside = path.with_name(f"{BROKEN_PREFIX}{path.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(aside)
        say(f"[yellow]incomplete[/yellow] {path.parent.name} {path.name} ({reason}): moved aside to {aside}")
        return aside

    def clean_temporaries(self, kind: str) -> None:
        """Remove temp dirs that a crashed process of this machine left behind (live writers keep theirs)."""
        for tmp in (self.root / kind).glob(f"{TMP_PREFIX}*"):
            parts = tmp.name.split("-")  # .tmp-<id>-<host>-<pid>-<random>
            if len(parts) >= 5 and parts[-3] == _host() and parts[-2].isdigit():
                if not _pid_alive(int(parts[-2])):
                    shutil.rmtree(tmp, ignore_errors=True)

    def latest(self, kind: str) -> Artifact | None:
        candidates = [
            load_artifact(p.parent)
            for p in (self.root / kind).glob(f"*/{MANIFEST}")
            if not p.parent.name.startswith(".") and incomplete_reason(p.parent) is None
        ]
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
        if path.is_dir() and "/" in ref:
            if (reason := incomplete_reason(path)) is not None:
                raise PercontrastError(f"{path}: not a usable artifact ({reason})")
            artifact = checked(load_artifact(path))
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
        """Yield a temp dir and a manifest dict to fill; publish both atomically on success. With several
        processes only rank 0 publishes (the others fill a private temp dir that is dropped), and every rank
        leaves once the artifact is in place."""
        final = self.root / kind / artifact_id
        owner = f"{_host()}-{os.getpid()}"
        tmp = self.root / kind / f"{TMP_PREFIX}{artifact_id}-{owner}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        manifest: dict[str, Any] = {
            "kind": kind,
            "id": artifact_id,
            "created": time.time(),
            "created_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "code_version": __version__,
            "code": code_fingerprint(),
            "config": config,
            "inputs": inputs,
            **extra,
        }
        failure = None
        try:
            yield tmp, manifest
            if not is_main():
                shutil.rmtree(tmp, ignore_errors=True)
                return
            manifest["payload"] = payload_files(tmp)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            if final.exists() and incomplete_reason(final) is not None:
                self.move_aside(final, incomplete_reason(final))
            if final.exists():  # built meanwhile without the lock (a hand copy): its result is equivalent
                shutil.rmtree(tmp)
            else:
                tmp.rename(final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            failure = exc
            raise
        finally:
            self.release(kind, artifact_id)
            settle(failure)  # every rank leaves together; if one failed (rank 0 publishing), all stop


def load_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    if (reason := incomplete_reason(path)) is not None:
        raise PercontrastError(f"{path}: not a usable artifact ({reason})")
    manifest = json.loads((path / MANIFEST).read_text())
    return Artifact(kind=manifest["kind"], id=manifest["id"], path=path, manifest=manifest)


def checked(artifact: Artifact) -> Artifact:
    """The artifact, once its payload matches the files its manifest lists."""
    if (problem := missing_payload(artifact.path, artifact.manifest)) is not None:
        raise PercontrastError(
            f"{artifact.kind} artifact {artifact.id} ({artifact.path}) is damaged: {problem}; delete that "
            "directory to rebuild it"
        )
    return artifact
