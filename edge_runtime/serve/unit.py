"""A systemd unit for the daemon: Type=notify, watchdog, restart on failure, unprivileged, hardened."""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.errors import ConfigError

#: sandboxing applied to every unit (see systemd.exec(5)); the daemon needs only to read its
#: bundles, listen on TCP and talk to NOTIFY_SOCKET.
HARDENING = [
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=read-only",
    "PrivateTmp=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "UMask=0077",
]


@dataclass(frozen=True)
class UnitSettings:
    """What goes into the unit.

    Attributes:
        models: model name -> bundle directory (absolute paths are written).
        user: the unprivileged account the daemon runs as (create it with ``useradd --system``).
        exec_start: the command that starts the daemon (default: this Python's ``-m edge_runtime``).
        host, port: where it listens.
        watchdog_s: ``WatchdogSec``; the daemon pings at half of it.
        token_file: bearer-token file passed as ``--token-file``.
        extra_args: more ``serve`` flags, appended verbatim (e.g. ``--max-batch-size 16``).
        i2c: allow /dev/i2c-* (INA219/INA260 power sensors) instead of ``PrivateDevices=yes``.
    """

    models: dict[str, str]
    user: str = "edge-runtime"
    exec_start: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    watchdog_s: int = 30
    token_file: str | None = None
    extra_args: list[str] = field(default_factory=list)
    i2c: bool = False


def _exec_start(s: UnitSettings) -> str:
    base = s.exec_start or f"{shlex.quote(sys.executable)} -m edge_runtime"
    args = ["serve"] + [f"{name}={Path(path).resolve()}" for name, path in s.models.items()]
    args += ["--host", s.host, "--port", str(s.port)]
    if s.token_file:
        args += ["--token-file", str(Path(s.token_file).resolve())]
    args += list(s.extra_args)
    return base + " " + " ".join(shlex.quote(a) for a in args)


def unit_text(s: UnitSettings) -> str:
    """The unit file's text.

    Example:
        >>> text = unit_text(UnitSettings(models={"tiny": "/opt/bundles/tiny"}))
        >>> "Type=notify" in text and "WatchdogSec=30" in text
        True
    """
    if not s.models:
        raise ConfigError("service unit: give at least one bundle (NAME=PATH or PATH)")
    if s.watchdog_s < 2:
        raise ConfigError(f"--watchdog: expected >= 2 seconds, got {s.watchdog_s}")
    names = ", ".join(s.models)
    read_only = " ".join(str(Path(p).resolve()) for p in s.models.values())
    devices = ["DevicePolicy=closed", "DeviceAllow=char-i2c rw", "SupplementaryGroups=i2c"] if s.i2c \
        else ["PrivateDevices=yes"]
    lines = [
        "[Unit]",
        f"Description=edge-runtime early-exit inference daemon ({names})",
        "Documentation=https://github.com/edge-runtime/edge-runtime#serving-daemon",
        "After=network.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={_exec_start(s)}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=2",
        f"WatchdogSec={s.watchdog_s}",
        "TimeoutStartSec=120",
        "TimeoutStopSec=45",
        "KillSignal=SIGTERM",
        f"User={s.user}",
        f"Group={s.user}",
        f"ReadOnlyPaths={read_only}",
        *devices,
        *HARDENING,
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def systemd_analyze() -> str | None:
    """Path of ``systemd-analyze`` when installed (for ``verify``), else None."""
    return shutil.which("systemd-analyze")
