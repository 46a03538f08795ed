"""The JSON-lines audit log: one line per attempt and per result, through the installed
command with failover across real servers; no secret, body or subject in it; 0600; safe
with threads and processes; an unwritable log never costs the mail."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from mailrelay.audit import MAX_ERROR, AuditLog, AuditLogError
from mailrelay.message import Address, Message
from mailrelay.providers.base import Outcome
from mailrelay.result import Attempt, SendResult
from mailrelay.secrets import remember
from tests.configfile import write_config
from tests.esp.fake_postmark import FakePostmark, pm_error
from tests.esp.fakebase import server_base_url
from tests.smtpserver import SmtpServer, shared_server
from tests.test_cli import run
from tests.test_e2e import mailrelay

PASSWORD = "smtp-Pw-4e1f!x"
USER = "ops@example.com"
SUBJECT = "Quarterly-Subject-7f3a"
BODY = "body-text-9c2d-never-logged"
ATTACHMENT = "attachment-bytes-51b0"


def records(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines]  # every line is a JSON document


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def toml_config(path: Path, providers: list[dict[str, Any]], **defaults: str) -> Path:
    return write_config(path, providers, defaults=defaults)


def test_failover_writes_one_line_per_attempt_and_one_result(
    tmp_path: Path, dead_port: int
) -> None:
    postmark = FakePostmark()
    # an error body that quotes the API key: the log must still not contain it
    postmark.fail_next(pm_error(500, 1, f"internal error for token {FakePostmark.TOKEN}"))
    att = tmp_path / "notes.txt"
    att.write_text(ATTACHMENT)
    log = tmp_path / "logs" / "nested" / "audit.jsonl"
    with (
        HTTPServer(host="127.0.0.1", port=0) as http,
        SmtpServer(tls="starttls", auth={USER: PASSWORD}) as smtp,
    ):
        postmark.install(http)
        cfg = toml_config(
            tmp_path / "config.toml",
            [
                postmark.config(server_base_url(http)),
                {
                    "name": "dead",
                    "type": "smtp",
                    "host": "127.0.0.1",
                    "port": dead_port,
                    "security": "none",
                    "timeout": 5,
                },
                {
                    "name": "relay",
                    "type": "smtp",
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "security": "starttls",
                    "ca_file": smtp.ca_file,
                    "username": USER,
                    "password": PASSWORD,
                    "timeout": 5,
                },
            ],
            policy="priority",
        )
        r = mailrelay(
            "--config",
            str(cfg),
            "--state",
            str(tmp_path / "state.toml"),
            "--log-file",
            str(log),
            "send",
            "-s",
            SUBJECT,
            "-a",
            str(att),
            "a@example.com",
            input=BODY,
        )
        assert r.returncode == 0, r.stderr
        assert len(smtp.messages) == 1
    got = records(log)
    assert [g["event"] for g in got] == ["attempt", "attempt", "attempt", "result"]
    first, second, third, result = got
    assert (first["provider"], first["outcome"], first["status"]) == ("postmark", "transient", 500)
    assert "internal error for token" in first["error"]
    assert (second["provider"], second["type"], second["outcome"]) == ("dead", "smtp", "transient")
    assert second["status"] is None and "refused" in second["error"]
    assert (third["provider"], third["outcome"], third["error"]) == ("relay", "accepted", None)
    assert result == {
        "time": result["time"],
        "event": "result",
        "message_id": first["message_id"],
        "delivered": True,
        "provider": "relay",
        "attempts": 3,
        "exit_code": 0,
    }
    for g in got:
        assert g["message_id"] == first["message_id"] and g["message_id"].startswith("<")
        assert g["time"].endswith("Z") and "T" in g["time"]
    for g in got[:3]:
        assert isinstance(g["latency_ms"], float) and g["latency_ms"] >= 0
    text = log.read_text()
    for secret in (PASSWORD, FakePostmark.TOKEN):
        assert secret not in text
    for private in (SUBJECT, BODY, ATTACHMENT):
        assert private not in text
    assert mode(log) == 0o600
    assert mode(log.parent) == 0o700 and mode(log.parent.parent) == 0o700


def test_log_file_from_the_config_and_appends(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    outbox = tmp_path / "outbox"
    cfg = toml_config(
        tmp_path / "config.toml",
        [{"type": "outbox", "path": str(outbox)}],
        log_file=str(log),
    )
    for n in range(2):
        r = run(["--config", str(cfg), "send", "-s", f"x{n}", "--text", "hi", "a@example.com"])
        assert r.code == 0, r.err
    got = records(log)
    assert [g["event"] for g in got] == ["attempt", "result"] * 2
    assert got[0]["message_id"] != got[2]["message_id"]
    assert got[1]["delivered"] is True and got[1]["provider"] == "outbox"


def test_a_failed_send_is_logged_with_its_exit_code(tmp_path: Path, dead_port: int) -> None:
    log = tmp_path / "audit.jsonl"
    r = run(
        [
            "--provider",
            f"smtp://127.0.0.1:{dead_port}?security=none&name=down",
            "--log-file",
            str(log),
            "send",
            "-r",
            "o@example.com",
            "-s",
            "x",
            "--text",
            "hi",
            "a@example.com",
        ]
    )
    assert r.code == 75
    attempt, result = records(log)
    assert attempt["outcome"] == "transient" and attempt["error"]
    assert result["delivered"] is False and result["provider"] is None
    assert result["exit_code"] == 75 and result["attempts"] == 1


def test_unwritable_log_is_one_warning_and_the_mail_goes_out(
    tmp_path: Path, dead_port: int
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    log = blocker / "audit.jsonl"  # its "folder" is a file: cannot be created, even by root
    with shared_server() as smtp:
        r = mailrelay(
            "--provider",
            f"smtp://127.0.0.1:{dead_port}?security=none&name=dead&timeout=5",
            "--provider",
            f"smtp://127.0.0.1:{smtp.port}?security=none&name=relay&timeout=5",
            "--state",
            str(tmp_path / "state.toml"),
            "--log-file",
            str(log),
            "send",
            "-r",
            "o@example.com",
            "-s",
            "x",
            "a@example.com",
        )
        assert r.returncode == 0, r.stderr
        assert len(smtp.messages) == 1
    warnings = [line for line in r.stderr.splitlines() if "audit log" in line]
    assert len(warnings) == 1, r.stderr  # two attempts and a result, but one warning
    assert f"audit log {log}: cannot write: Not a directory" in warnings[0]
    assert warnings[0] == f"mailrelay: warning: audit log {log}: cannot write: Not a directory"
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_permission_denied_is_a_warning(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    r = run(
        [
            "--provider",
            f"outbox://{tmp_path / 'outbox'}",
            "--log-file",
            str(locked / "audit.jsonl"),
            "send",
            "-r",
            "o@example.com",
            "-s",
            "x",
            "--text",
            "hi",
            "a@example.com",
        ]
    )
    assert r.code == 0
    assert f"audit log {locked / 'audit.jsonl'}: cannot write: Permission denied" in r.err
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


# --- the AuditLog itself --------------------------------------------------------------------


def message() -> Message:
    return Message(
        sender=Address("o@example.com"), to=[Address("a@example.com")], subject=SUBJECT, text=BODY
    )


def attempt(detail: str = "connection refused") -> Attempt:
    return Attempt("p", "smtp", Outcome.TRANSIENT, detail, 0.0123, status=None)


def test_secrets_are_scrubbed_again(tmp_path: Path) -> None:
    remember("hunter2-api-key")
    log = AuditLog(tmp_path / "a.jsonl")
    log.attempt(message(), attempt("401 for key hunter2-api-key"))
    (rec,) = records(tmp_path / "a.jsonl")
    assert rec["error"] == "401 for key ***"
    assert rec["latency_ms"] == 12.3


def test_a_failure_is_raised_once_then_kept_quiet(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)  # a folder: cannot be opened for writing
    with pytest.raises(AuditLogError, match="cannot write: Is a directory"):
        log.attempt(message(), attempt())
    log.attempt(message(), attempt())  # the same failure again: no second warning
    log.result(message(), SendResult("<x@example.com>", [attempt()]))


def test_an_existing_log_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    path.write_text("")
    path.chmod(0o640)
    AuditLog(path).attempt(message(), attempt())
    assert mode(path) == 0o640 and len(records(path)) == 1


def test_threads_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    msg = message()
    big = "x" * 20_000  # cut to MAX_ERROR in the record

    def worker(n: int) -> None:
        for i in range(40):
            log.attempt(msg, attempt(f"{n}-{i} {big}"))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    got = records(path)
    assert len(got) == 8 * 40
    # each record whole (errors are cut at MAX_ERROR characters, the same for all)
    expected = {f"{n}-{i} {big}"[:MAX_ERROR] for n in range(8) for i in range(40)}
    assert {g["error"] for g in got} == expected


def test_processes_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    code = (
        "import sys\n"
        "from mailrelay.audit import AuditLog\n"
        "from mailrelay.result import Attempt\n"
        "from mailrelay.message import Address, Message\n"
        "from mailrelay.providers.base import Outcome\n"
        "log = AuditLog(sys.argv[1])\n"
        "m = Message(sender=Address('o@example.com'), to=[Address('a@example.com')])\n"
        "for i in range(100):\n"
        "    log.attempt(m, Attempt('p', 'smtp', Outcome.TRANSIENT, sys.argv[2] * 900))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), letter]) for letter in "abcd"]
    for p in procs:
        assert p.wait(timeout=120) == 0
    got = records(path)
    assert len(got) == 400
    for g in got:
        assert len(set(g["error"])) == 1  # one writer's text, never mixed with another's
