"""The cron-and-scripts pieces together: sendmail mode and batches queue on a total outage,
a flush delivers what they queued exactly once, and the audit log hears of all of it."""

from __future__ import annotations

import json
from email import message_from_bytes
from pathlib import Path

from tests.smtpserver import shared_server
from tests.test_e2e import mailrelay, mailrelay_command, write_config
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
    with shared_server() as server:
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
    with shared_server() as server:
        cfg = config(tmp_path, server.port, password=False)
        r = mailrelay("--config", str(cfg), "queue", "flush", "--now", input=None)
        assert r.returncode == 0, r.stderr
        subjects = sorted(message_from_bytes(m.data)["Subject"] for m in server.messages)
        assert subjects == [f"b{i}" for i in range(6)]
    assert spool_files(tmp_path) == []


def _sendmail_command() -> str:
    return str(Path(mailrelay_command()).with_name("mailrelay-sendmail"))


def _default_config(home: Path) -> Path:
    return home / ".config" / "mailrelay" / "config.toml"


def test_crons_exact_call_with_no_config_is_held_then_flushed_once(
    tmp_path: Path, isolated_user_dirs: Path
) -> None:
    import subprocess

    argv = [_sendmail_command(), *CRON_ARGV[1:]]
    r = subprocess.run(argv, input=CRON_MAIL, capture_output=True, text=True, timeout=60)
    assert r.returncode == 78, r.stderr  # held: the configuration does not allow sending
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no usable From" in lines[0] and "held as " in lines[0], r.stderr
    listed = mailrelay("queue", "list", "--json", input=None)
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert doc["held"] == 1 and doc["messages"][0]["held"] is True
    assert "no usable From" in doc["messages"][0]["reason"]
    assert doc["messages"][0]["subject"] == "Cron <root@web1> /usr/local/bin/backup"
    human = mailrelay("queue", "list", input=None)
    assert "held: " in human.stdout + human.stderr
    with shared_server() as server:
        cfg = _default_config(isolated_user_dirs)
        cfg.parent.mkdir(parents=True)
        write_config(
            cfg,
            [
                {
                    "type": "smtp",
                    "host": "127.0.0.1",
                    "port": server.port,
                    "security": "none",
                    "name": "relay",
                }
            ],
        )
        r = mailrelay("queue", "flush", input=None)
        assert r.returncode == 0, r.stderr
        r = mailrelay("queue", "flush", "--now", input=None)  # nothing left to send twice
        assert r.returncode == 0, r.stderr
        assert len(server.messages) == 1
        got = server.messages[0]
        assert sorted(got.rcpt_tos) == ["audit@example.com", "ops@example.com"]
        assert message_from_bytes(got.data)["From"] == "CronDaemon <cron@example.com>"
        assert b"backup failed" in got.data
    listed = mailrelay("queue", "list", "--json", input=None)
    assert json.loads(listed.stdout)["count"] == 0


def test_sendmail_mode_holds_the_message_when_the_config_is_broken(tmp_path: Path) -> None:
    import os
    import stat

    broken = tmp_path / "broken.toml"
    broken.write_text('[defaults]\nfrom = "cron@example.com"\npolcy = "sticky"\n')
    r = mailrelay("--config", str(broken), *CRON_ARGV, input=CRON_MAIL)
    assert r.returncode == 78
    assert len(r.stderr.strip().splitlines()) == 1 and "held as" in r.stderr, r.stderr
    still = mailrelay("--config", str(broken), "queue", "flush", input=None)
    assert still.returncode == 78  # the config still cannot be read
    with shared_server() as server:
        cfg = config(tmp_path, server.port, password=False)
        listed = json.loads(mailrelay("--config", str(cfg), "queue", "list", "--json").stdout)
        assert listed["held"] == 1
        held = Path(listed["messages"][0]["id"])
        held_files = [p for p in (tmp_path / "home").rglob("held/*.json") if p.stem == held.name]
        assert len(held_files) == 1
        assert stat.S_IMODE(os.stat(held_files[0]).st_mode) == 0o600
        r = mailrelay("--config", str(cfg), "queue", "flush", input=None)
        assert r.returncode == 0, r.stderr
        assert sorted(server.messages[0].rcpt_tos) == ["audit@example.com", "ops@example.com"]
        assert not held_files[0].exists()


def test_a_held_message_sent_again_by_hand_does_not_stay_held(
    tmp_path: Path, isolated_user_dirs: Path
) -> None:
    import base64

    r = mailrelay(*CRON_ARGV, input=CRON_MAIL)  # no config: held
    assert r.returncode == 78, r.stderr
    [held] = list(isolated_user_dirs.rglob("held/*.json"))
    raw = base64.b64decode(json.loads(held.read_text())["raw"])
    with shared_server() as server:
        cfg = config(tmp_path, server.port, password=False)
        r = mailrelay("--config", str(cfg), *CRON_ARGV, input=raw.decode())
        assert r.returncode == 0, r.stderr
        assert not held.exists()  # the copy sent by hand is the held one: not kept to resend
        r = mailrelay("--config", str(cfg), "queue", "flush", "--now", input=None)
        assert r.returncode == 0, r.stderr
        assert len(server.messages) == 1


def test_a_flush_sends_the_whole_queue_over_one_smtp_connection(
    tmp_path: Path, dead_port: int
) -> None:
    cfg = config(tmp_path, dead_port)
    for i in range(6):
        r = mailrelay("--config", str(cfg), "send", "--queue", "-s", f"q{i}", "ops@example.com")
        assert r.returncode == 0, r.stderr
    with shared_server() as server:
        cfg = config(tmp_path, server.port, password=False)
        r = mailrelay("--config", str(cfg), "queue", "flush", "--now", input=None)
        assert r.returncode == 0, r.stderr
        assert len(server.messages) == 6
        assert server.connections == 1


def test_a_long_batch_against_a_dead_relay_queues_all_and_a_flush_sends_each_once(
    tmp_path: Path, dead_port: int
) -> None:
    count = 1100  # past 1024 consecutive failures of one provider
    batch = tmp_path / "long.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"from": "a@example.com", "to": "ops@example.com", "subject": f"n{i}"})
            + "\n"
            for i in range(count)
        )
    )
    cfg = config(tmp_path, dead_port)
    r = mailrelay(
        "--config", str(cfg), "send", "--batch", str(batch), "--queue", input=None, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "internal error" not in r.stderr
    assert len(spool_files(tmp_path)) == count
    r = mailrelay("--config", str(cfg), *CRON_ARGV, input=CRON_MAIL)  # cron, after the storm
    assert r.returncode == 0, r.stderr
    with shared_server() as server:
        cfg = config(tmp_path, server.port, password=False)
        r = mailrelay("--config", str(cfg), "queue", "flush", "--now", input=None, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        subjects = [message_from_bytes(m.data)["Subject"] for m in server.messages]
        assert len(subjects) == count + 1
        assert sorted(s for s in subjects if s.startswith("n")) == sorted(
            f"n{i}" for i in range(count)
        )
    assert spool_files(tmp_path) == []


def test_root_at_localhost_through_sendmail_t_skips_the_api_and_goes_by_smtp(
    tmp_path: Path, dead_port: int
) -> None:
    from mailrelay.state import TomlStateStore

    local_mail = CRON_MAIL.replace("ops@example.com", "root@localhost").replace(
        "audit@example.com", "ops@[127.0.0.1]"
    )
    state = tmp_path / "state.toml"
    with shared_server() as server:
        api = {
            "type": "postmark",
            "name": "api",
            "server_token": "t",
            "base_url": f"http://127.0.0.1:{dead_port}",
        }
        smtp = {"type": "smtp", "host": "127.0.0.1", "port": server.port, "security": "none"}
        cfg = write_config(tmp_path / "c.toml", [api, smtp])
        r = mailrelay(
            "--config", str(cfg), "--state", str(state), "-v", *CRON_ARGV, input=local_mail
        )
        assert r.returncode == 0, r.stderr
        assert "cannot deliver to or from the local address" in r.stderr
        [got] = server.messages
        assert sorted(got.rcpt_tos) == ["ops@[127.0.0.1]", "root@localhost"]
    api_state = TomlStateStore(state).load().providers.get("api")
    assert api_state is None or (api_state.failed == 0 and api_state.last_error is None)
    for address in ("root@localhost", "ops@host.local", "ops@[127.0.0.1]"):
        r = mailrelay("--config", str(cfg), "send", "--dry-run", "-s", "x", "--text", "y", address)
        assert r.returncode == 0, r.stderr


def _freeze(folder: Path) -> bool:
    """Make `folder` refuse new and removed entries (root: chattr +i; else chmod 0500)."""
    import os
    import subprocess

    if os.geteuid() != 0:
        folder.chmod(0o500)
        return True
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


def _thaw(folder: Path) -> None:
    import os
    import subprocess

    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o700)


def test_a_spool_that_cannot_be_written_after_acceptance_never_sends_twice(
    tmp_path: Path, dead_port: int
) -> None:
    import pytest

    cfg = config(tmp_path, dead_port)
    r = mailrelay("--config", str(cfg), "send", "--queue", "-s", "once", "ops@example.com")
    assert r.returncode == 0, r.stderr
    spool = tmp_path / "spool"
    with shared_server() as server:
        cfg = config(tmp_path, server.port, password=False)
        if not _freeze(spool):
            pytest.skip("no way to make a folder unwritable here (chattr)")
        try:
            r = mailrelay("--config", str(cfg), "queue", "flush", "--now", input=None)
            assert r.returncode == 0, r.stderr  # sent: the exit says so
            assert "marked as sent" in r.stderr, r.stderr
            for _ in range(2):  # later flushes while the folder is still unwritable
                r = mailrelay("--config", str(cfg), "queue", "flush", "--now", input=None)
                assert r.returncode == 0, r.stderr
            assert len(spool_files(tmp_path)) == 1  # could not be removed yet
        finally:
            _thaw(spool)
        r = mailrelay("--config", str(cfg), "queue", "flush", "--now", input=None)
        assert r.returncode == 0, r.stderr
        assert len(server.messages) == 1  # once, never again
    assert spool_files(tmp_path) == []
