"""A fleet on one Redis (valkey-server on loopback): Idempotency-Key claims and the one-probe
gate shared by every `serve` host, and a host's own problems (an unset secret, a missing
command) kept off the shared state. Hosts are separate HOMEs, working folders and ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from mailrelay.serve.answer import Answer
from mailrelay.serve.fleet import RedisAccess, RedisKeyStore, RedisProbeGate
from mailrelay.serve.keys import FileKeyStore
from mailrelay.serve.liveness import owner
from mailrelay.serve.probegate import FileProbeGate
from mailrelay.state.redisstore import RedisStateStore
from tests.conftest import free_port
from tests.esp.fakebase import server_base_url
from tests.redisserver import HOST, RedisServer, server_binary
from tests.servehost import host_env, wait_until_healthy
from tests.test_e2e import mailrelay, mailrelay_command

BINARY = server_binary()
pytestmark = pytest.mark.skipif(BINARY is None, reason="no redis-server or valkey-server")
TOKEN = "fleet-test-token-51c2"
PM_TOKEN = "pm-fleet-token-9d0e"
MESSAGE = {"to": ["ops@example.com"], "subject": "disk", "text": "web1: disk 91% full"}


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    return redis_server  # the session's shared server (tests/redisserver.py)


def admin(server: RedisServer) -> Any:
    import redis

    return redis.Redis(host=HOST, port=server.port)


class SlowPostmark:
    """Postmark's POST /email: 200 after a pause (so concurrent requests overlap) for the
    right token, its 401 otherwise; counts the sends."""

    def __init__(self, server: HTTPServer, pause: float = 0.3) -> None:
        self.sends = 0
        self.pause = pause
        server.expect_request("/email", method="POST").respond_with_handler(self.handle)
        self.base = server_base_url(server)

    def handle(self, request: Request) -> Response:
        if request.headers.get("X-Postmark-Server-Token") != PM_TOKEN:
            body = {"ErrorCode": 10, "Message": "The Server Token you provided was invalid."}
            return Response(json.dumps(body), 401, content_type="application/json")
        self.sends += 1
        time.sleep(self.pause)
        body = {"To": "ops@example.com", "MessageID": f"pm-{self.sends}", "ErrorCode": 0}
        return Response(json.dumps(body), 200, content_type="application/json")


class FleetHost:
    """One machine: its HOME, working folder, config; `serve` on its own port when started."""

    def __init__(
        self, root: Path, name: str, providers: str, env: dict[str, str], defaults: str = ""
    ) -> None:
        self.home = root / name
        self.work = self.home / "work"
        self.work.mkdir(parents=True)
        self.config = self.home / "config.toml"
        self.config.write_text(
            f'[defaults]\nfrom = "ops@example.com"\n{defaults}'
            f'[serve]\ntokens = ["{TOKEN}"]\nthreads = 8\n{providers}'
        )
        self.config.chmod(0o600)
        self.data = self.home / "data" / "mailrelay"
        self.env = {**host_env(self.home), **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def run(self, state: str, *args: str) -> Any:
        return mailrelay("--config", str(self.config), "--state", state, *args, env=self.env)

    def send(self, state: str) -> list[str]:
        r = self.run(state, "send", "--json", "-s", "hi", "--text", "b", "x@example.com")
        assert r.returncode == 0, r.stderr
        return [a["provider"] for a in json.loads(r.stdout)["attempts"] if a["tried"]]

    def serve(self, state: str) -> None:
        port = free_port()
        self.url = f"http://{HOST}:{port}"
        self.log = self.home / "serve.log"
        argv = [mailrelay_command(), "--config", str(self.config), "--state", state]
        argv += ["serve", "--bind", f"{HOST}:{port}", "--workers", "2"]
        env = {k: v for k, v in os.environ.items() if k != "PM_TOKEN"}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=self.work, env={**env, **self.env}, stdout=log, stderr=log
            )
        wait_until_healthy(self.url, self.proc, self.log, self.stop)

    def post(self, key: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return requests.post(self.url + "/v1/messages", json=MESSAGE, headers=headers, timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


@pytest.fixture
def hosts() -> Iterator[list[FleetHost]]:
    started: list[FleetHost] = []
    yield started
    for host in started:
        host.stop()


def postmark_table(base: str) -> str:
    return (
        '[[providers]]\nname = "pm"\ntype = "postmark"\n'
        f'server_token = {{ env = "PM_TOKEN" }}\nbase_url = "{base}"\n'
    )


def test_one_key_through_two_hosts_is_one_delivery_and_the_replay_is_the_first_answer(
    server: RedisServer,
    redis_url: str,
    tmp_path: Path,
    httpserver: HTTPServer,
    hosts: list[FleetHost],
) -> None:
    fake = SlowPostmark(httpserver)
    for name in ("a", "b"):
        host = FleetHost(tmp_path, name, postmark_table(fake.base), {"PM_TOKEN": PM_TOKEN})
        host.serve(redis_url)
        hosts.append(host)
    a, b = hosts
    key = "order-4711-confirmation"
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: hosts[i % 2].post(key), range(16)))
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 409}, codes
    assert fake.sends == 1
    first = next(
        r for r in answers if r.status_code == 200 and "Idempotent-Replayed" not in r.headers
    )
    for host in (a, b):  # the replay through either host: the first answer, nothing sent
        again = host.post(key)
        assert again.status_code == 200 and again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
    assert fake.sends == 1
    # in Redis, for 24 hours; never a `redis:` folder under the working folder, nor a key file
    stored = admin(server).keys("{mailrelay}:idem:*")
    assert len(stored) == 1
    assert 0 < admin(server).pttl(stored[0]) <= 24 * 3600 * 1000
    for host in (a, b):
        assert list(host.work.iterdir()) == []
        assert not (host.data / "idempotency").exists() or not any(
            (host.data / "idempotency").glob("*.json")
        )


def stores(url: str, tmp: Path, inflight: float = 90.0) -> RedisKeyStore:
    redis = RedisAccess(lambda: RedisStateStore(url), lambda _m: None)
    return RedisKeyStore(redis, FileKeyStore(tmp / "keys"), inflight=inflight)


def test_a_claim_is_busy_while_its_owner_lives_and_taken_over_when_it_ran_out(
    server: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    first, second = stores(redis_url, tmp_path / "a"), stores(redis_url, tmp_path / "b")
    assert first.begin("k", "print").kind == "new"
    assert second.begin("k", "print").kind == "busy"  # in flight on another "host"
    # another host's claim that ran out (its owner died mid-send): taken over
    client = admin(server)
    name = client.keys("{mailrelay}:idem:*")[0]
    doc = json.loads(client.get(name))
    doc.update(owner={"host": "elsewhere", "pid": 1}, until=0)
    client.set(name, json.dumps(doc), px=60_000)
    assert second.begin("k", "print").kind == "new"
    answer = Answer(200, {"delivered": True}, {})
    first.finish("k", "print", answer)  # the old holder's late answer does not overwrite
    assert first.begin("k", "print").kind == "busy"
    second.finish("k", "print", answer)
    seen = first.begin("k", "print")
    assert seen.kind == "done" and seen.answer is not None and seen.answer.status == 200
    assert first.begin("k", "other print").kind == "mismatch"


def test_a_claim_of_a_dead_process_of_this_host_is_taken_over_at_once(
    server: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    keys = stores(redis_url, tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()
    me = owner()
    client = admin(server)
    assert keys.begin("k", "p").kind == "new"
    name = client.keys("{mailrelay}:idem:*")[0]
    doc = json.loads(client.get(name))
    doc.update(owner={**me, "pid": gone.pid}, token="someone-else")
    client.set(name, json.dumps(doc), px=60_000)
    assert keys.begin("k", "p").kind == "new"  # not "busy" for the rest of the deadline


def test_release_frees_the_key_for_a_retry(redis_url: str, tmp_path: Path) -> None:
    keys = stores(redis_url, tmp_path)
    assert keys.begin("k", "p").kind == "new"
    keys.release("k")
    assert keys.begin("k", "p").kind == "new"


def test_redis_down_the_keys_use_this_hosts_folder_with_one_warning(tmp_path: Path) -> None:
    warnings: list[str] = []
    url = f"redis://{HOST}:{free_port()}/0"
    redis = RedisAccess(lambda: RedisStateStore(url), warnings.append)
    keys = RedisKeyStore(redis, FileKeyStore(tmp_path / "keys"), inflight=90)
    assert keys.begin("k", "p").kind == "new"
    assert keys.begin("k", "p").kind == "busy"
    keys.finish("k", "p", Answer(200, {}, {}))
    assert keys.begin("k", "p").kind == "done"
    assert len(warnings) == 1 and "using" in warnings[0]


def test_one_probe_per_cooldown_period_for_the_whole_fleet(redis_url: str, tmp_path: Path) -> None:
    from mailrelay.state import ProviderChange, StateDelta

    gates = [
        RedisProbeGate(
            RedisAccess(lambda: RedisStateStore(redis_url), lambda _m: None),
            FileProbeGate(tmp_path / name, keep=60),
        )
        for name in ("a", "b")
    ]
    store = RedisStateStore(redis_url)
    now = datetime.now(timezone.utc)

    def fail() -> datetime:
        change = ProviderChange("pm", add={"failed": 1, "consecutive_failures": 1})
        change.cooldowns = (60.0,)
        state = store.update(StateDelta(now, [change]))
        until = state.providers["pm"].cooldown_until
        assert until is not None
        return until

    until = fail()
    assert not gates[1].taken("pm", until)
    assert gates[0].claim("pm", until)  # host a probes
    assert not gates[1].claim("pm", until)  # host b, in the same period, does not
    assert gates[1].taken("pm", until)
    assert not gates[0].claim("pm", until)
    time.sleep(0.005)  # the cooldown ends on the server's clock, to the millisecond
    later = fail()  # the probe failed: a new period, with its own one probe
    assert later > until
    assert not gates[0].taken("pm", later)
    assert gates[1].claim("pm", later)
    assert not gates[0].claim("pm", later)


@pytest.mark.parametrize(
    ("a_env", "says"),
    [
        ({}, "PM_TOKEN"),  # the secret's variable is not set on host a (cron)
        (  # a proxy variable host a's client cannot use
            {"PM_TOKEN": PM_TOKEN, "HTTP_PROXY": "socks5://127.0.0.1:1", "NO_PROXY": ""},
            "HTTP_PROXY",
        ),
    ],
    ids=["unset-secret", "unusable-proxy"],
)
def test_a_local_problem_on_one_host_does_not_rest_the_provider_for_another(
    redis_url: str, tmp_path: Path, httpserver: HTTPServer, a_env: dict[str, str], says: str
) -> None:
    fake = SlowPostmark(httpserver, pause=0)
    providers = postmark_table(fake.base) + (
        f'[[providers]]\nname = "box"\ntype = "outbox"\npath = "{tmp_path / "outbox"}"\n'
    )
    # priority: each send starts at pm unless it rests (sticky would start where box won)
    first = 'policy = "priority"\n'
    a = FleetHost(tmp_path, "a", providers, {"no_proxy": "", **a_env}, first)
    b = FleetHost(tmp_path, "b", providers, {"PM_TOKEN": PM_TOKEN}, first)
    assert "PM_TOKEN" not in os.environ
    r = a.run(redis_url, "send", "--json", "-s", "hi", "--text", "b", "x@example.com")
    assert r.returncode == 0, r.stderr
    attempts = json.loads(r.stdout)["attempts"]
    assert [(x["provider"], x["outcome"]) for x in attempts] == [
        ("pm", "provider"),
        ("box", "accepted"),
    ]
    assert says in attempts[0]["detail"]  # reported on this host
    shared = RedisStateStore(redis_url).load().providers
    assert "pm" not in shared or (shared["pm"].failed, shared["pm"].cooldown_until) == (0, None)
    assert b.send(redis_url) == ["pm"]  # b is not sent elsewhere by a's problem
    assert fake.sends == 1


def test_a_missing_sendmail_on_one_host_does_not_rest_it_for_another(
    redis_url: str, tmp_path: Path
) -> None:
    works = tmp_path / "sendmail"
    works.write_text(f"#!{sys.executable}\nimport sys\nsys.stdin.buffer.read()\n")
    works.chmod(0o755)
    box = f'[[providers]]\nname = "box"\ntype = "outbox"\npath = "{tmp_path / "outbox"}"\n'

    def mta(command: Path) -> str:
        return f'[[providers]]\nname = "mta"\ntype = "sendmail"\ncommand = ["{command}"]\n' + box

    first = 'policy = "priority"\n'
    a = FleetHost(tmp_path, "a", mta(tmp_path / "not-installed" / "sendmail"), {}, first)
    b = FleetHost(tmp_path, "b", mta(works), {}, first)
    assert a.send(redis_url) == ["mta", "box"]
    assert b.send(redis_url) == ["mta"]


def test_with_a_file_state_an_unset_secret_rests_the_provider_on_that_host(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    fake = SlowPostmark(httpserver, pause=0)
    providers = postmark_table(fake.base) + (
        f'[[providers]]\nname = "box"\ntype = "outbox"\npath = "{tmp_path / "outbox"}"\n'
    )
    a = FleetHost(tmp_path, "a", providers, {}, 'policy = "priority"\n')
    state = str(tmp_path / "state.toml")
    assert a.send(state) == ["pm", "box"]
    assert a.send(state) == ["box"]  # one host's cron: the next run goes straight on


def test_client_kill_between_requests_costs_no_fallback_and_no_count(
    server: RedisServer,
    redis_url: str,
    tmp_path: Path,
    httpserver: HTTPServer,
    hosts: list[FleetHost],
) -> None:
    fake = SlowPostmark(httpserver, pause=0)
    host = FleetHost(tmp_path, "a", postmark_table(fake.base), {"PM_TOKEN": PM_TOKEN})
    host.serve(redis_url)
    hosts.append(host)
    client = admin(server)
    for i in range(12):
        assert host.post(f"key-{i}").status_code == 200
        # every idle connection of both workers (state, keys, probes) dropped, as Redis's
        # `timeout`, a restart or a NAT would
        client.client_kill_filter(_type="normal", skipme=True)
    host.stop()
    log = host.log.read_text()
    assert "unavailable" not in log and "local state file" not in log, log
    entry = RedisStateStore(redis_url).load().providers["pm"]
    assert (entry.sent, entry.outcomes, fake.sends) == (12, {"accepted": 12}, 12)
    assert not (host.data / "state.toml").exists()


def test_an_smtp_password_missing_on_one_host_does_not_rest_the_relay_for_another(
    redis_url: str, tmp_path: Path
) -> None:
    from tests.smtpserver import SmtpServer

    with SmtpServer(auth={"ops": "relay-pw-3f1"}) as relay:
        providers = (
            f'[[providers]]\nname = "relay"\ntype = "smtp"\nhost = "{HOST}"\n'
            f'port = {relay.port}\nsecurity = "none"\nusername = "ops"\n'
            'password = { env = "RELAY_PW" }\n'
            f'[[providers]]\nname = "box"\ntype = "outbox"\npath = "{tmp_path / "outbox"}"\n'
        )
        first = 'policy = "priority"\n'
        a = FleetHost(tmp_path, "a", providers, {}, first)
        b = FleetHost(tmp_path, "b", providers, {"RELAY_PW": "relay-pw-3f1"}, first)
        assert "RELAY_PW" not in os.environ
        assert a.send(redis_url) == ["relay", "box"]
        assert b.send(redis_url) == ["relay"]
        assert relay.logins == ["ops"]


class Hangup:
    """A loopback listener that accepts connections and closes them at once (an SMTP relay
    that is down: a transient failure); counts the connections."""

    def __init__(self) -> None:
        import socket
        import threading

        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                peer, _ = self.listener.accept()
            except OSError:
                continue
            self.accepted += 1
            peer.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.listener.close()


def test_a_resting_provider_is_probed_once_per_period_by_the_whole_fleet(
    redis_url: str, tmp_path: Path, hosts: list[FleetHost]
) -> None:
    down = Hangup()
    try:
        providers = (
            f'[[providers]]\nname = "relay"\ntype = "smtp"\nhost = "{HOST}"\n'
            f'port = {down.port}\nsecurity = "none"\ntimeout = 5\n'
        )
        for name in ("a", "b"):
            host = FleetHost(tmp_path, name, providers, {}, "cooldown = 300\n")
            host.serve(redis_url)
            hosts.append(host)
        a, b = hosts
        assert a.post().status_code == 503  # the relay fails: it rests, this was its try
        assert down.accepted == 1
        for _ in range(4):  # the other host knows the period's one try was made
            answer = b.post()
            assert answer.status_code == 503 and "Retry-After" in answer.headers
        assert down.accepted == 1
    finally:
        down.close()
