"""Every environment variable the project reads, read here and nowhere else."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where cached demo bundles and checkpoints live (``EDGE_RUNTIME_CACHE``)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge-runtime"
    return Path(os.environ.get("EDGE_RUNTIME_CACHE", default))


def default_threads() -> int | None:
    """Thread count forced by ``EDGE_RUNTIME_THREADS``, or None to let the profile/backend decide."""
    value = os.environ.get("EDGE_RUNTIME_THREADS")
    return int(value) if value else None


def notify_socket() -> str | None:
    """The systemd notify socket (``NOTIFY_SOCKET``), when running under systemd."""
    return os.environ.get("NOTIFY_SOCKET") or None


def api_token() -> str | None:
    """The daemon's bearer token from ``EDGE_RUNTIME_TOKEN``, if set."""
    return os.environ.get("EDGE_RUNTIME_TOKEN") or None


def profile_name() -> str | None:
    """Device profile forced by ``EDGE_RUNTIME_PROFILE``."""
    return os.environ.get("EDGE_RUNTIME_PROFILE") or None
