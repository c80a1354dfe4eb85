"""An artifact's manifest.json as read from its directory: complete (every required field), and what its place
says (its `id` the directory's name, its `kind` the folder's). A manifest that fails either is never trusted
over its place: an edited or copied artifact would otherwise be reused under an id that does not exist."""

from __future__ import annotations

import json
from pathlib import Path

from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.store.identity import KINDS

MANIFEST = "manifest.json"
NO_MANIFEST = f"no {MANIFEST}"
REQUIRED = ("kind", "id", "created", "config", "inputs")


def read_manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def incomplete_reason(path: Path) -> str | None:
    """Why an artifact directory cannot be used as it is (None when it is complete)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return NO_MANIFEST
    except (OSError, json.JSONDecodeError) as exc:
        return f"unreadable {MANIFEST} ({exc})"
    if not isinstance(manifest, dict) or any(key not in manifest for key in REQUIRED):
        return f"{MANIFEST} lacks {', '.join(k for k in REQUIRED if k not in (manifest or {}))}"
    return None


def misplaced_reason(path: Path, manifest: dict) -> str | None:
    """Why a complete manifest is not the artifact its place says (an edited or copied artifact): its `id`
    must be its directory's name and, inside a kind folder, its `kind` that folder's name. None when it is."""
    problems = []
    if str(manifest["id"]) != path.name:
        problems.append(f"id {manifest['id']!r} but its directory is named {path.name!r}")
    if path.parent.name in KINDS and manifest["kind"] != path.parent.name:
        problems.append(f"kind {manifest['kind']!r} but it sits in the {path.parent.name!r} folder")
    if not problems:
        return None
    return f"its {MANIFEST} says {' and '.join(problems)} (an edited or copied artifact)"


def misplaced_error(path: Path, reason: str) -> PercontrastError:
    return PercontrastError(
        f"{path} is not the artifact its place says: {reason}; move it back to "
        "<store>/<its kind>/<its id>/ or delete it, then rerun"
    )
