"""Stable content hashes: the identity of data, configs and artifacts."""

import hashlib
import json
from typing import Any


def fingerprint(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-serialisable object, independent of dict key order."""
    payload = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]
