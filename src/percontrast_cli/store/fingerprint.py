"""Stable content hashes: the identity of data, configs and artifacts; and the library versions every
manifest records beside them (not part of any id)."""

import functools
import hashlib
import json
from typing import Any


def fingerprint(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-serialisable object, independent of dict key order."""
    payload = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


# Recorded (not keyed) in every manifest: the libraries whose numerics a payload depends on.
RECORDED_LIBRARIES = ("percontrast-cli", "torch", "transformers", "accelerate", "peft", "tokenizers")


@functools.cache
def library_versions() -> dict[str, str | None]:
    """The installed versions of RECORDED_LIBRARIES (None for one that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {name: installed(name) for name in RECORDED_LIBRARIES}
