"""The cron-and-scripts pieces together: sendmail mode and batches queue on a total outage,
a flush delivers what they queued exactly once, and the audit log hears of all of it."""

from __future__ import annotations

import json
from email import message_from_bytes
from pathlib import Path

from tests.smtpserver import SmtpServer
from tests.test_e2e import mailrelay
from tests.test_queue import SECRET, config, spool_files

CRON_MAIL = (
    "From: root (Cron Daemon)\n"
    "To: ops@example.com\n"
    "Bcc: audit@example.com\n"
    "Subject: Cron <root@web1> /usr/local/bin/backup\n"
    "Content-Type: text/plain; charset=UTF-8\n"
    "\n"
    "backup failed\n"
)
CRON_ARGV = ("sendmail", "-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root")


def test_sendmail_mode_queues_on_outage_and_a_flush_delivers_with_bcc(
    tmp_path: Path, dead_port: int
) -> None:
    log = tmp_path / "audit.jsonl"
    cfg = config(tmp_path, dead_port, log_file=str(log))
    r = mailrelay("--config", str(cfg), *CRON_ARGV, input=CRON_MAIL)
    assert r.returncode == 0, r.stderr  # accepted, as an MTA does: it is in the spool
    assert len(spool_files(tmp_path)) == 1
    with SmtpServer() as server:
        cfg = config(
            tmp_path,
            server.port,
            password=False,
            log_file=str(log),
        )
        r = mailrelay("--config", str(cfg), "queue", "flush", "--now", input=None)
        assert r.returncode == 0, r.stderr
        assert len(server.messages) == 1
        got = server.messages[0]
        assert sorted(got.rcpt_tos) == ["audit@example.com", "ops@example.com"]
        parsed = message_from_bytes(got.data)
        assert parsed["Bcc"] is None
        assert parsed["From"] == "CronDaemon <cron@example.com>"
        assert b"backup failed" in got.data
    assert spool_files(tmp_path) == []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    # the first try (refused) and the flush (accepted), each with its result line
    assert [r["event"] for r in records] == ["attempt", "result", "attempt", "result"]
    assert [r["outcome"] for r in records if r["event"] == "attempt"] == ["transient", "accepted"]
    assert len({r["message_id"] for r in records}) == 1
    assert SECRET not in log.read_text() and "backup failed" not in log.read_text()


def test_batch_queues_what_fails_for_now_and_flush_sends_each_once(
    tmp_path: Path, dead_port: int
) -> None:
    lines = [
        json.dumps({"from": "a@example.com", "to": f"u{i}@example.com", "subject": f"b{i}"})
        for i in range(6)
    ]
    lines.insert(3, '{"to": "not an address"')  # a bad line in the middle
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    cfg = config(tmp_path, dead_port)
    r = mailrelay("--config", str(cfg), "send", "--batch", str(batch), "--queue", "--json")
    assert r.returncode == 65, r.stderr  # the bad line; every good one is queued
    results = [json.loads(line) for line in r.stdout.splitlines()]
    assert sorted(d["line"] for d in results) == list(range(1, 8))
    bad = [d for d in results if "error" in d]
    assert [d["line"] for d in bad] == [4] and "batch.jsonl:4" in bad[0]["error"]
    assert all(d.get("queued") for d in results if "error" not in d)
    assert len(spool_files(tmp_path)) == 6
    with SmtpServer() as server:
        cfg = config(tmp_path, server.port, password=False)
        r = mailrelay("--config", str(cfg), "queue", "flush", "--now", input=None)
        assert r.returncode == 0, r.stderr
        subjects = sorted(message_from_bytes(m.data)["Subject"] for m in server.messages)
        assert subjects == [f"b{i}" for i in range(6)]
    assert spool_files(tmp_path) == []


def test_sendmail_mode_keeps_the_message_when_the_config_is_broken(tmp_path: Path) -> None:
    import os
    import re
    import shlex
    import stat

    broken = tmp_path / "broken.toml"
    broken.write_text('[defaults]\nfrom = "cron@example.com"\npolcy = "sticky"\n')
    r = mailrelay("--config", str(broken), *CRON_ARGV, input=CRON_MAIL)
    assert r.returncode == 78
    found = re.search(r"the message was kept in (\S+); send it again with: (.+) < ", r.stderr)
    assert found, r.stderr
    held = Path(found.group(1))
    assert held.read_bytes() == CRON_MAIL.encode()
    assert stat.S_IMODE(os.stat(held).st_mode) == 0o600
    with SmtpServer() as server:
        cfg = config(tmp_path, server.port, password=False)
        again = shlex.split(found.group(2))
        assert again[:2] == ["mailrelay", "sendmail"]
        r = mailrelay("--config", str(cfg), *again[1:], input=held.read_text())
        assert r.returncode == 0, r.stderr
        assert sorted(server.messages[0].rcpt_tos) == ["audit@example.com", "ops@example.com"]


def test_a_flush_sends_the_whole_queue_over_one_smtp_connection(
    tmp_path: Path, dead_port: int
) -> None:
    cfg = config(tmp_path, dead_port)
    for i in range(6):
        r = mailrelay("--config", str(cfg), "send", "--queue", "-s", f"q{i}", "ops@example.com")
        assert r.returncode == 0, r.stderr
    with SmtpServer() as server:
        cfg = config(tmp_path, server.port, password=False)
        r = mailrelay("--config", str(cfg), "queue", "flush", "--now", input=None)
        assert r.returncode == 0, r.stderr
        assert len(server.messages) == 6
        assert server.connections == 1
