"""Versioned, fingerprinted, atomically written artifacts.

Layout: ``<root>/<kind>/<id>/manifest.json`` plus the payload. The id is a hash of the stage's config, the
fingerprints of its inputs and the package's source code, so the same inputs give the same id and a finished
stage can be skipped. A stage writes into a hidden temp dir and renames it into place only when the payload
is complete: a crash leaves no half artifact behind. The manifest lists every payload file with its size and
content hash; an artifact is checked against that list before it is reused (see integrity.py for the cost).

The store only ever moves or deletes what it can prove is its own: directories directly inside
``<root>/<kind>/`` named like an id it issues, and its own temp dirs there. A path the user names is read,
never touched.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from percontrast_cli import __version__
from percontrast_cli.runtime.distributed import barrier, is_main, main_decides, rank_and_world
from percontrast_cli.runtime.errors import FILESYSTEM_ERRNOS, PercontrastError, filesystem_message
from percontrast_cli.runtime.machine import machine
from percontrast_cli.runtime.progress import say
from percontrast_cli.store import integrity
from percontrast_cli.store.fingerprint import fingerprint, library_versions
from percontrast_cli.store.manifest import (
    MANIFEST,
    NO_MANIFEST,
    incomplete_reason,
    misplaced_error,
    misplaced_reason,
    read_manifest,
)
from percontrast_cli.store.permissions import follow_umask

TMP_PREFIX = ".tmp-"
BROKEN_PREFIX = ".broken-"
JOB_ARTIFACTS = "artifacts.json"  # a job's record of the artifacts it used, in its own (Hydra) directory
VERIFIED = ".verified"  # integrity verdicts, see integrity.VerifiedCache
# The ids the store issues are fingerprints (lowercase hex): nothing else inside a kind folder is an artifact
# the store may move aside.
ID_PATTERN = re.compile(r"[0-9a-f]{6,64}")
# Below this much free space a stage that has to write stops before its work, not in the middle of it.
MIN_FREE_BYTES = 1 << 20
LOCK_HEARTBEAT_SECONDS = 60.0  # a job waiting for another's artifact says so this often


def job_records(path: Path) -> list[Path]:
    """The artifacts.json of a job dir, or of every job of a sweep dir (none: neither)."""
    if (path / JOB_ARTIFACTS).is_file():
        return [path / JOB_ARTIFACTS]
    return sorted(path.glob(f"*/{JOB_ARTIFACTS}")) if path.is_dir() else []


def is_artifact_id(ref: object) -> bool:
    return ref is not None and ID_PATTERN.fullmatch(str(ref)) is not None


def payload_files(path: Path) -> dict[str, dict]:
    """Every file under an artifact directory except the manifest, with its size and content hash: the
    manifest's `payload` (also for scripts that rewrite an artifact's files in place)."""
    return integrity.payload_entries(path, exclude=MANIFEST)


def acquired(lock: FileLock, timeout: float) -> bool:
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        return False
    return True


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
        multi-process run, rank 0 decides (and holds the lock) and the other ranks follow its decision (or
        its error), waiting for it outside any collective (distributed.main_decides)."""
        if rank_and_world()[1] > 1:
            decision = main_decides(lambda: "build" if self._claim(kind, artifact_id) is None else "found")
            return self.find(kind, artifact_id) if decision == "found" else None
        return self._claim(kind, artifact_id)

    def _claim(self, kind: str, artifact_id: str) -> Artifact | None:
        found = self.find(kind, artifact_id)
        if found is not None:
            return found
        self.check_writable(kind, f"{kind} artifact {artifact_id}")  # before the work, not after it
        locks = self.root / ".locks"
        lock = FileLock(str(locks / f"{kind}-{artifact_id}.lock"))
        with self.writing(f"{kind} artifact {artifact_id}", locks):
            locks.mkdir(parents=True, exist_ok=True)
            waited = 0
            while not acquired(lock, timeout=0 if waited == 0 else LOCK_HEARTBEAT_SECONDS):
                state = (
                    "waiting" if waited == 0 else f"still waiting ({waited * LOCK_HEARTBEAT_SECONDS:.0f} s)"
                )
                say(f"[yellow]{state}[/yellow] for {kind} {artifact_id}: another process is building it")
                waited += 1
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

    @contextmanager
    def writing(self, what: str, where: Path) -> Iterator[None]:
        """File-system faults (disk full, read-only, not a directory...) as one line naming the path and the
        cause; `where` names the place when the OS error does not."""
        try:
            yield
        except PercontrastError:
            raise
        except Exception as exc:
            if (message := filesystem_message(exc, where)) is None:
                raise
            raise PercontrastError(f"cannot write {what}: {message}") from exc

    def check_writable(self, kind: str, what: str) -> None:
        """A stage about to build an artifact fails here, before its work, when the store cannot take it:
        read-only, not a directory, no permission, or (nearly) no free space."""
        folder = self.root / kind
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=f"{TMP_PREFIX}probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
            free = shutil.disk_usage(folder).free
        except OSError as exc:  # named by the folder, not by the probe file's random name
            if (message := filesystem_message(OSError(exc.errno, exc.strerror, str(folder)))) is None:
                raise
            raise PercontrastError(f"cannot write {what}: {message}") from exc
        if free < MIN_FREE_BYTES:
            raise PercontrastError(
                f"cannot write {what}: {folder}: {os.strerror(errno.ENOSPC)} (only {free} bytes free); "
                + FILESYSTEM_ERRNOS[errno.ENOSPC]
            )

    def owns(self, kind: str, path: Path) -> bool:
        """Whether `path` is an artifact directory of this store that it may move aside: directly inside
        <root>/<kind>/ and named like an id the store issues. Never a path a user gave, a kind folder or the
        root itself."""
        return (
            path.parent == self.root / kind
            and is_artifact_id(path.name)
            and not path.is_symlink()
            and path.is_dir()
        )

    def find(self, kind: str, artifact_id: str) -> Artifact | None:
        """The complete artifact, or None. A directory of this store left incomplete (a crash, a hand copy)
        is moved aside so the stage is rebuilt; a complete manifest whose payload does not match is an error.
        Anything that is not an id the store issues (a path, `.`, an empty string) is not found here."""
        if not is_artifact_id(artifact_id):
            return None
        if is_main():  # one rank tidies the store
            self.clean_temporaries(kind)
        path = self.root / kind / str(artifact_id)
        if not path.exists():
            return None
        reason = incomplete_reason(path)
        if reason is not None:
            if is_main():
                self.move_aside(kind, path, reason)
            return None
        return self.checked(load_artifact(path))  # load_artifact refuses a misplaced one, touching nothing

    def move_aside(self, kind: str, path: Path, reason: str) -> Path:
        if not self.owns(kind, path):  # the one guard between a bug and a user's directory
            raise PercontrastError(f"{path} is not a {kind} artifact: {reason}")
        aside = path.with_name(f"{BROKEN_PREFIX}{path.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        with self.writing(f"incomplete {kind} artifact {path.name} (moving it aside)", path):
            path.rename(aside)
        say(f"[yellow]incomplete[/yellow] {kind} {path.name} ({reason}): moved aside to {aside}")
        return aside

    def clean_temporaries(self, kind: str = "*") -> None:
        """Remove temp dirs that a crashed process of this machine left behind (live writers keep theirs);
        of every kind by default."""
        for tmp in self.root.glob(f"{kind}/{TMP_PREFIX}*"):
            owner = _temp_owner(tmp)
            if owner is not None and owner[0] == _host() and not _pid_alive(owner[1]):
                shutil.rmtree(tmp, ignore_errors=True)

    def verified_cache(self, path: Path) -> Path:
        """Where the integrity verdicts of the artifact directory `path` are cached (by its absolute path:
        copies elsewhere get their own)."""
        return self.root / VERIFIED / f"{fingerprint(str(path.absolute()), 16)}.json"

    def checked(self, artifact: Artifact) -> Artifact:
        """The artifact, once its payload matches the files (sizes and content hashes) its manifest lists."""
        return checked(artifact, self.verified_cache(artifact.path))

    def latest(self, kind: str) -> Artifact | None:
        """The newest usable artifact of a kind; every newer one it passes over is named, with the reason."""
        found, passed = self._latest(kind)
        for path, reason in passed:
            say(f"[yellow]latest {kind}[/yellow]: passed over the newer {path.name} ({path}): {reason}")
        return found

    def _latest(self, kind: str) -> tuple[Artifact | None, list[tuple[Path, str]]]:
        folder = self.root / kind
        if is_main():
            self.clean_temporaries(kind)
        candidates = []  # (time, path, reason it cannot be used or None)
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.name.startswith(BROKEN_PREFIX) or not path.is_dir():
                continue
            if path.name.startswith(TMP_PREFIX):
                owner = _temp_owner(path)
                who = f"process {owner[1]} on {owner[0]}" if owner else "another process"
                candidates.append((_mtime(path), path, f"still being written by {who}"))
            elif not path.name.startswith("."):
                reason = incomplete_reason(path)
                manifest = None if reason else read_manifest(path)
                reason = reason or misplaced_reason(path, manifest)
                created = _mtime(path) if reason else manifest["created"]
                if not isinstance(created, int | float):
                    created, reason = _mtime(path), f"{MANIFEST} has no creation time"
                candidates.append((created, path, reason))
        passed = []
        for _, path, reason in sorted(candidates, key=lambda c: c[0], reverse=True):
            if reason is None:
                artifact = load_artifact(path)
                try:
                    return self.checked(artifact), passed
                except PercontrastError as exc:
                    reason = str(exc).split(" is damaged: ")[-1]
            passed.append((path, reason))
        return None, passed

    def resolve(self, kind: str, ref: str | Path, also: tuple[str, ...] = ()) -> Artifact:
        """An artifact named by id, by path to its directory, or ``latest`` (`also`: other kinds accepted,
        e.g. a base `model` where a `checkpoint` is asked for). A path is only ever read: a directory that
        is not an artifact is an error that touches nothing."""
        kinds = (kind, *also)
        text = "" if ref is None else str(ref)
        if Path(text.strip()) == Path("."):  # "", " ", ".", "./": the current dir is no artifact
            raise PercontrastError(
                f"{text!r} does not name a {kind} artifact: give an artifact id, the path of an artifact "
                "directory, or latest"
            )
        if text == "latest":
            found, passed = self._latest(kind)
            for path, reason in passed if found is not None else ():
                say(f"[yellow]latest {kind}[/yellow]: passed over the newer {path.name} ({path}): {reason}")
            if found is None and not passed:
                raise PercontrastError(f"no {kind} artifact exists yet under {self.root / kind}")
            if found is None:
                skipped = "; ".join(f"{path.name}: {reason}" for path, reason in passed)
                raise PercontrastError(
                    f"no usable {kind} artifact under {self.root / kind} (passed over {skipped})"
                )
            return found
        if is_artifact_id(text):
            for candidate in kinds:
                if (found := self.find(candidate, text)) is not None:
                    return found
        path = Path(text).expanduser()
        if path.is_dir():
            if (reason := incomplete_reason(path)) == NO_MANIFEST:
                raise PercontrastError(f"{path} is not a {kind} artifact: {NO_MANIFEST}")
            if reason is not None:
                raise PercontrastError(f"{path} is not a usable {kind} artifact: {reason}")
            artifact = load_artifact(path)
            if artifact.kind not in kinds:
                raise PercontrastError(f"{path} is a {artifact.kind} artifact, expected a {kind} artifact")
            return self.checked(artifact)
        raise PercontrastError(
            f"no {kind} artifact {text!r}: not an id under {self.root / kind} nor a directory with {MANIFEST}"
        )

    @contextmanager
    def create(
        self, kind: str, artifact_id: str, config: Any, inputs: dict[str, Any], **extra: Any
    ) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Yield a temp dir and a manifest dict to fill; publish both atomically on success. With several
        processes only rank 0 publishes (the others fill a private temp dir that is dropped), and every rank
        leaves once the artifact is in place. A file-system fault (disk full, read-only...) is one line naming
        the path and the cause, with the temp dir removed: nothing half-written stays behind."""
        if not is_artifact_id(artifact_id):
            raise ValueError(f"{artifact_id!r} is not an artifact id")
        what = f"{kind} artifact {artifact_id}"
        final = self.root / kind / artifact_id
        owner = f"{_host()}-{os.getpid()}"
        tmp = self.root / kind / f"{TMP_PREFIX}{artifact_id}-{owner}-{uuid.uuid4().hex[:8]}"
        try:
            with self.writing(what, tmp):
                tmp.mkdir(parents=True)
                manifest: dict[str, Any] = {
                    "kind": kind,
                    "id": artifact_id,
                    "created": time.time(),
                    "created_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "code_version": __version__,
                    "versions": library_versions(),  # recorded, not keyed
                    "machine": machine(),  # recorded, not keyed: floats differ across CPUs
                    "config": config,
                    "inputs": inputs,
                    **extra,
                }
                yield tmp, manifest
                if is_main():
                    self.publish(kind, tmp, final, manifest)
                else:
                    shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            # No collective on a failure path: the other ranks may be inside training's collectives, never
            # reaching one here. The error ends this rank; the launcher then stops the others.
            self.release(kind, artifact_id)
            raise
        self.release(kind, artifact_id)
        barrier()  # every rank leaves once the artifact is in place

    def publish(self, kind: str, tmp: Path, final: Path, manifest: dict) -> None:
        refuse_broken_weights(tmp, f"{kind} artifact {final.name}")
        follow_umask(tmp)  # readable by the group where the store is group-shared
        manifest["payload"] = payload_files(tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        if final.exists() and (reason := incomplete_reason(final)) is not None:
            self.move_aside(kind, final, reason)
        if final.exists():  # built meanwhile without the lock (a hand copy): its result is equivalent
            shutil.rmtree(tmp)
        else:
            tmp.rename(final)
            integrity.remember(final, manifest["payload"], self.verified_cache(final))


def refuse_broken_weights(directory: Path, what: str) -> None:
    """Weights that cannot be read, or that hold NaN/inf (a diverged training), are never published."""
    for file in sorted(directory.rglob("*.safetensors")):
        problem = integrity.safetensors_problem(file) or integrity.nonfinite_problem(file)
        if problem is not None:
            raise PercontrastError(
                f"{what} not written: {file.relative_to(directory)}: {problem}; lower train.lr (or check the "
                "data and the scores), then rerun"
            )


def _temp_owner(tmp: Path) -> tuple[str, int] | None:
    """(host, pid) of a temp dir named .tmp-<id>-<host>-<pid>-<random>, None for any other name."""
    parts = tmp.name.split("-")
    if len(parts) >= 5 and parts[-2].isdigit():
        return parts[-3], int(parts[-2])
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def load_artifact(path: str | Path) -> Artifact:
    """The artifact in `path`, once its manifest is complete and says what the place says (its directory
    name, its kind folder): an error that touches nothing otherwise."""
    path = Path(path)
    if (reason := incomplete_reason(path)) is not None:
        raise PercontrastError(f"{path}: not a usable artifact ({reason})")
    manifest = read_manifest(path)
    if (reason := misplaced_reason(path, manifest)) is not None:
        raise misplaced_error(path, reason)
    return Artifact(kind=manifest["kind"], id=manifest["id"], path=path, manifest=manifest)


def checked(artifact: Artifact, cache_file: Path | None = None) -> Artifact:
    """The artifact, once its payload matches the files (sizes and content hashes) its manifest lists."""
    expected = artifact.manifest.get("payload")
    if expected is None:  # a hand-written manifest without a payload list: nothing to check against
        return artifact
    problem = (
        integrity.payload_problem(artifact.path, expected, cache_file)
        if isinstance(expected, dict)
        else f"{MANIFEST} has no payload list"
    )
    if problem is not None:
        raise PercontrastError(
            f"{artifact.kind} artifact {artifact.id} is damaged: {problem}; delete {artifact.path} and rerun "
            "the command that built it (`percontrast run` with the same options) to rebuild it"
        )
    return artifact
