"""`mailrelay serve`: the installed command runs gunicorn on a loopback port; a real HTTP
client (requests) talks to it; the providers are real loopback servers or the outbox."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.configfile import write_config
from tests.conftest import free_port
from tests.esp.fakebase import server_base_url
from tests.smtpserver import SmtpServer
from tests.test_e2e import mailrelay_command

TOKEN = "serve-test-token-7f3a9c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MESSAGE = {"to": ["ops@example.com"], "subject": "disk", "text": "web1: disk 91% full"}
START_WAIT = 30.0


class Server:
    """One `mailrelay serve` process and its stderr."""

    def __init__(self, tmp: Path, config: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"serve-{self.port}.log"
        self.state = tmp / "data" / "state.toml"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    mailrelay_command(),
                    "--config",
                    str(config),
                    "--state",
                    str(self.state),
                    "serve",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    *args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_WAIT
        while True:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"serve did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def post(self, path: str = "/v1/messages", doc: Any = MESSAGE, **kw: Any) -> requests.Response:
        headers = {**AUTH, **kw.pop("headers", {})}
        return requests.post(self.url + path, json=doc, headers=headers, timeout=60, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, headers=kw.pop("headers", AUTH), timeout=60, **kw)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def config(tmp: Path, providers: list[dict[str, Any]], **defaults: Any) -> Path:
    serve = {"tokens": [TOKEN], "max_request_bytes": 200000, "threads": 4}
    return write_config(tmp / "config.toml", providers, defaults=defaults, serve=serve, mode=0o600)


class CountingPostmark:
    """Postmark's POST /email on a loopback pytest-httpserver: 200 for the right token, its
    401 (ErrorCode 10) otherwise; counts the sends."""

    TOKEN = "pm-serve-test-token-1c9e"

    def __init__(self, server: HTTPServer) -> None:
        self.sends = 0
        self.server = server
        server.expect_request("/email", method="POST").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        if request.headers.get("X-Postmark-Server-Token") != self.TOKEN:
            body = {"ErrorCode": 10, "Message": "The Server Token you provided was invalid."}
            return Response(json.dumps(body), 401, content_type="application/json")
        self.sends += 1
        body = {
            "To": "ops@example.com",
            "SubmittedAt": "2026-01-01T00:00:00Z",
            "MessageID": f"pm-{self.sends}",
            "ErrorCode": 0,
            "Message": "OK",
        }
        return Response(json.dumps(body), 200, content_type="application/json")

    def provider(self, token: str | None = None) -> dict[str, Any]:
        return {
            "name": "pm",
            "type": "postmark",
            "server_token": token or self.TOKEN,
            "base_url": server_base_url(self.server),
        }


def outbox(tmp: Path) -> dict[str, Any]:
    return {"name": "box", "type": "outbox", "path": str(tmp / "outbox")}


def dead_smtp(name: str = "dead") -> dict[str, Any]:
    return {
        "name": name,
        "type": "smtp",
        "host": "127.0.0.1",
        "port": free_port(),
        "security": "none",
        "timeout": 5,
    }


def smtp(server: SmtpServer, name: str = "relay") -> dict[str, Any]:
    return {
        "name": name,
        "type": "smtp",
        "host": "127.0.0.1",
        "port": server.port,
        "security": "none",
        "timeout": 10,
    }


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def start(servers: list[Server], tmp: Path, providers: list[dict[str, Any]], **kw: Any) -> Server:
    server = Server(tmp, config(tmp, providers, **kw))
    servers.append(server)
    return server


def outbox_messages(tmp: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((tmp / "outbox").glob("*.eml"))]


# --- the table -----------------------------------------------------------------------------


def test_send_json_is_200_with_the_send_json_document(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = start(servers, tmp_path, [outbox(tmp_path)])
    r = server.post()
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    doc = r.json()
    assert doc["delivered"] is True and doc["provider"] == "box" and doc["exit_code"] == 0
    assert len(outbox_messages(tmp_path)) == 1
    log = server.log.read_text()
    assert '"POST /v1/messages" 200' in log
    assert TOKEN not in log and "disk" not in log  # no secrets, no subjects in the log


def test_raw_message_takes_recipients_from_to_cc_bcc(tmp_path: Path, servers: list[Server]) -> None:
    server = start(servers, tmp_path, [outbox(tmp_path)])
    raw = (
        b"From: cron@example.com\r\nTo: a@example.com\r\nCc: b@example.com\r\n"
        b"Bcc: hidden@example.com\r\nSubject: raw\r\n\r\nhello\r\n"
    )
    r = requests.post(
        server.url + "/v1/messages/raw",
        data=raw,
        timeout=60,
        headers={**AUTH, "Content-Type": "message/rfc822"},
    )
    assert r.status_code == 200, r.text
    (saved,) = outbox_messages(tmp_path)
    assert b"X-Envelope-To: a@example.com, b@example.com, hidden@example.com" in saved.replace(
        b"\r\n ", b" "
    )
    assert b"Bcc:" not in saved


def test_bad_json_and_schema_errors_are_400_problems(tmp_path: Path, servers: list[Server]) -> None:
    server = start(servers, tmp_path, [outbox(tmp_path)])
    r = requests.post(
        server.url + "/v1/messages",
        data=b"{nope",
        timeout=60,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/problem+json"
    assert "not valid JSON" in r.json()["detail"]
    r = server.post(doc={"to": [1], "subject": "x"})
    assert r.status_code == 400
    problem = r.json()
    assert problem["status"] == 400 and problem["title"]
    assert problem["errors"] == [{"path": "to[0]", "message": "expected a string, got a number"}]
    assert problem["detail"] == "request body: to[0]: expected a string, got a number"
    # the server's files are not the client's to attach
    r = server.post(doc={**MESSAGE, "attachments": [{"path": "/etc/passwd"}]})
    assert r.status_code == 400
    assert r.json()["errors"][0]["path"] == "attachments[0].path"
    assert outbox_messages(tmp_path) == []


def test_auth_401_with_www_authenticate(tmp_path: Path, servers: list[Server]) -> None:
    server = start(servers, tmp_path, [outbox(tmp_path)])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic !!"}):
        r = server.post(headers=headers | ({} if headers else {"Authorization": ""}))
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="mailrelay"'
        assert r.headers["Content-Type"] == "application/problem+json"
    for path in ("/v1/providers", "/v1/status", "/metrics"):
        assert server.get(path, headers={}).status_code == 401
    page = server.get("/", headers={})
    assert page.status_code == 401 and page.headers["WWW-Authenticate"].startswith("Basic ")
    assert requests.get(server.url + "/", auth=("any", TOKEN), timeout=60).status_code == 200
    for path in ("/healthz", "/readyz", "/openapi.json", "/api"):
        assert server.get(path, headers={}).status_code == 200, path
    assert outbox_messages(tmp_path) == []


def test_413_and_415(tmp_path: Path, servers: list[Server]) -> None:
    server = start(servers, tmp_path, [outbox(tmp_path)])
    big = {**MESSAGE, "text": "x" * 300_000}
    r = server.post(doc=big)
    assert r.status_code == 413
    assert "max_request_bytes" in r.json()["detail"]
    r = requests.post(
        server.url + "/v1/messages",
        data="hi",
        timeout=60,
        headers={**AUTH, "Content-Type": "text/plain"},
    )
    assert r.status_code == 415 and r.headers["Content-Type"] == "application/problem+json"
    r = requests.post(server.url + "/v1/messages/raw", json=MESSAGE, headers=AUTH, timeout=60)
    assert r.status_code == 415
    assert outbox_messages(tmp_path) == []


def test_422_when_the_provider_refuses_the_message(tmp_path: Path, servers: list[Server]) -> None:
    with SmtpServer(fail={"rcpt": "550 5.1.1 no such user"}) as relay:
        server = start(servers, tmp_path, [smtp(relay)])
        r = server.post()
    assert r.status_code == 422
    problem = r.json()
    assert "no such user" in problem["detail"]
    assert problem["result"]["exit_code"] == 65


def test_502_when_every_provider_fails_none_temporarily(
    tmp_path: Path, servers: list[Server], httpserver: HTTPServer
) -> None:
    pm = CountingPostmark(httpserver).provider("wrong-token-123")
    server = start(servers, tmp_path, [pm])
    r = server.post()
    assert r.status_code == 502, r.text
    assert r.json()["result"]["exit_code"] == 69


def test_503_with_retry_after_then_fast_path_without_contacting(
    tmp_path: Path, servers: list[Server]
) -> None:
    with SmtpServer(fail={"mail": "451 4.3.0 try later"}) as relay:
        server = start(servers, tmp_path, [smtp(relay)], cooldown=120)
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
            doc = a.json()
            assert doc["title"] == "Every provider is resting" and "result" not in doc
            assert "(relay)" in doc["detail"] and "none was tried" in doc["detail"]
        assert server.get("/readyz").status_code == 503


def test_while_every_provider_rests_bad_input_is_still_400_and_keys_are_not_kept(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = start(servers, tmp_path, [dead_smtp()], cooldown=300)
    assert server.post().status_code == 503  # the probe of this period: tried, failed
    resting = server.post()
    assert resting.status_code == 503 and "result" not in resting.json()
    # not JSON, or not the schema: the client's fault says so at once, outage or not
    r = requests.post(
        server.url + "/v1/messages",
        data=b"{nope",
        timeout=60,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = server.post(doc={"to": [1], "subject": "x"})
    assert r.status_code == 400
    assert r.json()["errors"] == [{"path": "to[0]", "message": "expected a string, got a number"}]
    # a raw message is read only when it can be sent
    r = requests.post(
        server.url + "/v1/messages/raw",
        data=b"From: a@example.com\r\nTo: b@example.com\r\n\r\nhi\r\n",
        timeout=60,
        headers={**AUTH, "Content-Type": "message/rfc822"},
    )
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    # a resting 503 is "try again later": the key is free for the retry, not replayed
    key = {"Idempotency-Key": "resting-1"}
    first = server.post(headers=key)
    assert first.status_code == 503 and "Idempotent-Replayed" not in first.headers
    again = server.post(headers=key)
    assert again.status_code == 503 and "Idempotent-Replayed" not in again.headers


def test_202_when_the_spool_takes_it(tmp_path: Path, servers: list[Server]) -> None:
    server = start(
        servers, tmp_path, [dead_smtp()], on_failure="queue", spool_dir=str(tmp_path / "spool")
    )
    for _ in range(2):  # the second one takes the fast path (provider cooling): queued too
        r = server.post()
        assert r.status_code == 202, r.text
        doc = r.json()
        assert doc["queued"] and doc["exit_code"] == 0
    assert len(list((tmp_path / "spool").glob("*.json"))) == 2


def test_202_is_counted_queued_once_like_send(tmp_path: Path, servers: list[Server]) -> None:
    from mailrelay.state import TomlStateStore

    server = start(
        servers, tmp_path, [dead_smtp()], on_failure="queue", spool_dir=str(tmp_path / "spool")
    )
    assert server.post().status_code == 202
    assert TomlStateStore(server.state).load().messages == {"queued": 1}


def test_503_when_queuing_is_on_and_the_spool_cannot_be_written(
    tmp_path: Path, servers: list[Server]
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool directory should be\n")
    server = start(
        servers, tmp_path, [dead_smtp()], on_failure="queue", spool_dir=str(blocker / "spool")
    )
    r = server.post()
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1
    problem = r.json()
    assert "not queued" in problem["detail"] and "spool" in problem["detail"]
    assert problem["result"]["delivered"] is False
    assert blocker.read_text().startswith("a file")


def test_counters_add_up_once_the_workers_exit(
    tmp_path: Path, servers: list[Server], httpserver: HTTPServer
) -> None:
    from mailrelay.state import TomlStateStore

    fake = CountingPostmark(httpserver)
    server = start(servers, tmp_path, [fake.provider()])
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: server.post(), range(40)))
    assert [a.status_code for a in answers] == [200] * 40
    for _ in range(300):  # the workers fold their counters into the file every second
        if TomlStateStore(server.state).load().messages.get("sent") == 40:
            break
        time.sleep(0.1)
    cfg = tmp_path / "config.toml"
    metrics = subprocess.run(
        [mailrelay_command(), "--config", str(cfg), "--state", str(server.state), "metrics"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert metrics.returncode == 0, metrics.stderr
    assert 'mailrelay_messages_total{result="sent"} 40' in metrics.stdout
    more = [server.post() for _ in range(5)]
    assert [a.status_code for a in more] == [200] * 5
    assert server.stop() == 0  # SIGTERM: each worker writes the counters it holds
    state = TomlStateStore(server.state).load()
    assert fake.sends == 45
    assert state.messages == {"sent": 45}
    assert state.providers["pm"].sent == 45
    assert state.providers["pm"].outcomes == {"accepted": 45}


def test_providers_status_metrics_openapi(tmp_path: Path, servers: list[Server]) -> None:
    server = start(servers, tmp_path, [outbox(tmp_path)])
    assert server.get("/v1/providers").json()["providers"][0]["name"] == "box"
    status = server.get("/v1/status").json()
    assert status["healthy"] == 1 and status["providers"][0]["provider"] == "box"
    assert server.get("/readyz").json()["ready"] is True
    with requests.Session() as one:  # the /healthz is counted whichever worker answers
        one.headers.update(AUTH)
        one.get(server.url + "/healthz", timeout=60)
        metrics = one.get(server.url + "/metrics", timeout=60)
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE mailrelay_http_requests_total counter" in metrics.text
    assert 'mailrelay_http_requests_total{route="/healthz",code="200"} ' in metrics.text
    assert server.get("/openapi.json").json()["openapi"] == "3.1.0"


def test_every_route_is_documented_and_every_operation_exists(tmp_path: Path) -> None:
    from mailrelay.config import load_settings
    from mailrelay.serve.app import create_app
    from mailrelay.serve.openapi import documented_routes

    settings = load_settings(config(tmp_path, [outbox(tmp_path)]))
    app = create_app(settings, state=str(tmp_path / "state.toml"), log=False)
    routes = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert routes == documented_routes()


# --- idempotency ---------------------------------------------------------------------------


def test_idempotency_key_under_16_parallel_requests(
    tmp_path: Path, servers: list[Server], httpserver: HTTPServer
) -> None:
    fake = CountingPostmark(httpserver)
    server = start(servers, tmp_path, [fake.provider()])
    key = {"Idempotency-Key": "order-4711-confirmation"}
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: server.post(headers=key), range(16)))
    codes = sorted(a.status_code for a in answers)
    assert set(codes) <= {200, 409}, codes
    assert fake.sends == 1
    first = next(a for a in answers if a.status_code == 200).json()
    again = server.post(headers=key)  # after the first finished: the same answer, no send
    assert again.status_code == 200 and again.json() == first
    assert again.headers["Idempotent-Replayed"] == "true"
    assert fake.sends == 1
    other = server.post(doc={**MESSAGE, "subject": "other"}, headers=key)
    assert other.status_code == 422
    assert server.post(headers={"Idempotency-Key": "x" * 300}).status_code == 400
    keys = list((server.state.parent / "idempotency").glob("*.json"))
    assert len(keys) == 1 and keys[0].stat().st_mode & 0o777 == 0o600


def test_idempotency_key_store_expires_keys(tmp_path: Path) -> None:
    from mailrelay.serve.answer import Answer
    from mailrelay.serve.idempotency import FileKeyStore

    now = [1_000_000.0]
    store = FileKeyStore(tmp_path / "keys", ttl=60, clock=lambda: now[0])
    assert store.begin("k", "f").kind == "new"
    assert store.begin("k", "f").kind == "busy"
    store.finish("k", "f", Answer(200, {"delivered": True}))
    seen = store.begin("k", "f")
    assert seen.kind == "done" and seen.answer == Answer(200, {"delivered": True})
    now[0] = time.time() + 120  # the file's mtime is the real clock
    assert store.begin("k", "f").kind == "new"
    now[0] = time.time()
    assert store.sweep() == 0
    now[0] += 120
    assert store.sweep() == 1


def test_an_abandoned_claim_is_taken_over(tmp_path: Path) -> None:
    from mailrelay.serve.answer import Answer
    from mailrelay.serve.idempotency import FileKeyStore

    store = FileKeyStore(tmp_path / "keys", inflight=90)
    assert store.begin("live", "f").kind == "new"  # this process: alive, so busy
    assert store.begin("live", "f").kind == "busy"
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process that has exited (and been reaped): its claims are abandoned
    for key in ("dead", "other-body"):
        assert store.begin(key, "f").kind == "new"
        (target,) = [p for p in (tmp_path / "keys").glob("*.json") if key_file(p, key)]
        doc = json.loads(target.read_text())
        doc["owner"]["pid"] = gone.pid
        target.write_text(json.dumps(doc))
    assert store.begin("dead", "f").kind == "new"  # taken over
    assert store.begin("dead", "f").kind == "busy"  # by this process, now alive
    assert store.begin("other-body", "g").kind == "new"  # never answered: no mismatch
    store.finish("dead", "f", Answer(200, {"delivered": True}))
    assert store.begin("dead", "f").kind == "done"
    # a claim past the longest send is abandoned even when its owner still runs
    late = FileKeyStore(tmp_path / "late", inflight=-1)
    assert late.begin("k", "f").kind == "new"
    assert late.begin("k", "f").kind == "new"


def test_probe_claims_are_seen_by_every_worker_of_the_host(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from mailrelay.serve.idempotency import FileProbeGate

    until = datetime(2026, 12, 2, 8, 0, tzinfo=timezone.utc)
    one, two = (FileProbeGate(tmp_path / "probes", keep=60) for _ in range(2))  # two workers
    assert not one.taken("relay", until) and not two.taken("relay", until)
    assert one.claim("relay", until)  # the period's one probe
    assert one.taken("relay", until) and two.taken("relay", until)
    assert not two.claim("relay", until)
    later = until + timedelta(seconds=120)  # the next period: its probe is due again
    assert not two.taken("relay", later) and not two.taken("other", until)
    (made,) = (tmp_path / "probes").iterdir()
    assert made.stat().st_mode & 0o777 == 0o600


def key_file(path: Path, key: str) -> bool:
    import hashlib

    return path.name == hashlib.sha256(key.encode()).hexdigest() + ".json"


def test_a_worker_killed_mid_send_does_not_hold_its_key(
    tmp_path: Path, servers: list[Server]
) -> None:
    key = {"Idempotency-Key": "killed-worker-4711"}
    with SmtpServer(data_delay=3.0) as relay:
        server = start(servers, tmp_path, [smtp(relay)])
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(server.post, headers=key)
            deadline = time.monotonic() + 20
            while relay.mail_commands == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert relay.mail_commands == 1  # the send is in flight, held by the relay
            (claim,) = (server.state.parent / "idempotency").glob("*.json")
            doc = json.loads(claim.read_text())
            assert doc["answer"] is None
            worker = doc["owner"]["pid"]
            assert worker != server.proc.pid
            os.kill(worker, signal.SIGKILL)
            with pytest.raises(requests.ConnectionError):
                future.result(timeout=60)
        answer = None
        for _ in range(100):  # until the master has reaped the killed worker
            answer = server.post(headers=key)
            if answer.status_code != 409:
                break
            time.sleep(0.1)
        assert answer is not None and answer.status_code == 200, answer.text
        again = server.post(headers=key)
        assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
        assert relay.mail_commands == 2  # the killed send and the one that took over
        # the relay drops a transaction whose client vanished before the end of DATA: one
        # message, from the request that took the key over
        assert len(relay.messages) == 1
        assert server.get("/healthz").status_code == 200  # gunicorn replaced the worker


# --- the same message, and stopping ----------------------------------------------------------


def test_same_message_through_send_message_and_the_api(
    tmp_path: Path, servers: list[Server]
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
    server = start(servers, tmp_path, [outbox(tmp_path)])
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


def test_sigterm_lets_the_send_in_flight_finish(tmp_path: Path, servers: list[Server]) -> None:
    with SmtpServer(data_delay=2.0) as relay:
        server = start(servers, tmp_path, [smtp(relay)])
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(server.post)
            deadline = time.monotonic() + 20
            while relay.mail_commands == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert relay.mail_commands == 1  # the send is in flight
            server.proc.send_signal(signal.SIGTERM)
            answer = future.result(timeout=60)
        assert answer.status_code == 200, answer.text
        assert server.stop() == 0
        assert len(relay.messages) == 1
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/healthz", timeout=5)


def test_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[[providers]]\ntype = "outbox"\npath = "{tmp_path / "box"}"\n')
    base = [mailrelay_command(), "--config", str(cfg), "serve"]
    r = subprocess.run([*base, "--bind", "127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 78 and "no token" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [*base, "--no-auth", "--bind", "0.0.0.0:8025"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 64 and "loopback" in r.stderr
    r = subprocess.run([*base, "--bind", "nope"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 64 and "HOST:PORT" in r.stderr


def test_no_auth_on_loopback_warns_and_serves(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[defaults]\nfrom = "cron@example.com"\n'
        f'[[providers]]\ntype = "outbox"\npath = "{tmp_path / "outbox"}"\n'
    )
    port = free_port()
    with (tmp_path / "log").open("wb") as log:
        proc = subprocess.Popen(
            [
                mailrelay_command(),
                "--config",
                str(cfg),
                "--state",
                str(tmp_path / "s.toml"),
                "serve",
                "--no-auth",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            try:
                r = requests.post(f"http://127.0.0.1:{port}/v1/messages", json=MESSAGE, timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop too
        assert proc.wait(timeout=60) == 0
    assert "warning: --no-auth" in (tmp_path / "log").read_text()


def test_config_serve_table_errors_name_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[serve]\nworkers = 0\n")
    r = subprocess.run(
        [mailrelay_command(), "--config", str(cfg), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 78 and "serve.workers" in r.stderr


def test_the_flusher_sends_what_the_spool_holds(tmp_path: Path) -> None:
    from mailrelay.cli import App
    from mailrelay.config import load_settings
    from mailrelay.message import build_message
    from mailrelay.serve.server import Flusher

    settings = load_settings(
        config(tmp_path, [outbox(tmp_path)], spool_dir=str(tmp_path / "spool"), queue_retry=1)
    )
    app = App(config=None, state=str(tmp_path / "state.toml"), providers=(), verbose=0,
              quiet=True, debug=False, settings=settings)  # fmt: skip
    message = build_message(sender="cron@example.com", to=["ops@example.com"], subject="q")
    queueing = app.queueing()
    entry = queueing.spool.add(message, [], retry=queueing.retry, max_retry=queueing.max_retry)
    entry.next_try = entry.created  # due now
    (tmp_path / "spool" / entry.path.name).write_text(json.dumps(entry.to_document()))
    Flusher(app, 3600).flush_once()
    assert len(outbox_messages(tmp_path)) == 1
    assert list((tmp_path / "spool").glob("*.json")) == []
