"""ALOE's published evaluation users (github.com/ShujinWu-0814/ALOE, datasets/): ``profile_eval.jsonl`` (20
profiles) and ``personality_eval.jsonl``, each line one JSON string. The published evaluation pairs every
profile with the first 5 personalities (100 simulated users); ``task.n_personalities`` and
``task.n_profiles`` shrink it."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from percontrast_cli.data.sources import read_utf8
from percontrast_cli.runtime.errors import PercontrastError
from percontrast_cli.store.fingerprint import fingerprint

PROFILES = "profile_eval.jsonl"
PERSONALITIES = "personality_eval.jsonl"
SOURCE = "github.com/ShujinWu-0814/ALOE, datasets/"


@dataclass(frozen=True)
class Entry:
    text: str  # the decoded JSON string
    raw: str  # the line as eval_own.py's readlines() gives it (quotes, escapes and line break included)


@dataclass(frozen=True)
class Persona:
    """One simulated user: a profile paired with a personality."""

    id: str  # "profile03-personality1"
    profile_index: int  # line order in profile_eval.jsonl, from 0; the report resamples users by profile
    personality_index: int
    profile: Entry
    personality: Entry

    def texts(self, raw: bool) -> tuple[str, str]:
        """(profile, personality) as the prompts show them (``aloe.raw_lines``)."""
        if raw:
            return self.profile.raw, self.personality.raw
        return self.profile.text, self.personality.text


def read_entries(path: Path) -> list[Entry]:
    """Every line a JSON string; blank lines only at the end (one at the very end is the usual newline)."""
    if not path.is_file():
        raise PercontrastError(
            f"{path}: missing (task=aloe reads ALOE's {PROFILES} and {PERSONALITIES}, {SOURCE})"
        )
    # as eval_own.py reads it: readlines(), universal newlines; a byte that is not UTF-8 is one line
    lines = io.StringIO(read_utf8(path), newline=None).readlines()
    while lines and not lines[-1].strip():
        lines.pop()
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise PercontrastError(f"{path}:{number}: empty line (each line must be a JSON string)")
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PercontrastError(
                f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(value, str):
            raise PercontrastError(
                f"{path}:{number}: expected a JSON string (a quoted description), got "
                f"{type(value).__name__} {line.strip()[:40]!r}"
            )
        if not value.strip():
            raise PercontrastError(f"{path}:{number}: empty description")
        entries.append(Entry(value, line))
    if not entries:
        raise PercontrastError(f"{path}: no entries")
    return entries


def load_personas(directory, n_profiles: int | None, n_personalities: int) -> list[Persona]:
    """Every (profile, personality) pair of the evaluation: profiles in file order, each with the first
    ``n_personalities`` personalities (the published evaluation's loop order)."""
    if directory is None:
        raise PercontrastError(
            f"task=aloe needs data.path=<a directory holding {PROFILES} and {PERSONALITIES}> ({SOURCE})"
        )
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise PercontrastError(
            f"data.path={directory}: not a directory (task=aloe reads {PROFILES} and {PERSONALITIES})"
        )
    profiles, personalities = read_entries(root / PROFILES), read_entries(root / PERSONALITIES)
    if n_personalities > len(personalities):
        raise PercontrastError(
            f"task.n_personalities={n_personalities}, but {root / PERSONALITIES} has {len(personalities)}"
        )
    if n_profiles is not None and n_profiles > len(profiles):
        raise PercontrastError(f"task.n_profiles={n_profiles}, but {root / PROFILES} has {len(profiles)}")
    return [
        Persona(f"profile{i:02d}-personality{j}", i, j, profile, personalities[j])
        for i, profile in enumerate(profiles[:n_profiles])
        for j in range(n_personalities)
    ]


def personas_fingerprint(personas: list[Persona]) -> str:
    return fingerprint([asdict(p) for p in personas])


def check_task_config(task_cfg, data_path) -> None:
    """One-line errors for bad task=aloe settings, before any work."""
    if data_path is None or not Path(data_path).expanduser().is_dir():
        raise PercontrastError(
            f"task=aloe needs data.path=<a directory holding {PROFILES} and {PERSONALITIES}> ({SOURCE})"
            + ("" if data_path is None else f"; {data_path} is not a directory")
        )
    value = task_cfg.n_personalities
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PercontrastError(f"task.n_personalities={value!r} must be an integer >= 1")
    value = task_cfg.get("n_profiles")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise PercontrastError(f"task.n_profiles={value!r} must be an integer >= 1 (or null: all)")
