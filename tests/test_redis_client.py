"""mailrelay.state.redisclient: URL parsing, and RESP2 replies from a real server (never a mock).

Replies come from the session's Redis-protocol server (tests/redisserver.py): a Lua script
returns nested arrays, integers, nils and errors, and the client must read them as the
protocol says. The few malformed replies a real server never sends come from a loopback
socket that answers fixed bytes.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from mailrelay.secrets import scrub
from mailrelay.state import redisclient
from mailrelay.state.redisclient import (
    Connection,
    ProtocolError,
    ReplyError,
    ReplyLost,
    Script,
    Target,
    parse_url,
    read_reply,
)
from mailrelay.state.redisstore import RedisStateStore, StateUnavailable
from tests.redisserver import HOST, RedisServer, server_binary

BINARY = server_binary()
needs_server = pytest.mark.skipif(BINARY is None, reason="no redis-server or valkey-server")


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    assert BINARY is not None
    with RedisServer(BINARY, password="pa:ss@w/rd") as s:
        yield s


@pytest.fixture
def conn(server: RedisServer) -> Iterator[Connection]:
    c = Connection(Target(port=server.port, password=server.password))
    yield c
    c.close()


# -- URLs -------------------------------------------------------------------------------------


def test_parse_url_reads_the_forms_redis_py_reads() -> None:
    t = parse_url("redis://h.example:6380/3")
    assert (t.host, t.port, t.db, t.tls, t.username, t.password) == (
        "h.example",
        6380,
        3,
        False,
        None,
        None,
    )
    assert parse_url("redis://h").port == 6379 and parse_url("redis://h").db == 0
    assert parse_url("redis://").host == "127.0.0.1"
    t = parse_url("redis://ops:p%40ss%3Aw%2Fd@h:1/0")  # percent-decoded user and password
    assert (t.username, t.password) == ("ops", "p@ss:w/d")
    t = parse_url("redis://:only-password@h/0")
    assert (t.username, t.password) == (None, "only-password")
    t = parse_url("redis://[::1]:7000/2")  # an IPv6 literal
    assert (t.host, t.port, t.db, t.address) == ("::1", 7000, 2, "[::1]:7000")
    assert parse_url("unix:///run/redis/r.sock?db=4") == Target(path="/run/redis/r.sock", db=4)
    assert parse_url("redis://h/1?db=5").db == 5  # the query's db wins, as in redis-py
    t = parse_url("redis://h?password=q%26w&username=u")
    assert (t.username, t.password) == ("u", "q&w")
    assert parse_url("redis://a:url@h?password=query").password == "url"


def test_parse_url_tls_options() -> None:
    t = parse_url("rediss://h:6380/0")
    assert (t.tls, t.ssl_cert_reqs, t.ssl_ca_certs) == (True, "required", None)
    t = parse_url("rediss://h/0?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem")
    assert (t.ssl_cert_reqs, t.ssl_ca_certs) == ("none", "/etc/ca.pem")
    assert parse_url("rediss://h/0?ssl_cert_reqs=OPTIONAL").ssl_cert_reqs == "optional"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h/0", "scheme"),
        ("redis://h:99999/0", "port"),
        ("redis://h:port/0", "port"),
        ("redis://h:0/0", "port"),
        ("redis://h/zero", "db"),
        ("redis://h/0?db=-1", "negative"),
        ("redis://h/0?socket_timeout=3", "unknown option 'socket_timeout'"),
        ("rediss://h/0?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
        ("unix://", "path"),
    ],
)
def test_parse_url_refuses_what_it_cannot_use(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_url(url)


def test_the_target_and_errors_never_show_the_password() -> None:
    t = parse_url("redis://u:hunter-22@h:1/0")
    assert "hunter-22" not in repr(t) + repr(Connection(t))


def test_a_bad_url_is_a_config_error_without_the_password() -> None:
    from mailrelay.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        RedisStateStore("redis://u:s3cret-x@h:bad/0")
    assert "s3cret-x" not in str(caught.value) and "port" in str(caught.value)


# -- RESP2 replies from the real server --------------------------------------------------------


@needs_server
def test_simple_integer_bulk_and_null_replies(conn: Connection) -> None:
    assert conn.execute("PING") == b"PONG"  # a simple string
    assert conn.execute("SET", "k", "v\r\nwith CRLF") == b"OK"
    assert conn.execute("GET", "k") == b"v\r\nwith CRLF"  # a bulk string is length-counted
    assert conn.execute("SET", "e", "") == b"OK"
    assert conn.execute("GET", "e") == b""
    assert conn.execute("GET", "missing") is None  # a null bulk string
    assert conn.execute("INCRBY", "n", -7) == -7
    assert conn.execute("DEL", "k", "e", "n") == 3
    blob = bytes(range(256)) * 300  # binary data, more than one read buffer
    conn.execute("SET", "b", blob)
    assert conn.execute("GET", "b") == blob
    assert conn.execute("BLPOP", "nothing", "0.01") is None  # a null array


NESTED = """
return {1, 'two', {3, {'four', false}, {}}, redis.error_reply('NESTED inside'), -5, ARGV[1]}
"""


@needs_server
def test_a_script_returning_nested_arrays_nils_integers_and_errors(conn: Connection) -> None:
    reply = Script(NESTED)(conn, [], ["é"])
    assert reply[:3] == [1, b"two", [3, [b"four", None], []]]  # Lua false is a nil
    assert isinstance(reply[3], ReplyError) and reply[3].code == "NESTED"
    assert reply[4:] == [-5, "é".encode()]


@needs_server
def test_an_error_reply_raises_with_its_code_and_the_connection_goes_on(
    conn: Connection,
) -> None:
    with pytest.raises(ReplyError) as caught:
        conn.execute("NOSUCHCOMMAND")
    assert caught.value.code == "ERR"
    with pytest.raises(ReplyError, match="boom"):
        Script("return redis.error_reply('MINE boom')")(conn, [])
    assert conn.execute("PING") == b"PONG"


@needs_server
def test_a_script_is_run_by_its_sha_and_sent_whole_only_when_not_cached(
    conn: Connection,
) -> None:
    import hashlib

    script = Script("return KEYS[1] .. ARGV[1]")
    assert script.sha == hashlib.sha1(script.source.encode()).hexdigest()
    conn.execute("SCRIPT", "FLUSH")
    conn.execute("CONFIG", "RESETSTAT")
    assert script(conn, ["a"], ["b"]) == b"ab"  # NOSCRIPT, then EVAL (which caches it)
    assert script(conn, ["c"], ["d"]) == b"cd"  # EVALSHA only
    stats = conn.execute("INFO", "commandstats").decode()
    calls = {
        line.split(":")[0]: line.split("calls=")[1].split(",")[0]
        for line in stats.splitlines()
        if line.startswith("cmdstat_eval")
    }
    assert calls == {"cmdstat_evalsha": "2", "cmdstat_eval": "1"}


@needs_server
def test_the_handshake_logs_in_and_selects_the_db_before_a_write_and_with_a_read(
    server: RedisServer,
) -> None:
    # a write waits for AUTH and SELECT's replies; a read goes in the same write as them
    c = Connection(Target(port=server.port, password=server.password, db=3))
    assert c.execute("SET", "in3", "x") == b"OK"  # a write: handshake first, then the SET
    c.close()
    c = Connection(Target(port=server.port, password=server.password, db=3))
    assert c.pipeline([["GET", "in3"], ["DBSIZE"]], readonly=True) == [b"x", 1]
    c.execute("FLUSHDB")
    c.close()


@needs_server
def test_a_refused_login_raises_the_server_error_and_wrote_nothing(server: RedisServer) -> None:
    c = Connection(Target(port=server.port, password="wrong-one", db=1))
    with pytest.raises(ReplyError) as caught:
        c.pipeline([["SET", "x", "1"]])
    assert caught.value.code == "WRONGPASS" and "wrong-one" not in str(caught.value)
    with pytest.raises(ReplyError) as caught:
        Connection(Target(port=server.port)).execute("GET", "x", readonly=True)
    assert caught.value.code == "NOAUTH"
    ok = Connection(Target(port=server.port, password=server.password, db=1))
    assert ok.execute("EXISTS", "x") == 0
    ok.close()


@needs_server
def test_an_acl_user_logs_in_with_user_and_password(server: RedisServer, conn: Connection) -> None:
    conn.execute("ACL", "SETUSER", "relay", "on", ">relay-pw-1", "~*", "+@all")
    url = f"redis://relay:relay-pw-1@{HOST}:{server.port}/0"
    c = Connection(parse_url(url))
    assert c.execute("ACL", "WHOAMI") == b"relay"
    c.close()
    store = RedisStateStore(f"redis://relay:nope-pw-2@{HOST}:{server.port}/0")
    with pytest.raises(StateUnavailable) as caught:
        store.load()
    assert "WRONGPASS" in caught.value.reason and "nope-pw-2" not in scrub(caught.value.reason)
    conn.execute("ACL", "DELUSER", "relay")


def test_unreachable_and_timeout_are_os_errors() -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(OSError, match=f"cannot connect to {HOST}:{port}"):
            Connection(Target(port=port)).execute("PING")
    # accepts, never answers: the command went out, its fate is unknown
    with Silent() as silent, pytest.raises(ReplyLost, match=r"no reply within 0\.05 s"):
        Connection(Target(port=silent.port), timeout=0.05).execute("PING")


# -- malformed replies (a real server never sends them) ----------------------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"$%d\r\n" % (redisclient.MAX_BULK + 1), "beyond the limit"),
        (b"*%d\r\n" % (redisclient.MAX_ARRAY + 1), "beyond the limit"),
        (b"*1\r\n" * (redisclient.MAX_DEPTH + 1), "nested beyond"),
        (b"?what\r\n", "unknown reply type"),
        (b":12x\r\n", "malformed number"),
        (b"$3\r\nabcde", "CRLF"),
        (b"+" + b"x" * redisclient.MAX_LINE, "too long"),
    ],
)
def test_malformed_replies_are_protocol_errors(data: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        read_reply(io.BytesIO(data))


@pytest.mark.parametrize("data", [b"", b"$5\r\nab", b"*2\r\n:1\r\n"])
def test_a_cut_reply_is_a_closed_connection(data: bytes) -> None:
    with pytest.raises(ConnectionError):
        read_reply(io.BytesIO(data))


def test_a_malformed_reply_from_the_socket_closes_the_connection() -> None:
    with Silent(answer=b"$999999999999\r\n") as fake:
        c = Connection(Target(port=fake.port))
        with pytest.raises(ProtocolError):
            c.execute("GET", "k")
        assert c._sock is None  # the next command opens a fresh connection


class Silent:
    """A loopback listener that accepts one connection and answers `answer` (or nothing)."""

    def __init__(self, answer: bytes = b"") -> None:
        self.answer = answer
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.listener.settimeout(10)
        try:
            peer, _ = self.listener.accept()
        except OSError:
            return
        with peer:
            peer.recv(65536)
            if self.answer:
                peer.sendall(self.answer)
            self.done.wait(10)

    def __enter__(self) -> Silent:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(10)
        self.listener.close()


# -- TLS: the real server behind a loopback TLS terminator -------------------------------------


class TlsFront:
    """TLS on 127.0.0.1 in front of a plain server (what stunnel does), for a server binary
    built without TLS: the client's handshake, verification and replies go over real TLS."""

    def __init__(self, backend_port: int, cert: Any) -> None:
        import ssl

        self.backend_port = backend_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(self.context)
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except OSError:
                continue
            worker = threading.Thread(target=self._relay, args=(raw,), daemon=True)
            self.threads.append(worker)
            worker.start()

    def _relay(self, raw: socket.socket) -> None:
        import selectors

        try:
            raw.settimeout(5)
            front = self.context.wrap_socket(raw, server_side=True)
        except OSError:  # the client refused our certificate
            raw.close()
            return
        with front, socket.create_connection((HOST, self.backend_port), timeout=5) as back:
            front.setblocking(False)
            back.setblocking(False)
            with selectors.DefaultSelector() as sel:
                sel.register(front, selectors.EVENT_READ, back)
                sel.register(back, selectors.EVENT_READ, front)
                while not self.stop.is_set():
                    for key, _ in sel.select(0.1):
                        src: Any = key.fileobj
                        try:
                            data = src.recv(65536)
                        except (BlockingIOError, ssl_want_read()):
                            continue
                        except OSError:
                            return
                        if not data:
                            return
                        key.data.setblocking(True)
                        key.data.sendall(data)
                        key.data.setblocking(False)

    def __enter__(self) -> TlsFront:
        self.threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)
        self.listener.close()


def ssl_want_read() -> type[Exception]:
    import ssl

    return ssl.SSLWantReadError


@pytest.fixture(scope="module")
def tls_ca() -> Any:
    import trustme

    return trustme.CA()


@needs_server
def test_rediss_verifies_the_server_against_the_given_ca(
    server: RedisServer, tls_ca: Any, tmp_path: Path
) -> None:
    import trustme

    ca_file = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))
    with TlsFront(server.port, tls_ca.issue_cert("127.0.0.1")) as front:
        base = f"rediss://:{quote(server.password or '', safe='')}@{HOST}:{front.port}/2"
        c = Connection(parse_url(f"{base}?ssl_ca_certs={ca_file}"))
        assert c.execute("SET", "over-tls", "1") == b"OK"
        assert c.pipeline([["GET", "over-tls"]], readonly=True) == [b"1"]
        c.close()
        store = RedisStateStore(f"{base}?ssl_ca_certs={ca_file}")
        assert store.load().providers == {}
        store.client.close()
        # the system's CAs do not know this one: refused, and the store falls back
        with pytest.raises(StateUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            RedisStateStore(base).load()
        other = tmp_path / "other.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        with pytest.raises(StateUnavailable):
            RedisStateStore(f"{base}?ssl_ca_certs={other}").load()
        unchecked = Connection(parse_url(f"{base}?ssl_cert_reqs=none"))
        assert unchecked.execute("GET", "over-tls") == b"1"
        unchecked.execute("FLUSHDB")
        unchecked.close()


@needs_server
def test_rediss_checks_the_host_name(server: RedisServer, tls_ca: Any, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))
    with TlsFront(server.port, tls_ca.issue_cert("redis.example")) as front:
        url = f"rediss://{HOST}:{front.port}/0?ssl_ca_certs={ca_file}"
        with pytest.raises(OSError, match=r"match|mismatch|hostname"):
            Connection(parse_url(url)).execute("PING")


# -- sharing: threads of a worker, and fork ---------------------------------------------------


@needs_server
def test_threads_sharing_a_connection_each_get_their_own_replies(conn: Connection) -> None:
    wrong: list[tuple[int, Any]] = []

    def work(n: int) -> None:
        for i in range(40):
            value = f"{n}-{i}"
            reply = conn.pipeline([["SET", f"t{n}", value], ["GET", f"t{n}"], ["INCR", "all"]])
            if reply[:2] != [b"OK", value.encode()]:
                wrong.append((n, reply))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert wrong == []
    assert conn.execute("GET", "all") == b"320"


@needs_server
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_opens_its_own_connection(conn: Connection) -> None:
    parent = conn.execute("CLIENT", "ID")  # the parent's socket is open
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # the child: a connection of its own, never the parent's socket
        mine = conn.execute("CLIENT", "ID")
        os._exit(0 if isinstance(mine, int) and mine != parent else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert conn.execute("CLIENT", "ID") == parent  # the parent's socket still works
