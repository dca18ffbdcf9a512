"""A systemd unit for the daemon: Type=notify, watchdog, restart on failure, unprivileged, hardened.

Every value that goes into the unit is checked and quoted the way systemd reads it (systemd.syntax(7),
systemd.service(5)): user and group names follow systemd's rules, control characters are refused (a newline
would start a new directive), and command-line words are double-quoted with C escapes where needed, with ``%``
(specifiers) written ``%%`` and ``$`` (variables) written ``$$``.
"""

from __future__ import annotations

import re
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


#: systemd's portable user/group names (valid_user_group_name, strict): a letter or ``_``, then letters, digits,
#: ``_`` or ``-``, at most 31 characters; or a numeric id
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,30}|[0-9]{1,10}")
#: words that need no quoting in a command line
_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./%$-]+")


def _no_control(value: str, what: str) -> str:
    bad = next((c for c in value if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise ConfigError(f"service unit: {what} {value!r} contains a control character ({bad!r}); a unit file "
                          "line cannot hold it")
    return value


def systemd_quote(word: str, *, variables: bool = True) -> str:
    """One word as systemd reads it back: ``%`` doubled (specifiers), ``$`` doubled where ``variables`` are
    expanded (command lines, not paths), double quotes with C escapes when the word has spaces, quotes or
    backslashes.

    Example:
        >>> systemd_quote("/opt/my bundles/a"), systemd_quote("50%")
        ('"/opt/my bundles/a"', '50%%')
        >>> systemd_quote("$X"), systemd_quote("$X", variables=False)
        ('$$X', '$X')
    """
    escaped = _no_control(word, "value").replace("%", "%%")
    if variables:
        escaped = escaped.replace("$", "$$")
    if _PLAIN.fullmatch(word):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_user(user: str) -> str:
    if not _USER.fullmatch(user):
        raise ConfigError(f"--user {user!r}: not a valid systemd user/group name (a letter or '_', then letters, "
                          "digits, '_' or '-', at most 31 characters; or a numeric id)")
    return user


def _exec_start(s: UnitSettings) -> str:
    base = shlex.split(_no_control(s.exec_start, "--exec")) if s.exec_start else [sys.executable, "-m", "edge_runtime"]
    args = ["serve"] + [f"{_no_control(name, 'model name')}={Path(_no_control(path, 'bundle path')).resolve()}"
                        for name, path in s.models.items()]
    args += ["--host", _no_control(s.host, "--host"), "--port", str(s.port)]
    if s.token_file:
        args += ["--token-file", str(Path(_no_control(s.token_file, "--token-file")).resolve())]
    args += [_no_control(a, "serve argument") for a in s.extra_args]
    return " ".join(systemd_quote(a) for a in [*base, *args])


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
    user = _check_user(s.user)
    exec_start = _exec_start(s)
    names = ", ".join(s.models).replace("%", "%%")
    read_only = " ".join(systemd_quote(str(Path(p).resolve()), variables=False) for p in s.models.values())
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
        f"ExecStart={exec_start}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=2",
        f"WatchdogSec={s.watchdog_s}",
        "TimeoutStartSec=120",
        "TimeoutStopSec=45",
        "KillSignal=SIGTERM",
        f"User={user}",
        f"Group={user}",
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
