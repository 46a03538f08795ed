"""The routes of `mailrelay serve` through Flask's test client (`app.test_client()`): the
HTTP status of every outcome (200, 202, 400, 401, 409, 413, 415, 422, 502, 503), auth, the
problem documents, the routes against the OpenAPI document. The providers are real loopback
servers or the outbox. What needs gunicorn itself (signals, workers, the flusher, slow
clients) is in test_serve.py and test_hostile_serve.py."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug.test import TestResponse

from tests.smtpserver import SmtpServer
from tests.test_e2e import mailrelay_command
from tests.test_serve import (
    AUTH,
    MESSAGE,
    TOKEN,
    CountingPostmark,
    config,
    dead_smtp,
    outbox,
    outbox_messages,
    smtp,
)


class Client:
    """The service of one config, answered in this process by Flask's test client."""

    def __init__(self, tmp: Path, cfg: Path, *, log: bool = False) -> None:
        from mailrelay.config import load_settings
        from mailrelay.serve.app import create_app

        self.state = tmp / "data" / "state.toml"
        self.app = create_app(load_settings(str(cfg)), state=str(self.state), log=log)
        self.http: FlaskClient = self.app.test_client()

    def post(
        self,
        path: str = "/v1/messages",
        doc: Any = MESSAGE,
        *,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        headers = {**AUTH, **(headers or {})}
        if data is None:
            return self.http.post(path, json=doc, headers=headers)
        return self.http.post(path, data=data, headers=headers)

    def get(self, path: str, headers: dict[str, str] = AUTH) -> TestResponse:
        return self.http.get(path, headers=headers)

    def stop(self) -> None:
        self.app.extensions["mailrelay"].close()  # as a worker does when it exits


def basic(user: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.stop()


def start(
    clients: list[Client], tmp: Path, providers: list[dict[str, Any]], log: bool = False, **kw: Any
) -> Client:
    client = Client(tmp, config(tmp, providers, **kw), log=log)
    clients.append(client)
    return client


# --- the table -----------------------------------------------------------------------------


def test_send_json_is_200_with_the_send_json_document(
    tmp_path: Path, clients: list[Client], capsys: pytest.CaptureFixture[str]
) -> None:
    server = start(clients, tmp_path, [outbox(tmp_path)], log=True)
    r = server.post()
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    doc = r.json
    assert doc["delivered"] is True and doc["provider"] == "box" and doc["exit_code"] == 0
    assert len(outbox_messages(tmp_path)) == 1
    log = capsys.readouterr().err
    assert '"POST /v1/messages" 200' in log
    assert TOKEN not in log and "disk" not in log  # no secrets, no subjects in the log


def test_raw_message_takes_recipients_from_to_cc_bcc(tmp_path: Path, clients: list[Client]) -> None:
    server = start(clients, tmp_path, [outbox(tmp_path)])
    raw = (
        b"From: cron@example.com\r\nTo: a@example.com\r\nCc: b@example.com\r\n"
        b"Bcc: hidden@example.com\r\nSubject: raw\r\n\r\nhello\r\n"
    )
    r = server.post("/v1/messages/raw", data=raw, headers={"Content-Type": "message/rfc822"})
    assert r.status_code == 200, r.text
    (saved,) = outbox_messages(tmp_path)
    assert b"X-Envelope-To: a@example.com, b@example.com, hidden@example.com" in saved.replace(
        b"\r\n ", b" "
    )
    assert b"Bcc:" not in saved


def test_bad_json_and_schema_errors_are_400_problems(tmp_path: Path, clients: list[Client]) -> None:
    server = start(clients, tmp_path, [outbox(tmp_path)])
    r = server.post("/v1/messages", data=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/problem+json"
    assert "not valid JSON" in r.json["detail"]
    r = server.post(doc={"to": [1], "subject": "x"})
    assert r.status_code == 400
    problem = r.json
    assert problem["status"] == 400 and problem["title"]
    assert problem["errors"] == [{"path": "to[0]", "message": "expected a string, got a number"}]
    assert problem["detail"] == "request body: to[0]: expected a string, got a number"
    # the server's files are not the client's to attach
    r = server.post(doc={**MESSAGE, "attachments": [{"path": "/etc/passwd"}]})
    assert r.status_code == 400
    assert r.json["errors"][0]["path"] == "attachments[0].path"
    assert outbox_messages(tmp_path) == []


def test_auth_401_with_www_authenticate(tmp_path: Path, clients: list[Client]) -> None:
    server = start(clients, tmp_path, [outbox(tmp_path)])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic !!"}):
        r = server.post(headers=headers | ({} if headers else {"Authorization": ""}))
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="mailrelay"'
        assert r.headers["Content-Type"] == "application/problem+json"
    for path in ("/v1/providers", "/v1/status", "/metrics"):
        assert server.get(path, headers={}).status_code == 401
    page = server.get("/", headers={})
    assert page.status_code == 401 and page.headers["WWW-Authenticate"].startswith("Basic ")
    assert server.get("/", headers=basic("any", TOKEN)).status_code == 200
    for path in ("/healthz", "/readyz", "/openapi.json", "/api"):
        assert server.get(path, headers={}).status_code == 200, path
    assert outbox_messages(tmp_path) == []


def test_413_and_415(tmp_path: Path, clients: list[Client]) -> None:
    server = start(clients, tmp_path, [outbox(tmp_path)])
    big = {**MESSAGE, "text": "x" * 300_000}
    r = server.post(doc=big)
    assert r.status_code == 413
    assert "max_request_bytes" in r.json["detail"]
    r = server.post("/v1/messages", data="hi", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.headers["Content-Type"] == "application/problem+json"
    r = server.post("/v1/messages/raw")
    assert r.status_code == 415
    assert outbox_messages(tmp_path) == []


def test_422_when_the_provider_refuses_the_message(tmp_path: Path, clients: list[Client]) -> None:
    with SmtpServer(fail={"rcpt": "550 5.1.1 no such user"}) as relay:
        server = start(clients, tmp_path, [smtp(relay)])
        r = server.post()
    assert r.status_code == 422
    problem = r.json
    assert "no such user" in problem["detail"]
    assert problem["result"]["exit_code"] == 65


def test_502_when_every_provider_fails_none_temporarily(
    tmp_path: Path, clients: list[Client], httpserver: HTTPServer
) -> None:
    pm = CountingPostmark(httpserver).provider("wrong-token-123")
    server = start(clients, tmp_path, [pm])
    r = server.post()
    assert r.status_code == 502, r.text
    assert r.json["result"]["exit_code"] == 69


def test_503_with_retry_after_then_fast_path_without_contacting(
    tmp_path: Path, clients: list[Client]
) -> None:
    with SmtpServer(fail={"mail": "451 4.3.0 try later"}) as relay:
        server = start(clients, tmp_path, [smtp(relay)], cooldown=120)
        r = server.post()
        assert r.status_code == 503, r.text
        assert 1 <= int(r.headers["Retry-After"]) <= 120
        assert relay.connections == 1
        # now the only provider rests: answered at once by every worker, the relay not
        # contacted again (the failed send was this cooldown period's one request)
        answers = [server.post() for _ in range(8)]
        assert all(a.status_code == 503 for a in answers)
        assert all(1 <= int(a.headers["Retry-After"]) <= 120 for a in answers)
        assert relay.connections == 1
        for a in answers:  # answered before a message was built: no result, no Message-ID
            doc = a.json
            assert doc["title"] == "Every provider is resting" and "result" not in doc
            assert "(relay)" in doc["detail"] and "none was tried" in doc["detail"]
        assert server.get("/readyz").status_code == 503


def test_while_every_provider_rests_bad_input_is_still_400_and_keys_are_not_kept(
    tmp_path: Path, clients: list[Client]
) -> None:
    server = start(clients, tmp_path, [dead_smtp()], cooldown=300)
    assert server.post().status_code == 503  # the probe of this period: tried, failed
    resting = server.post()
    assert resting.status_code == 503 and "result" not in resting.json
    # not JSON, or not the schema: the client's fault says so at once, outage or not
    r = server.post("/v1/messages", data=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json["detail"]
    r = server.post(doc={"to": [1], "subject": "x"})
    assert r.status_code == 400
    assert r.json["errors"] == [{"path": "to[0]", "message": "expected a string, got a number"}]
    # a raw message is read only when it can be sent
    r = server.post(
        "/v1/messages/raw",
        data=b"From: a@example.com\r\nTo: b@example.com\r\n\r\nhi\r\n",
        headers={"Content-Type": "message/rfc822"},
    )
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    # a resting 503 is "try again later": the key is free for the retry, not replayed
    key = {"Idempotency-Key": "resting-1"}
    first = server.post(headers=key)
    assert first.status_code == 503 and "Idempotent-Replayed" not in first.headers
    again = server.post(headers=key)
    assert again.status_code == 503 and "Idempotent-Replayed" not in again.headers


def test_202_when_the_spool_takes_it(tmp_path: Path, clients: list[Client]) -> None:
    server = start(
        clients, tmp_path, [dead_smtp()], on_failure="queue", spool_dir=str(tmp_path / "spool")
    )
    for _ in range(2):  # the second one takes the fast path (provider cooling): queued too
        r = server.post()
        assert r.status_code == 202, r.text
        doc = r.json
        assert doc["queued"] and doc["exit_code"] == 0
    assert len(list((tmp_path / "spool").glob("*.json"))) == 2


def test_202_is_counted_queued_once_like_send(tmp_path: Path, clients: list[Client]) -> None:
    from mailrelay.state import TomlStateStore

    server = start(
        clients, tmp_path, [dead_smtp()], on_failure="queue", spool_dir=str(tmp_path / "spool")
    )
    assert server.post().status_code == 202
    server.stop()  # the worker's counters go to the file
    assert TomlStateStore(server.state).load().messages == {"queued": 1}


def test_503_when_queuing_is_on_and_the_spool_cannot_be_written(
    tmp_path: Path, clients: list[Client]
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool directory should be\n")
    server = start(
        clients, tmp_path, [dead_smtp()], on_failure="queue", spool_dir=str(blocker / "spool")
    )
    r = server.post()
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1
    problem = r.json
    assert "not queued" in problem["detail"] and "spool" in problem["detail"]
    assert problem["result"]["delivered"] is False
    assert blocker.read_text().startswith("a file")


def test_every_route_is_documented_and_every_operation_exists(tmp_path: Path) -> None:
    from mailrelay.config import load_settings
    from mailrelay.serve.app import create_app
    from mailrelay.serve.openapi import documented_routes

    settings = load_settings(config(tmp_path, [outbox(tmp_path)]))
    app = create_app(settings, state=str(tmp_path / "state.toml"), log=False)
    routes = {
        (method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))  # /x/<path:id>: /x/{id}
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert routes == documented_routes()


def test_same_message_through_send_message_and_the_api(
    tmp_path: Path, clients: list[Client]
) -> None:
    doc = {
        **MESSAGE,
        "cc": ["Boss <boss@example.com>"],
        "headers": {"X-Job": "backup"},
        "tags": ["ops"],
        "html": "<p>web1: <b>disk</b></p>",
        "attachments": [
            {"filename": "df.txt", "content_base64": base64.b64encode(b"/dev/sda1 91%\n").decode()}
        ],
    }
    server = start(clients, tmp_path, [outbox(tmp_path)])
    assert server.post(doc=doc).status_code == 200
    msg_file = tmp_path / "alert.json"
    msg_file.write_text(json.dumps(doc))
    cfg = tmp_path / "config.toml"
    cli = subprocess.run(
        [
            mailrelay_command(),
            "--config",
            str(cfg),
            "--state",
            str(server.state),
            "send",
            "--message",
            str(msg_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    api, sent = outbox_messages(tmp_path)[:2]

    def normal(raw: bytes) -> list[tuple[str, str]]:
        msg = message_from_bytes(raw)
        boundary = msg.get_boundary() or ""
        out = []
        for part in msg.walk():
            for name, value in part.items():
                if name.lower() in ("message-id", "date", "x-envelope-to", "return-path"):
                    continue
                out.append((name, str(value).replace(part.get_boundary() or boundary, "B")))
            if not part.is_multipart():
                out.append(("body", str(part.get_payload())))
        return out

    assert len(outbox_messages(tmp_path)) == 2
    assert normal(api) == normal(sent)


def test_409_while_the_key_is_in_flight_then_422_for_another_body(
    tmp_path: Path, clients: list[Client]
) -> None:
    from mailrelay.serve.keys import fingerprint

    server = start(clients, tmp_path, [outbox(tmp_path)])
    key = "order-4711-confirmation"
    body = json.dumps(MESSAGE).encode()
    keys = server.app.extensions["mailrelay"].keys
    # another thread of this worker holds the key: its send has not ended
    assert keys.begin(key, fingerprint(b"POST", b"/v1/messages", body)).kind == "new"
    busy = server.post(
        data=body, headers={"Idempotency-Key": key, "Content-Type": "application/json"}
    )
    assert busy.status_code == 409 and busy.headers["Content-Type"] == "application/problem+json"
    assert "still in flight" in busy.json["detail"]
    assert outbox_messages(tmp_path) == []
    keys.release(key)
    first = server.post(
        data=body, headers={"Idempotency-Key": key, "Content-Type": "application/json"}
    )
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    again = server.post(
        data=body, headers={"Idempotency-Key": key, "Content-Type": "application/json"}
    )
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json and len(outbox_messages(tmp_path)) == 1
    other = server.post(doc={**MESSAGE, "subject": "other"}, headers={"Idempotency-Key": key})
    assert other.status_code == 422 and "another request body" in other.json["detail"]
    bad = server.post(headers={"Idempotency-Key": "x" * 300})
    assert bad.status_code == 400 and bad.json["title"] == "Bad Idempotency-Key"
