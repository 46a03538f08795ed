"""`mailrelay serve` where gunicorn itself matters: the installed command runs it on a
loopback port and a real HTTP client (requests) talks to it — several workers sharing keys
and counters, SIGTERM, a killed worker, the flusher, start-up refusals. The routes' answers
are tested through Flask's test client in test_serve_routes.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.configfile import write_config
from tests.conftest import free_port
from tests.esp.fakebase import server_base_url
from tests.servehost import wait_until_healthy
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
        wait_until_healthy(self.url, self.proc, self.log, self.stop, START_WAIT)

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
    from mailrelay.serve.keys import FileKeyStore

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
    from mailrelay.serve.keys import FileKeyStore

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

    from mailrelay.serve.probegate import FileProbeGate

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
    from mailrelay.app import App
    from mailrelay.config import load_settings
    from mailrelay.message import build_message
    from mailrelay.serve.server import Flusher

    settings = load_settings(
        config(tmp_path, [outbox(tmp_path)], spool_dir=str(tmp_path / "spool"), queue_retry=1)
    )
    app = App(config=None, state=str(tmp_path / "state.toml"), providers=(), debug=False,
              warn=lambda _: None, settings=settings)  # fmt: skip
    message = build_message(sender="cron@example.com", to=["ops@example.com"], subject="q")
    queueing = app.queueing()
    entry = queueing.spool.add(message, [], retry=queueing.retry, max_retry=queueing.max_retry)
    entry.next_try = entry.created  # due now
    (tmp_path / "spool" / entry.path.name).write_text(json.dumps(entry.to_document()))
    Flusher(app, 3600).flush_once()
    assert len(outbox_messages(tmp_path)) == 1
    assert list((tmp_path / "spool").glob("*.json")) == []
