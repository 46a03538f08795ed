"""GET /v1/messages/<id> and `mailrelay status --message ID`: the send's result per
recipient, then the provider's events (a Postmark fake on loopback takes the send, its
webhook reports the delivery and the bounce)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer

from tests import webhooksigning as sign
from tests.test_e2e import mailrelay
from tests.test_serve import AUTH, CountingPostmark, config

BASIC = [sign.BASIC]


def postmark_event(record_type: str, recipient: str, message_id: str, **extra: Any) -> bytes:
    doc = {"RecordType": record_type, "MessageID": message_id, "Recipient": recipient}
    doc.update(extra)
    return json.dumps(doc).encode()


def test_a_message_reads_accepted_then_each_recipient_as_its_events_say(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    from mailrelay.config import load_settings
    from mailrelay.serve.app import create_app

    fake = CountingPostmark(httpserver)
    provider = {**fake.provider(), "webhook_basic_auth": BASIC}
    cfg = config(tmp_path, [provider])
    state = tmp_path / "data" / "state.toml"
    app = create_app(load_settings(cfg), state=str(state), log=False)
    client = app.test_client()
    doc = {"to": ["a@example.org", "b@example.org"], "subject": "s", "text": "t"}
    sent = client.post("/v1/messages", json=doc, headers=AUTH)
    assert sent.status_code == 200, sent.get_json()
    message_id = sent.get_json()["message_id"]

    status = client.get(f"/v1/messages/{message_id}", headers=AUTH).get_json()
    assert status["status"] == "accepted" and status["provider"] == "pm"
    assert status["provider_message_id"] == "pm-1"
    assert {r: e["status"] for r, e in status["recipients"].items()} == {
        "a@example.org": "accepted",
        "b@example.org": "accepted",
    }

    hook = {**sign.basic_header(), "Content-Type": "application/json"}
    delivered = postmark_event(
        "Delivery", "a@example.org", "pm-1", DeliveredAt="2026-12-04T10:00:00Z"
    )
    bounced = postmark_event(
        "Bounce", "b@example.org", "pm-1", ID=42, Type="HardBounce", Email="b@example.org",
        BouncedAt="2026-12-04T10:01:00Z", Description="unknown user",
    )  # fmt: skip
    for body in (delivered, bounced):
        assert client.post("/v1/webhooks/pm", data=body, headers=hook).status_code == 200

    status = client.get(f"/v1/messages/{message_id}", headers=AUTH).get_json()
    assert {r: e["status"] for r, e in status["recipients"].items()} == {
        "a@example.org": "delivered",
        "b@example.org": "bounced",
    }
    assert client.get(f"/v1/messages/{message_id}").status_code == 401  # the token is needed
    assert client.get("/v1/messages/nope@example.org", headers=AUTH).status_code == 404

    args = ["--config", str(cfg), "--state", str(state), "status"]
    shown = mailrelay(*args, "--message", message_id, "--json", input=None)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["recipients"]["b@example.org"]["status"] == "bounced"
    unknown = mailrelay(*args, "--message", "<nope@example.org>", input=None)
    assert unknown.returncode == 66 and "no status kept" in unknown.stderr


def test_an_ambiguous_send_an_ses_event_shows_delivered_reads_delivered(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from mailrelay.events.model import Event
    from mailrelay.events.status import StatusLog
    from mailrelay.message import Address, Message
    from mailrelay.providers.base import Outcome
    from mailrelay.result import Attempt, SendResult
    from mailrelay.state.records import FileRecordStore

    log = StatusLog(FileRecordStore(tmp_path / "r"), keep=3600)
    message = Message(Address("cron@example.com"), to=[Address("a@example.org")])
    lost = Attempt("ses1", "ses", Outcome.AMBIGUOUS, "read timeout")
    log.result(message, SendResult(message.message_id, [lost]))
    assert log.lookup(message.message_id)["status"] == "ambiguous"  # type: ignore[index]
    event = Event(
        "ses1", "ses", "delivered", "e1", datetime.now(timezone.utc), "a@example.org",
        "0100-ses-id", rfc_message_id=message.message_id,
    )  # fmt: skip
    log.apply(event)
    doc = log.lookup(message.message_id)
    assert doc is not None and doc["recipients"]["a@example.org"]["status"] == "delivered"


def test_recipients_mandrill_refused_in_its_answer_read_rejected(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    from mailrelay.config import load_settings
    from mailrelay.serve.app import create_app
    from tests.esp.fake_mandrill import FakeMandrill
    from tests.esp.fakebase import server_base_url

    fake = FakeMandrill()
    fake.install(httpserver)
    fake.rejects["b@example.org"] = "hard-bounce"
    cfg = config(tmp_path, [fake.config(server_base_url(httpserver))])
    app = create_app(load_settings(cfg), state=str(tmp_path / "state.toml"), log=False)
    client = app.test_client()
    doc = {"to": ["a@example.org", "b@example.org"], "subject": "s", "text": "t"}
    sent = client.post("/v1/messages", json=doc, headers=AUTH).get_json()
    assert sent["attempts"][0]["refused"] == {
        "b@example.org": "b@example.org rejected (hard-bounce)"
    }
    status = client.get(f"/v1/messages/{sent['message_id']}", headers=AUTH).get_json()
    assert {r: e["status"] for r, e in status["recipients"].items()} == {
        "a@example.org": "accepted",
        "b@example.org": "rejected",
    }
