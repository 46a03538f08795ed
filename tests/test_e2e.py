"""End to end through the installed `mailrelay` command, against real loopback servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from mailrelay.state import TomlStateStore
from tests import configfile
from tests.esp.fakebase import server_base_url
from tests.smtpserver import SmtpServer, shared_server


def mailrelay_command() -> str:
    beside = Path(sys.executable).parent / "mailrelay"
    found = str(beside) if beside.exists() else shutil.which("mailrelay")
    if not found:
        raise RuntimeError("the mailrelay command is not installed (pip install -e '.[test]')")
    return found


def mailrelay(
    *args: str, input: str | None = "body\n", timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [mailrelay_command(), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def smtp_url(server: SmtpServer, name: str) -> str:
    return f"smtp://127.0.0.1:{server.port}?security=none&timeout=5&name={name}"


def write_config(path: Path, providers: list[dict[str, Any]], **defaults: Any) -> Path:
    """A config with `providers` and `defaults` (kept for the tests importing it from here;
    the writer is tests/configfile.py)."""
    return configfile.write_config(path, providers, defaults=defaults)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "data" / "state.toml"


@pytest.fixture
def two_servers() -> Iterator[tuple[SmtpServer, SmtpServer]]:
    with SmtpServer() as first, SmtpServer() as second:
        yield first, second


def smtp_config(tmp_path: Path, servers: tuple[SmtpServer, ...], **defaults: Any) -> Path:
    return write_config(
        tmp_path / "config.toml",
        [
            {
                "name": f"relay{i}",
                "type": "smtp",
                "host": "127.0.0.1",
                "port": s.port,
                "security": "none",
                "timeout": 5,
            }
            for i, s in enumerate(servers, 1)
        ],
        **defaults,
    )


def test_failover_then_sticky(tmp_path: Path, state: Path, two_servers) -> None:
    first, second = two_servers
    first.fail["connect"] = "421 4.3.2 service not available"
    cfg = smtp_config(tmp_path, two_servers)
    r = mailrelay("--config", str(cfg), "--state", str(state), "send", "-s", "one", "a@example.com")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""  # silent success, as under cron
    assert first.connections == 1 and len(second.messages) == 1
    assert TomlStateStore(state).load().last_provider == "relay2"
    # the next send goes straight to relay2: relay1 is not even connected to
    r = mailrelay("--config", str(cfg), "--state", str(state), "send", "-s", "two", "a@example.com")
    assert r.returncode == 0, r.stderr
    assert first.connections == 1 and len(second.messages) == 2
    loaded = TomlStateStore(state).load()
    assert loaded.providers["relay2"].sent == 2
    assert loaded.providers["relay1"].failed == 1
    assert loaded.providers["relay1"].last_error.startswith("transient: ")  # type: ignore[union-attr]


def test_priority_returns_to_the_first_after_its_cooldown(
    tmp_path: Path, state: Path, two_servers
) -> None:
    first, second = two_servers
    first.fail["connect"] = "421 4.3.2 try later"
    cfg = smtp_config(tmp_path, two_servers, policy="priority", cooldown=1)
    base = ["--config", str(cfg), "--state", str(state), "send", "-s", "x", "a@example.com"]
    assert mailrelay(*base).returncode == 0
    assert len(second.messages) == 1 and first.connections == 1
    del first.fail["connect"]
    # inside the cooldown relay1 waits at the back
    assert mailrelay(*base).returncode == 0
    assert len(second.messages) == 2 and first.connections == 1
    time.sleep(1.2)
    assert mailrelay(*base).returncode == 0
    assert len(first.messages) == 1 and len(second.messages) == 2


def test_round_robin_spreads(tmp_path: Path, state: Path, two_servers) -> None:
    first, second = two_servers
    cfg = smtp_config(tmp_path, two_servers, policy="round-robin")
    for _ in range(4):
        r = mailrelay(
            "--config", str(cfg), "--state", str(state), "send", "-s", "x", "a@example.com"
        )
        assert r.returncode == 0, r.stderr
    assert len(first.messages) == 2 and len(second.messages) == 2


def test_all_dead_exits_75_with_one_line_per_provider(
    tmp_path: Path, state: Path, dead_port: int
) -> None:
    with SmtpServer(fail={"mail": "451 4.3.0 queue full"}) as busy:
        r = mailrelay(
            "--state",
            str(state),
            "--provider",
            f"smtp://127.0.0.1:{dead_port}?security=none&name=dead",
            "--provider",
            smtp_url(busy, "busy"),
            "send",
            "-r",
            "o@example.com",
            "-s",
            "x",
            "a@example.com",
        )
    assert r.returncode == 75
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("mailrelay: error: dead (smtp): transient: ")
    assert lines[1].startswith("mailrelay: error: busy (smtp): transient: ")
    assert "451" in lines[1] and "queue full" in lines[1]
    assert "try again later" in lines[2]


def test_permanent_error_stops_at_once_and_changes_no_cooldown(
    tmp_path: Path, state: Path, two_servers
) -> None:
    first, second = two_servers
    first.fail["rcpt"] = "550 5.1.1 no such user here"
    cfg = smtp_config(tmp_path, two_servers)
    r = mailrelay(
        "--config", str(cfg), "--state", str(state), "send", "-s", "x", "nobody@example.com"
    )
    assert r.returncode == 65
    assert "no such user here" in r.stderr and "not tried elsewhere" in r.stderr
    assert second.connections == 0
    entry = TomlStateStore(state).load().providers.get("relay1")
    assert entry is None or (entry.cooldown_until is None and entry.failed == 0)


def test_concurrent_sends_add_up(tmp_path: Path, state: Path) -> None:
    outbox = tmp_path / "outbox"
    args = [
        mailrelay_command(),
        "--state",
        str(state),
        "--provider",
        f"outbox://{outbox}",
        "send",
        "-r",
        "o@example.com",
        "-s",
        "x",
        "a@example.com",
    ]
    procs = [
        subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(20)
    ]
    for p in procs:
        _, err = p.communicate("body\n", timeout=120)
        assert p.returncode == 0, err
    loaded = TomlStateStore(state).load()
    assert loaded.providers["outbox"].sent == 20
    files = list(outbox.glob("*.eml"))
    assert len(files) == 20
    assert {f.stat().st_mode & 0o777 for f in files} == {0o600}
    assert state.stat().st_mode & 0o777 == 0o600


def test_corrupt_state_warns_and_mail_still_goes_out(tmp_path: Path, state: Path) -> None:
    state.parent.mkdir(parents=True)
    state.write_bytes(b"\x00\xffnot toml [[[")
    outbox = tmp_path / "outbox"
    r = mailrelay(
        "--state",
        str(state),
        "--provider",
        f"outbox://{outbox}",
        "send",
        "-r",
        "o@example.com",
        "-s",
        "x",
        "a@example.com",
    )
    assert r.returncode == 0
    assert "warning" in r.stderr and "moved" in r.stderr
    assert len(list(outbox.glob("*.eml"))) == 1
    assert TomlStateStore(state).load().providers["outbox"].sent == 1
    assert list(state.parent.glob("state.toml.corrupt-*"))


def test_a_slow_job_piped_into_send_is_read_to_its_end(tmp_path: Path, state: Path) -> None:
    outbox = tmp_path / "outbox"
    job = subprocess.Popen(
        # silent for a while, then the whole output: read to its end, never given up on
        ["sh", "-c", "sleep 1; echo 'first line after 1 s'; echo 'backup done'"],
        stdout=subprocess.PIPE,
    )
    assert job.stdout is not None
    send = subprocess.run(
        [
            mailrelay_command(),
            "--state",
            str(state),
            "--provider",
            f"outbox://{outbox}",
            "send",
            "-r",
            "o@example.com",
            "-s",
            "backup web1",
            "a@example.com",
        ],
        stdin=job.stdout,
        capture_output=True,
        text=True,
        timeout=120,
    )
    job.stdout.close()
    assert job.wait(timeout=60) == 0  # no SIGPIPE: the whole output was read
    assert send.returncode == 0, send.stderr
    assert send.stderr == ""
    [eml] = list(outbox.glob("*.eml"))
    body = eml.read_bytes()
    assert b"first line after 1 s" in body and b"backup done" in body


@pytest.mark.parametrize("body", ["", "\n"])
def test_skip_empty_sends_nothing_for_an_empty_body(tmp_path: Path, state: Path, body: str) -> None:
    outbox = tmp_path / "outbox"
    args = ["--state", str(state), "--provider", f"outbox://{outbox}", "send", "-E"]
    r = mailrelay(*args, "-r", "o@example.com", "-s", "x", "a@example.com", input=body)
    assert r.returncode == 0, r.stderr
    assert not outbox.exists() or not list(outbox.glob("*.eml"))
    r = mailrelay(*args, "-r", "o@example.com", "-s", "x", "a@example.com", input="output\n")
    assert r.returncode == 0, r.stderr
    assert len(list(outbox.glob("*.eml"))) == 1


def test_esp_503_fails_over_to_another_esp(tmp_path: Path, state: Path) -> None:
    from tests.esp.fake_postmark import FakePostmark
    from tests.esp.fake_sendgrid import FakeSendgrid

    with HTTPServer(host="127.0.0.1", port=0) as down, HTTPServer(host="127.0.0.1", port=0) as up:
        postmark, sendgrid = FakePostmark(), FakeSendgrid()
        postmark.install(down)
        sendgrid.install(up)
        for _ in range(3):
            postmark.fail_next(postmark.scenarios["server_error"].response())
        cfg = write_config(
            tmp_path / "config.toml",
            [
                postmark.config(server_base_url(down)),
                sendgrid.config(server_base_url(up)),
            ],
        )
        r = mailrelay(
            "--config",
            str(cfg),
            "--state",
            str(state),
            "-v",
            "send",
            "--json",
            "-s",
            "deploy done",
            "a@example.com",
        )
        assert r.returncode == 0, r.stderr
        import json

        doc = json.loads(r.stdout)
        assert [a["outcome"] for a in doc["attempts"]] == ["transient", "accepted"]
        assert doc["attempts"][0]["status"] >= 500
        assert doc["provider"] == sendgrid.config("x")["name"]
        assert len(sendgrid.sent) == 1 and postmark.sent == []
        for secret in (*postmark.secrets, *sendgrid.secrets):
            assert secret not in r.stdout + r.stderr


def test_tags_and_metadata_travel_as_headers_over_smtp(tmp_path: Path, state: Path) -> None:
    from email import message_from_bytes

    with shared_server() as server:
        r = mailrelay(
            "--state",
            str(state),
            "--provider",
            smtp_url(server, "relay"),
            "send",
            "-r",
            "o@example.com",
            "-s",
            "nightly",
            "--tag",
            "nightly",
            "--tag",
            "backup",
            "--metadata",
            "host=web1",
            "--metadata",
            "note=café",
            "a@example.com",
        )
        assert r.returncode == 0, r.stderr
        [got] = server.messages
    parsed = message_from_bytes(got.data, policy=__import__("email.policy").policy.default)
    assert parsed.get_all("X-Mailrelay-Tag") == ["nightly", "backup"]
    assert parsed.get_all("X-Mailrelay-Metadata") == ["host=web1", "note=café"]
    assert parsed["Subject"] == "nightly"
    entry = TomlStateStore(state).load().providers["relay"]
    assert entry.sent == 1 and entry.failed == 0
