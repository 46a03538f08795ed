"""Tables on a terminal: health in colour (none with NO_COLOR or off a terminal), within the
terminal's width with no word split and the last error in full, one header case; `queue
flush` with nothing due says what waits. The installed command runs under a real
pseudo-terminal (tests/test_terminal.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.smtpserver import SmtpServer, shared_server
from tests.test_e2e import mailrelay
from tests.test_queue import config
from tests.test_terminal import on_terminal

GREEN, RED, YELLOW = "\x1b[32m", "\x1b[31m", "\x1b[33m"
LONG_VAR = "MAILRELAY_TEST_A_VARIABLE_WITH_A_VERY_LONG_NAME_THAT_NOBODY_SETS_EVER"


def mixed_config(tmp_path: Path, port: int) -> Path:
    """A relay that takes no mail for now, but answers probes; and an API key never set."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[defaults]\nfrom = "cron@example.com"\n'
        f'[[providers]]\nname = "relay"\ntype = "smtp"\nhost = "127.0.0.1"\nport = {port}\n'
        'security = "none"\ntimeout = 5\n'
        f'[[providers]]\nname = "api"\ntype = "sendgrid"\napi_key = {{ env = "{LONG_VAR}" }}\n'
    )
    return cfg


@pytest.fixture
def cooling(tmp_path: Path) -> tuple[Path, Path]:
    """A config whose relay is cooling down (it failed for now) but is healthy again."""
    state = tmp_path / "state.toml"
    with SmtpServer(fail={"mail": "451 4.3.0 try later"}) as busy:
        cfg = mixed_config(tmp_path, busy.port)
        r = mailrelay("--config", str(cfg), "--state", str(state), "send", "-s", "x", "a@b.example")
        assert r.returncode == 75, r.stderr
    return cfg, state


def test_health_is_in_colour_on_a_terminal(cooling: tuple[Path, Path]) -> None:
    cfg, state = cooling
    with shared_server() as server:
        cfg.write_text(re.sub(r"port = \d+", f"port = {server.port}", cfg.read_text()))
        code, output = on_terminal("--config", str(cfg), "--state", str(state), "status")
    assert code == 1, output
    assert f"{YELLOW}healthy" in output  # the probe passes, the state rests it
    assert f"{RED}FAILING" in output
    code, output = on_terminal("--config", str(cfg), "--state", str(state), "providers")
    assert code == 0 and YELLOW in output  # its cooldown


def test_healthy_is_green(tmp_path: Path) -> None:
    with shared_server() as server:
        cfg = mixed_config(tmp_path, server.port)
        code, output = on_terminal("--config", str(cfg), "status", "relay")
    assert code == 0 and f"{GREEN}healthy" in output


def test_no_colour_with_no_color_or_off_a_terminal(
    cooling: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, state = cooling
    monkeypatch.setenv("NO_COLOR", "1")
    _, output = on_terminal("--config", str(cfg), "--state", str(state), "status")
    monkeypatch.delenv("NO_COLOR")
    assert "FAILING" in output
    assert not any(c in output for c in (GREEN, RED, YELLOW))
    r = mailrelay("--config", str(cfg), "--state", str(state), "status", input=None)
    assert "FAILING" in r.stdout and "\x1b[" not in r.stdout


def plain(output: str) -> list[str]:
    """The lines of stdout on the terminal (the diagnostics on stderr left out)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", output.replace("\r", ""))
    return [line for line in text.splitlines() if not line.startswith("mailrelay: ")]


def unwrapped(lines: list[str]) -> str:
    """The text of the lines as one string, the wrapping undone."""
    return " ".join(line.strip() for line in lines)


@pytest.mark.parametrize("columns", [80, 120])
def test_status_reads_whole_at_80_and_120_columns(tmp_path: Path, columns: int) -> None:
    with shared_server() as server:
        cfg = mixed_config(tmp_path, server.port)
        _, output = on_terminal("--config", str(cfg), "status", columns=columns)
        r = mailrelay("--config", str(cfg), "status", "--json", input=None)
    lines = plain(output)
    assert all(len(line) <= columns for line in lines), "\n".join(lines)
    relay = next(line for line in lines if line.startswith("relay "))
    api = next(line for line in lines if line.startswith("api "))
    assert relay.split()[:2] == ["relay", "smtp"] and api.split()[:2] == ["api", "sendgrid"]
    assert "…" not in output
    detail = json.loads(r.stdout)["providers"][1]["detail"]
    assert LONG_VAR in detail and detail in unwrapped(lines)  # the whole reason, on the screen


@pytest.mark.parametrize("columns", [80, 120])
def test_providers_keep_words_whole_and_settings_for_wide(
    cooling: tuple[Path, Path], columns: int
) -> None:
    cfg, state = cooling
    args = ("--config", str(cfg), "--state", str(state), "providers")
    _, output = on_terminal(*args, columns=columns)
    lines = plain(output)
    assert all(len(line) <= columns for line in lines), "\n".join(lines)
    header = next(line for line in lines if line.startswith("#"))
    assert header.split()[:3] == ["#", "name", "type"] and "settings" not in header
    assert "host=127.0.0.1" not in output
    row = next(line for line in lines if line.startswith("1 "))
    assert row.split()[1:3] == ["relay", "smtp"]
    error = json.loads(mailrelay(*args, "--json", input=None).stdout)["providers"][0]
    assert error["last_error"].startswith("transient: ")
    assert error["last_error"] in unwrapped(lines)  # in full, under the row if need be
    for wide in (("--wide",), ("-v",)):
        _, output = on_terminal(*args, *wide, columns=columns)
        assert "host=127.0.0.1" in unwrapped(plain(output)), wide
        assert all(len(line) <= columns for line in plain(output)), output


def test_off_a_terminal_every_column_is_on_its_row(cooling: tuple[Path, Path]) -> None:
    cfg, state = cooling
    r = mailrelay("--config", str(cfg), "--state", str(state), "providers", input=None)
    header, relay = r.stdout.splitlines()[:2]
    assert header.split()[-3:] == ["settings", "last", "error"]  # the plain layout, as before
    assert "host=127.0.0.1" in relay and "transient: " in relay


@pytest.mark.parametrize("columns", [80, 120])
def test_queue_list_reads_whole(tmp_path: Path, dead_port: int, columns: int) -> None:
    cfg = config(tmp_path, dead_port, password=False, on_failure="queue")
    subject = "the nightly backup of the accounting database finished with warnings"
    r = mailrelay("--config", str(cfg), "send", "-s", subject, "ops@example.com")
    assert r.returncode == 0, r.stderr
    _, output = on_terminal("--config", str(cfg), "queue", "list", columns=columns)
    lines = plain(output)
    assert all(len(line) <= columns for line in lines), "\n".join(lines)
    entry = json.loads(mailrelay("--config", str(cfg), "queue", "list", "--json").stdout)
    (only,) = entry if isinstance(entry, list) else entry["messages"]
    ident = only["id"]
    assert any(line.startswith(ident + " ") for line in lines), lines
    text = unwrapped(lines)
    assert subject in text and "connection refused" in text


def test_the_three_tables_share_one_header_case(tmp_path: Path, dead_port: int) -> None:
    cfg = config(tmp_path, dead_port, password=False, on_failure="queue")
    r = mailrelay("--config", str(cfg), "send", "-s", "held", "ops@example.com")
    assert r.returncode == 0, r.stderr
    headers = [
        mailrelay("--config", str(cfg), *words, input=None).stdout.splitlines()[0]
        for words in (("providers",), ("status",), ("queue", "list"))
    ]
    for header in headers:
        assert (header == header.lower() and "name" in header) or "id" in header, header
    assert headers[2].split()[:3] == ["id", "queued", "age"]


def test_queue_ids_are_short_and_the_time_has_its_own_column(
    tmp_path: Path, dead_port: int
) -> None:
    cfg = config(tmp_path, dead_port, password=False, on_failure="queue")
    r = mailrelay("--config", str(cfg), "send", "-s", "held", "ops@example.com")
    assert r.returncode == 0, r.stderr
    listing = mailrelay("--config", str(cfg), "queue", "list", input=None).stdout.splitlines()
    ident, queued_day, queued_time = listing[1].split()[:3]
    assert len(ident) == 12 and re.fullmatch(r"\d{4}-\d\d-\d\d", queued_day), listing
    assert queued_time.endswith("Z")
    prefix = ident[:4]
    shown = mailrelay("--config", str(cfg), "queue", "show", prefix, "--json", input=None)
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == ident


def test_flush_with_nothing_due_says_what_waits_on_a_terminal(
    tmp_path: Path, dead_port: int
) -> None:
    cfg = config(tmp_path, dead_port, password=False, on_failure="queue")
    for _ in range(2):
        r = mailrelay("--config", str(cfg), "send", "-s", "held", "ops@example.com")
        assert r.returncode == 0, r.stderr
    code, output = on_terminal("--config", str(cfg), "queue", "flush")
    assert code == 0, output
    assert "nothing due; 2 message(s) wait, the next in " in output
    assert "'mailrelay queue flush --now' sends them at once" in output
    r = mailrelay("--config", str(cfg), "queue", "flush", input=None)  # cron: silent
    assert r.returncode == 0 and r.stderr == "" and r.stdout == ""


def test_old_time_first_ids_are_still_listed_shown_and_flushed(tmp_path: Path) -> None:
    with shared_server() as server:
        cfg = config(tmp_path, server.port, password=False, on_failure="queue")
        server.fail["mail"] = "451 4.3.0 try later"
        r = mailrelay("--config", str(cfg), "send", "-s", "old", "ops@example.com")
        assert r.returncode == 0, r.stderr
        (path,) = (tmp_path / "spool").glob("*.json")
        old = "20261122T091403.123456Z-3f9a2c1b0e"  # as earlier versions named them
        doc = json.loads(path.read_text())
        doc["id"] = old
        (tmp_path / "spool" / f"{old}.json").write_text(json.dumps(doc))
        path.unlink()
        listing = mailrelay("--config", str(cfg), "queue", "list", input=None)
        assert old in listing.stdout
        shown = mailrelay("--config", str(cfg), "queue", "show", "20261122T09", input=None)
        assert shown.returncode == 0 and old in shown.stdout
        del server.fail["mail"]
        r = mailrelay("--config", str(cfg), "queue", "flush", "--now", input=None)
        assert r.returncode == 0, r.stderr
        assert len(server.messages) == 1
    assert not list((tmp_path / "spool").glob("*.json"))
