"""The environment as a user means it: an empty variable is an unset one, and a missing home is no reason to
write at the filesystem root.

`PERCONTRAST_OUTPUTS=` (empty) used to make the outputs root "" and so the store `/artifacts` and Hydra's
log `/hydra`; `HOME=` (empty) made `~/.cache/percontrast` the cache `/.cache/percontrast` (and so for every
library that caches under `~`). Both run before any work; the workers of a multi-process run inherit them.
"""

from __future__ import annotations

import os
from pathlib import Path

# The tool's own variables, each with a default that an empty value should leave in force.
EMPTY_IS_UNSET = ("PERCONTRAST_OUTPUTS", "PERCONTRAST_CACHE", "PERCONTRAST_WORDNET")
HOME_UNDER_ROOT = ".home"  # HOME when there is none: <outputs root>/.home


def drop_empty_settings() -> list[str]:
    """Unset the tool's variables that are set but empty (or blank); their names."""
    dropped = [name for name in EMPTY_IS_UNSET if name in os.environ and not os.environ[name].strip()]
    for name in dropped:
        del os.environ[name]
    return dropped


def keep_writes_inside(root: str | Path, cache: str | Path) -> Path | None:
    """Writes only under the outputs root and the cache. With HOME unset or empty, `~` is the filesystem
    root (or root's home): HOME becomes `<root>/.home`, so the cache and every library's `~` files stay under
    the outputs root. torch makes its compile cache at import (`$TMPDIR/torchinductor_<user>`): it goes into
    the cache. Returns the new HOME, or None when HOME was set."""
    home = None
    if not os.environ.get("HOME", "").strip():
        home = Path(root).absolute() / HOME_UNDER_ROOT
        os.environ["HOME"] = str(home)
    compile_cache = Path(cache).expanduser().absolute() / "torchinductor"
    try:  # a cache that cannot be written keeps torch's default (torch would fail at import otherwise)
        compile_cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return home
    if os.access(compile_cache, os.W_OK):
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache))
    return home
