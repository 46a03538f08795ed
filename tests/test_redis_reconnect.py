"""mailrelay.state.redisclient keeps a connection usable: a socket the server closed while idle is
replaced before anything is sent on it, a read-only or idempotent command is sent once more
when a reused connection breaks under it, and nothing else is ever sent twice. Real servers
on loopback (valkey-server, and a small listener that drops a connection on purpose).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

import pytest

from mailrelay.state import ProviderChange, StateDelta
from mailrelay.state.redisclient import Connection, Target, parse_url
from mailrelay.state.redisstore import FallbackStore, RedisStateStore
from mailrelay.state.tomlstore import TomlStateStore
from tests.redisserver import HOST, RedisServer, flush, server_binary, started_server

BINARY = server_binary()
needs_server = pytest.mark.skipif(BINARY is None, reason="no redis-server or valkey-server")


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """This module's own server: its tests kill its clients."""
    yield from started_server()


def kill_clients(server: RedisServer) -> int:
    """CLIENT KILL every normal client but the one asking (what a Redis restart or its
    `timeout` does to idle connections)."""
    import redis

    admin = redis.Redis(host=HOST, port=server.port)
    try:
        return int(admin.client_kill_filter(_type="normal", skipme=True))
    finally:
        admin.close()


@needs_server
def test_a_connection_killed_while_idle_is_replaced_before_a_write_is_sent(
    server: RedisServer,
) -> None:
    flush(server)
    c = Connection(Target(port=server.port))
    try:
        assert c.execute("INCR", "n") == 1
        for expected in range(2, 6):
            assert kill_clients(server) >= 1
            # INCR is not idempotent: it is sent once, on a new connection, and counts once
            assert c.execute("INCR", "n") == expected
    finally:
        c.close()


@needs_server
def test_the_state_store_does_not_fall_back_after_client_kill_and_counts_exactly(
    server: RedisServer, tmp_path: object
) -> None:
    from pathlib import Path

    flush(server)
    warnings: list[str] = []
    local = TomlStateStore(Path(str(tmp_path)) / "state.toml")
    store = FallbackStore(lambda: RedisStateStore(server.url), "redis", local, warn=warnings.append)
    for _ in range(10):
        store.load()
        kill_clients(server)
        change = ProviderChange("p", add={"sent": 1}, count="accepted")
        store.update(StateDelta(datetime.now(timezone.utc), [change]))
        kill_clients(server)
    assert warnings == []
    assert not store.using_fallback
    entry = RedisStateStore(server.url).load().providers["p"]
    assert (entry.sent, entry.outcomes) == (10, {"accepted": 10})
    assert not (Path(str(tmp_path)) / "state.toml").exists()


class Dropper:
    """A loopback listener speaking just enough RESP: on the first connection it answers the
    first command and closes the connection when the second one arrives (its reply lost);
    every later connection answers `+OK` to each command. `commands` counts what arrived."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.commands = 0
        self.connections = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                peer, _ = self.listener.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._talk, args=(peer, self.connections), daemon=True).start()

    def _talk(self, peer: socket.socket, number: int) -> None:
        with peer:
            peer.settimeout(10)
            answered = 0
            while True:
                try:
                    data = peer.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                self.commands += data.count(b"*")  # one array per command here
                if number == 1 and answered == 1:
                    return  # the command arrived; its reply never will
                peer.sendall(b"+OK\r\n" * data.count(b"*"))
                answered += 1

    def __enter__(self) -> Dropper:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self.thread.join(5)
        self.listener.close()


def test_a_read_only_command_whose_reply_was_lost_is_sent_once_more() -> None:
    with Dropper() as fake:
        c = Connection(Target(port=fake.port), timeout=5)
        try:
            assert c.execute("PING", readonly=True) == b"OK"
            assert c.execute("GET", "k", readonly=True) == b"OK"  # lost, then sent again
        finally:
            c.close()
        assert (fake.commands, fake.connections) == (3, 2)


def test_an_idempotent_script_whose_reply_was_lost_is_sent_once_more() -> None:
    with Dropper() as fake:
        c = Connection(Target(port=fake.port), timeout=5)
        try:
            c.execute("PING", readonly=True)
            assert c.execute("SET", "k", "v", idempotent=True) == b"OK"
        finally:
            c.close()
        assert fake.commands == 3


def test_a_write_whose_reply_was_lost_is_never_sent_again() -> None:
    with Dropper() as fake:
        c = Connection(Target(port=fake.port), timeout=5)
        try:
            c.execute("PING", readonly=True)
            with pytest.raises(ConnectionError):
                c.execute("INCR", "n")  # it may have run: the caller must decide
        finally:
            c.close()
        assert (fake.commands, fake.connections) == (2, 1)


def test_a_fresh_connection_that_breaks_is_not_retried() -> None:
    with Dropper() as fake:
        c = Connection(Target(port=fake.port), timeout=5)
        try:
            # the first command on the first connection gets its answer; a failure of a
            # connection opened for this very command says the server is gone: no retry
            assert c.execute("GET", "k", readonly=True) == b"OK"
        finally:
            c.close()
        assert fake.connections == 1


# -- Sentinel URLs ------------------------------------------------------------------------------


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_db() -> None:
    t = parse_url("redis+sentinel://:pw@h1:26379,h2,[::1]:26380/mymaster/2?sentinel_password=s")
    assert t.sentinels == (("h1", 26379), ("h2", 26379), ("::1", 26380))
    assert (t.service, t.db, t.password, t.sentinel_password) == ("mymaster", 2, "pw", "s")
    assert "pw" not in repr(t) and "sentinel h1:26379" in t.address
    assert parse_url("redis+sentinel://h1/m").db == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h1:26379", "name the master"),
        ("redis+sentinel://h1:26379/m/x", "db must be a number"),
        ("redis+sentinel://h1:nope/m", "port must be a number"),
        ("redis+sentinel://h1,,h2/m", "host is missing"),
        ("redis+sentinel://h1/m?ssl_cert_reqs=none", "unknown option"),
        ("redis+sentinel://h1/m/0/9", "/SERVICE or /SERVICE/DB"),
    ],
)
def test_a_bad_sentinel_url_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_url(url)


def test_a_sentinel_url_is_shown_without_either_password() -> None:
    from mailrelay.state.redisurl import masked

    url = "redis+sentinel://u:s3cret@h1:26379,h2/mymaster/0?sentinel_password=zz9&prefix=ops"
    shown = masked(url)
    assert "s3cret" not in shown and "zz9" not in shown
    assert shown.startswith("redis+sentinel://u:***@h1:26379,h2/mymaster/0?")


@pytest.mark.parametrize("store", ["state", "spool", "budgets"])
def test_every_redis_store_keeps_both_sentinel_passwords_out_of_its_messages(
    store: str, tmp_path: Path
) -> None:
    # each set itself up on its own once, and the spool and the budgets forgot the
    # sentinel's password: a warning quoting a sentinel's error could have shown it
    from mailrelay.ratelimit.redisbucket import connect
    from mailrelay.secrets import scrub
    from mailrelay.spool import Spool
    from mailrelay.spool.redisspool import RedisSpool

    url = "redis+sentinel://:pw-m4ster@h1:26379/mymaster/0?sentinel_password=pw-s3ntinel%2F"
    if store == "state":
        RedisStateStore(url)
    elif store == "spool":
        RedisSpool(url, local=Spool(tmp_path / "local"))
    else:
        connect(url, None)
    said = scrub("pw-m4ster; pw-s3ntinel/; pw-s3ntinel%2F")
    assert "m4ster" not in said and "s3ntinel" not in said, said


@needs_server
def test_over_tls_a_kept_connection_is_reused_and_a_killed_one_replaced(
    server: RedisServer, tmp_path: object
) -> None:
    import trustme

    from tests.test_redis_client import TlsFront

    flush(server)
    ca = trustme.CA()
    ca_file = f"{tmp_path}/ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    with TlsFront(server.port, ca.issue_cert("127.0.0.1")) as front:
        c = Connection(parse_url(f"rediss://{HOST}:{front.port}/0?ssl_ca_certs={ca_file}"))
        try:
            for n in range(1, 21):
                assert c.execute("INCR", "n") == n
            assert len(front.threads) - 1 == 1  # one TLS connection for all of them
            kill_clients(server)  # the terminator's backend: it closes our TLS connection
            front.threads[1].join(10)  # ... and has closed it (nothing sent on it meanwhile)
            assert c.execute("INCR", "n") == 21  # replaced before the write, counted once
            assert len(front.threads) - 1 == 2
        finally:
            c.close()
