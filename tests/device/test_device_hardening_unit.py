"""``edge-runtime service unit`` against injection (issue 16, item 4): user/group names follow systemd's rules, control
characters are refused everywhere, and every value is quoted the way systemd parses it, so no value can add a
directive or an argument."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_runtime.cli import main
from edge_runtime.errors import ConfigError
from edge_runtime.serve.unit import UnitSettings, systemd_quote, unit_text


def systemd_words(line: str, variables: bool = True) -> list[str]:
    """Split a line the way systemd does for ExecStart= (quotes, C escapes, ``%%``, and ``$$`` where ``variables``
    expand) — enough of systemd.syntax(7) to read back what :func:`systemd_quote` writes; anything else fails."""
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            break
        word, quote = [], None
        while i < n and (quote or line[i] not in " \t"):
            c = line[i]
            if c == "\\":
                nxt = line[i + 1]
                assert nxt in '\\"\'', f"unexpected escape \\{nxt} in {line!r}"
                word.append(nxt)
                i += 2
                continue
            if c in "\"'" and (quote is None or quote == c):
                quote = None if quote else c
            elif c == "%" or (c == "$" and variables):
                assert line[i + 1] == c, f"unescaped {c} (a specifier or variable) in {line!r}"
                word.append(c)
                i += 1
            else:
                word.append(c)
            i += 1
        assert quote is None, f"unterminated quote in {line!r}"
        words.append("".join(word))
    return words


def _directives(text: str) -> list[str]:
    return [line.split("=", 1)[0] for line in text.splitlines() if "=" in line]


@pytest.fixture(scope="module")
def bundle(make_bundle: Callable[..., Path]) -> Path:
    return make_bundle(num_exits=2)


BASE = UnitSettings(models={"m": "/opt/b"})


@pytest.mark.parametrize("user", ["edge\nExecStartPre=/bin/sh -c id", "edge runtime", "edge;rm", "-edge", "a" * 40,
                                  "", "edge\x00", "édge"])
def test_bad_user_names_are_refused(user: str) -> None:
    with pytest.raises(ConfigError, match="--user"):
        unit_text(UnitSettings(models={"m": "/opt/b"}, user=user))


@pytest.mark.parametrize("user", ["edge-runtime", "_edge", "svc_1", "1001"])
def test_good_user_names_pass(user: str) -> None:
    text = unit_text(UnitSettings(models={"m": "/opt/b"}, user=user))
    assert f"User={user}" in text.splitlines() and f"Group={user}" in text.splitlines()


@pytest.mark.parametrize("settings", [
    UnitSettings(models={"m\nExecStartPre=/bin/sh": "/opt/b"}),
    UnitSettings(models={"m": "/opt/b\nExecStartPre=/bin/sh"}),
    UnitSettings(models={"m": "/opt/b"}, host="127.0.0.1\nExecStartPre=/bin/sh"),
    UnitSettings(models={"m": "/opt/b"}, token_file="/t\rx"),
    UnitSettings(models={"m": "/opt/b"}, exec_start="/usr/bin/edge-runtime\nExecStartPre=/bin/sh"),
    UnitSettings(models={"m": "/opt/b"}, extra_args=["--log-level", "info\x1b[2J"]),
])
def test_control_characters_are_refused_everywhere(settings: UnitSettings) -> None:
    with pytest.raises(ConfigError, match="control character"):
        unit_text(settings)


def test_every_value_reads_back_as_one_argument() -> None:
    """Names and paths with spaces, quotes, backslashes, ``%`` specifiers and ``$`` variables: the unit has exactly
    the usual directives, and ExecStart= reads back (as systemd splits it) to exactly the intended arguments."""
    odd = {"my model": "/opt/b dir/it's \"q\" %n $HOME \\x", "m2": "/opt/100%"}
    s = UnitSettings(models=odd, exec_start="/opt/venv/bin/python3 -m edge_runtime", host="127.0.0.1",
                     token_file="/etc/edge runtime/token", extra_args=["--log-level", "info", "--drain", "5 $X"])
    text = unit_text(s)
    assert _directives(text) == _directives(unit_text(BASE))  # nothing added, nothing lost
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    words = systemd_words(exec_line[len("ExecStart="):])
    assert words == ["/opt/venv/bin/python3", "-m", "edge_runtime", "serve", f"my model={Path(odd['my model'])}",
                     f"m2={Path(odd['m2'])}", "--host", "127.0.0.1", "--port", "8080", "--token-file",
                     "/etc/edge runtime/token", "--log-level", "info", "--drain", "5 $X"]
    desc = next(line for line in text.splitlines() if line.startswith("Description="))
    assert "%%" not in desc.replace("%%", "") and re.search(r"(?<!%)%(?!%)", desc) is None
    ro = next(line for line in text.splitlines() if line.startswith("ReadOnlyPaths="))
    assert systemd_words(ro[len("ReadOnlyPaths="):], variables=False) == [str(Path(p)) for p in odd.values()]


def test_systemd_quote_examples() -> None:
    assert systemd_quote("--port") == "--port"
    assert systemd_quote("a b") == '"a b"'
    assert systemd_quote("50%") == "50%%"
    assert systemd_quote('say "hi" $USER \\') == '"say \\"hi\\" $$USER \\\\"'
    assert systemd_quote("") == '""'


def test_the_cli_refuses_an_injected_user_with_exit_2(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["service", "unit", f"m={bundle}", "--user", "edge\nExecStartPre=/bin/sh -c 'id > /tmp/pwned'"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("edge-runtime service: error:") and "--user" in err


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_a_unit_with_odd_values_is_valid_systemd(tmp_path: Path) -> None:
    s = UnitSettings(models={"my model": "/opt/b dir/100% $HOME"}, extra_args=["--drain", "5"],
                     exec_start="/usr/bin/python3 -m edge_runtime")
    unit = tmp_path / "edge-runtime.service"
    unit.write_text(unit_text(s))
    check = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "edge-runtime.service" not in check.stderr, check.stderr


def test_a_manifest_name_with_a_newline_cannot_name_a_served_model(make_bundle: Callable[..., Path],
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from edge_runtime.synthetic import write_synthetic_bundle

    bundle = write_synthetic_bundle(tmp_path / "b", name="m\nExecStartPre=/bin/sh")
    assert main(["service", "unit", str(bundle)]) == 2
    assert "control characters" in capsys.readouterr().err
