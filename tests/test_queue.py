"""`send --queue` and `mailrelay queue ...` through the installed command, against aiosmtpd."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from pathlib import Path
from typing import Any

from tests.smtpserver import SmtpServer, shared_server
from tests.test_e2e import mailrelay, mailrelay_command, write_config

SECRET = "s3cret-Pa55-never-shown"


def config(tmp_path: Path, port: int, *, password: bool = True, **defaults: Any) -> Path:
    """One SMTP relay and a spool in tmp_path; with a password (to check that it never
    leaks) for the dead port, without one for the test server (which offers no AUTH)."""
    defaults.setdefault("spool_dir", str(tmp_path / "spool"))
    relay: dict[str, Any] = {
        "name": "relay",
        "type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "timeout": 3,
    }
    if password:
        relay.update(username="ops", password=SECRET)
    path = write_config(tmp_path / "config.toml", [relay], **defaults)
    path.chmod(0o600)  # a literal secret in a readable file would draw a warning
    return path


def spool_files(tmp_path: Path, folder: str = "") -> list[Path]:
    directory = tmp_path / "spool" / folder
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def queue_json(cfg: Path, *args: str) -> dict[str, Any]:
    r = mailrelay("--config", str(cfg), "queue", *args, "--json", input=None)
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def test_total_outage_then_two_flushes_deliver_each_message_once(
    tmp_path: Path, dead_port: int
) -> None:
    cfg = config(tmp_path, dead_port)
    for i in range(5):
        r = mailrelay("--config", str(cfg), "send", "--queue", "-s", f"m{i}", "ops@example.com")
        assert r.returncode == 0, r.stderr
        assert "queued as" in r.stderr and "queue flush" in r.stderr
    files = spool_files(tmp_path)
    assert len(files) == 5
    assert stat.S_IMODE(os.stat(tmp_path / "spool").st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f in files)
    for f in files:
        assert SECRET not in f.read_text()
    with shared_server() as server:
        cfg = config(tmp_path, server.port, password=False)
        argv = [mailrelay_command(), "--config", str(cfg), "queue", "flush", "--now"]
        procs = [
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outcomes = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), outcomes
        ids = [message_from_bytes(m.data)["Message-ID"] for m in server.messages]
        assert len(ids) == 5 and len(set(ids)) == 5, ids
        subjects = sorted(message_from_bytes(m.data)["Subject"] for m in server.messages)
        assert subjects == [f"m{i}" for i in range(5)]
    assert spool_files(tmp_path) == []
    r = mailrelay("--config", str(cfg), "queue", "flush", input=None)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")  # an empty spool is quiet


def test_on_failure_queue_in_the_config_and_no_queue_overrides(
    tmp_path: Path, dead_port: int
) -> None:
    cfg = config(tmp_path, dead_port, on_failure="queue")
    r = mailrelay("--config", str(cfg), "send", "-s", "x", "ops@example.com")
    assert r.returncode == 0 and "queued as" in r.stderr
    assert len(spool_files(tmp_path)) == 1
    r = mailrelay("--config", str(cfg), "send", "--no-queue", "-s", "y", "ops@example.com")
    assert r.returncode == 75 and "queued" not in r.stderr
    assert len(spool_files(tmp_path)) == 1
    r = mailrelay("--config", str(cfg), "-q", "send", "-s", "z", "ops@example.com")
    assert (r.returncode, r.stderr) == (0, "")  # -q: queued silently
    assert len(spool_files(tmp_path)) == 2


def test_send_queue_json_says_queued_and_without_queue_nothing_is_kept(
    tmp_path: Path, dead_port: int
) -> None:
    cfg = config(tmp_path, dead_port)
    r = mailrelay("--config", str(cfg), "send", "--queue", "--json", "-s", "x", "o@example.com")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["queued"] is True and doc["delivered"] is False and doc["exit_code"] == 0
    assert Path(doc["spool_file"]).name == f"{doc['queue_id']}.json"
    assert doc["attempts"][0]["outcome"] == "transient"
    assert SECRET not in r.stdout + r.stderr
    r = mailrelay("--config", str(cfg), "send", "-s", "x", "o@example.com")
    assert r.returncode == 75 and len(spool_files(tmp_path)) == 1


def test_a_permanent_refusal_is_not_queued(tmp_path: Path) -> None:
    with SmtpServer(fail={"rcpt": "550 5.1.1 no such user"}) as server:
        cfg = config(tmp_path, server.port, password=False)
        r = mailrelay("--config", str(cfg), "send", "--queue", "-s", "x", "nobody@example.com")
    assert r.returncode == 65, r.stderr
    assert "queued" not in r.stderr and spool_files(tmp_path) == []


def test_an_unwritable_spool_exits_73_and_does_not_claim_queued(
    tmp_path: Path, dead_port: int
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = config(tmp_path, dead_port, spool_dir=str(blocker / "spool"))
    r = mailrelay("--config", str(cfg), "send", "--queue", "-s", "x", "ops@example.com")
    assert r.returncode == 73
    assert "queued as" not in r.stderr and "connection refused" in r.stderr
    assert f"spool {blocker / 'spool'}" in r.stderr and "Traceback" not in r.stderr


def test_list_show_drop(tmp_path: Path, dead_port: int) -> None:
    cfg = config(tmp_path, dead_port)
    attach = tmp_path / "report.csv"
    attach.write_text("a,b\n1,2\n")
    r = mailrelay(
        "--config",
        str(cfg),
        "send",
        "--queue",
        "-s",
        "nightly report",
        "-b",
        "boss@example.com",
        "-a",
        str(attach),
        "--text",
        "BODY-TEXT-HERE",
        "ops@example.com",
    )
    assert r.returncode == 0, r.stderr
    listed = queue_json(cfg, "list")
    (entry,) = listed["messages"]
    ident = entry["id"]
    assert entry["subject"] == "nightly report" and entry["tries"] == 1
    assert entry["recipients"] == ["ops@example.com", "boss@example.com"]
    assert "connection refused" in entry["last_error"] and entry["due"] is False
    r = mailrelay("--config", str(cfg), "queue", "list", input=None)
    assert r.returncode == 0 and ident in r.stdout and "nightly report" in r.stdout
    assert "last error" in r.stdout
    shown = queue_json(cfg, "show", ident)
    assert shown["envelope"]["recipients"] == ["ops@example.com", "boss@example.com"]
    assert shown["message"]["bcc"] == ["boss@example.com"]
    assert len(shown["history"]) == 1 and "body" not in shown
    r = mailrelay("--config", str(cfg), "queue", "show", ident, input=None)
    assert r.returncode == 0 and "report.csv (text/csv" in r.stdout
    assert "BODY-TEXT-HERE" not in r.stdout and "connection refused" in r.stdout
    r = mailrelay("--config", str(cfg), "-v", "queue", "show", ident[:20], input=None)
    assert "BODY-TEXT-HERE" in r.stdout
    for out in (json.dumps(listed), json.dumps(shown), r.stdout, r.stderr):
        assert SECRET not in out
    r = mailrelay("--config", str(cfg), "queue", "show", "20991231T0", input=None)
    assert r.returncode == 66 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "no message 20991231T0" in r.stderr
    r = mailrelay("--config", str(cfg), "queue", "drop", "nope", input=None)
    assert r.returncode == 66 and r.stderr.count("\n") == 1
    r = mailrelay("--config", str(cfg), "queue", "drop", ident, input=None)
    assert r.returncode == 0 and f"dropped {ident} from the queue" in r.stderr
    assert queue_json(cfg, "list")["messages"] == [] and spool_files(tmp_path) == []


def test_bcc_and_attachments_survive_the_spool(tmp_path: Path, dead_port: int) -> None:
    cfg = config(tmp_path, dead_port)
    attach = tmp_path / "data.bin"
    attach.write_bytes(bytes(range(256)) * 4)
    r = mailrelay(
        "--config", str(cfg), "send", "--queue", "-s", "x", "-b", "boss@example.com",
        "-a", str(attach), "--text", "hello", "ops@example.com",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    with shared_server() as server:
        cfg = config(tmp_path, server.port, password=False)
        r = mailrelay("--config", str(cfg), "queue", "flush", "--now", "--json", input=None)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["sent"] == 1 and doc["messages"][0]["outcome"] == "sent"
        (received,) = server.messages
    assert sorted(received.rcpt_tos) == ["boss@example.com", "ops@example.com"]
    parsed = message_from_bytes(received.data)
    assert parsed["Bcc"] is None and b"boss@example.com" not in received.data
    (part,) = [p for p in parsed.walk() if p.get_filename() == "data.bin"]
    assert part.get_payload(decode=True) == bytes(range(256)) * 4


def test_backoff_flush_skips_and_flush_now_tries(tmp_path: Path, dead_port: int) -> None:
    cfg = config(tmp_path, dead_port)
    assert mailrelay("--config", str(cfg), "send", "--queue", "o@example.com").returncode == 0
    r = mailrelay("--config", str(cfg), "queue", "flush", "--json", input=None)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["not_due"] == 1
    r = mailrelay("--config", str(cfg), "queue", "flush", "-q", input=None)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")  # cron: nothing due, silent
    r = mailrelay("--config", str(cfg), "queue", "flush", "--now", input=None)
    assert r.returncode == 75 and "still queued" in r.stderr and SECRET not in r.stderr
    (entry,) = queue_json(cfg, "list")["messages"]
    assert entry["tries"] == 2
    created = datetime.fromisoformat(entry["created"].replace("Z", "+00:00"))
    wait = datetime.fromisoformat(entry["next_try"].replace("Z", "+00:00")) - created
    assert timedelta(seconds=540) <= wait < timedelta(seconds=700)  # 300 s doubled, less jitter


def test_past_max_age_flush_moves_to_failed_and_reports(tmp_path: Path, dead_port: int) -> None:
    cfg = config(tmp_path, dead_port)
    assert mailrelay("--config", str(cfg), "send", "--queue", "o@example.com").returncode == 0
    (path,) = spool_files(tmp_path)
    doc = json.loads(path.read_text())
    doc["created"] = (datetime.now(timezone.utc) - timedelta(days=6)).isoformat()
    path.write_text(json.dumps(doc))
    r = mailrelay("--config", str(cfg), "queue", "flush", "-q", input=None)
    assert r.returncode == 69
    assert "moved to failed/" in r.stderr and doc["id"] in r.stderr and "expired" in r.stderr
    assert spool_files(tmp_path) == [] and len(spool_files(tmp_path, "failed")) == 1
    failed = queue_json(cfg, "list", "--failed")["messages"]
    assert [m["id"] for m in failed] == [doc["id"]] and "expired" in failed[0]["failed_reason"]
    r = mailrelay("--config", str(cfg), "queue", "drop", doc["id"], input=None)
    assert r.returncode == 0 and "from failed/" in r.stderr


def test_a_corrupt_spool_file_is_reported_and_the_rest_sent(tmp_path: Path, dead_port: int) -> None:
    cfg = config(tmp_path, dead_port)
    assert mailrelay("--config", str(cfg), "send", "--queue", "o@example.com").returncode == 0
    bad = tmp_path / "spool" / "00000000T000000.000000Z-bad.json"
    bad.write_bytes(b"\xff\xfe not json")
    with shared_server() as server:
        cfg = config(tmp_path, server.port, password=False)
        r = mailrelay("--config", str(cfg), "queue", "flush", "--now", input=None)
        assert len(server.messages) == 1
    assert r.returncode == 69
    assert "00000000T000000.000000Z-bad.json was unreadable" in r.stderr
    assert (tmp_path / "spool" / "corrupt" / bad.name).read_bytes() == b"\xff\xfe not json"
    assert spool_files(tmp_path) == []
