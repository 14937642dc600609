"""Where loradeck keeps what it builds or computes and can build again (never user data)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LORADECK_CACHE"


def cache_dir() -> Path:
    """$LORADECK_CACHE, else the XDG cache folder's `loradeck/` (~/.cache/loradeck)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "loradeck"
