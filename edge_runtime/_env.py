"""Every environment variable the project reads, read here and nowhere else."""

from __future__ import annotations

import os
from pathlib import Path

from edge_runtime.errors import ConfigError


def cache_dir() -> Path:
    """Where cached demo bundles and checkpoints live (``EDGE_RUNTIME_CACHE``)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge-runtime"
    return Path(os.environ.get("EDGE_RUNTIME_CACHE", default))


def default_threads() -> int | None:
    """Thread count forced by ``EDGE_RUNTIME_THREADS``, or None to let the profile/backend decide."""
    value = os.environ.get("EDGE_RUNTIME_THREADS")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"EDGE_RUNTIME_THREADS: expected an integer, got {value!r}") from None


def notify_socket() -> str | None:
    """The systemd notify socket (``NOTIFY_SOCKET``), when running under systemd."""
    return os.environ.get("NOTIFY_SOCKET") or None


def api_token() -> str | None:
    """The daemon's bearer token from ``EDGE_RUNTIME_TOKEN``, if set."""
    return os.environ.get("EDGE_RUNTIME_TOKEN") or None


def profile_name() -> str | None:
    """Device profile forced by ``EDGE_RUNTIME_PROFILE``."""
    return os.environ.get("EDGE_RUNTIME_PROFILE") or None


def watchdog_interval_s() -> float | None:
    """systemd's watchdog period (``WATCHDOG_USEC``) in seconds, when it is meant for this process
    (``WATCHDOG_PID`` unset or equal to our pid); None otherwise."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.strip() != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


def torchrun_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) set by ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``);
    (0, 1, 0) when not launched by it."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1, 0
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def profile_dirs() -> list[Path]:
    """Extra directories of device-profile YAML files (``EDGE_RUNTIME_PROFILE_PATH``, ``:``-separated).

    Profiles found there are registered before the built-in ones and win on a name clash.
    """
    value = os.environ.get("EDGE_RUNTIME_PROFILE_PATH", "")
    return [Path(p) for p in value.split(os.pathsep) if p]
