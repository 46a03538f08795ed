"""Hostile input and hostile servers, through the installed command and real loopback servers:
nothing is injected into a header, every input and every answer is bounded, secrets stay
secret in every encoded form, and files planted by another user are not written through."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.smtpserver import SmtpServer, shared_server
from tests.test_e2e import mailrelay, smtp_url

INJECTED_NAME = 'Cron" <a@example.com>\nReply-To: attacker@evil.example\nX-Injected: "x'
PLAIN_MAIL = b"To: b@example.com\nSubject: hi\n\nbody\n"
POSTMARK_OK = {"To": "b@example.com", "MessageID": "pm-1", "ErrorCode": 0, "Message": "OK"}
MAILGUN_OK = {"id": "<mg-1@example.com>", "message": "Queued. Thank you."}


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def outbox_messages(folder: Path) -> list[EmailMessage]:
    return [parse(p.read_bytes()) for p in sorted(folder.glob("*.eml"))]


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with shared_server() as s:
        yield s


class Target:
    """A provider URL and a way to see whatever reached it."""

    def __init__(self, url: str, received: Callable[[], int]) -> None:
        self.url = url
        self.received = received


def make_target(kind: str, smtp: SmtpServer, httpserver: HTTPServer, tmp_path: Path) -> Target:
    if kind == "smtp":
        return Target(smtp_url(smtp, "relay"), lambda: smtp.mail_commands)
    if kind == "outbox":
        folder = tmp_path / "outbox"
        return Target(f"outbox://{folder}", lambda: len(list(folder.glob("*.eml"))))
    base = quote(httpserver.url_for("/").rstrip("/"), safe="")
    if kind == "mailgun":
        httpserver.expect_request("/v3/mg.example.com/messages").respond_with_json(MAILGUN_OK)
        return Target(
            f"mailgun://key-123456@mg.example.com?base_url={base}", lambda: len(httpserver.log)
        )
    httpserver.expect_request("/email").respond_with_json(POSTMARK_OK)
    return Target(f"postmark://pm-token-123456@?base_url={base}", lambda: len(httpserver.log))


@pytest.fixture(params=["smtp", "outbox", "mailgun", "postmark"])
def target(
    request: pytest.FixtureRequest, smtp: SmtpServer, httpserver: HTTPServer, tmp_path: Path
) -> Target:
    return make_target(request.param, smtp, httpserver, tmp_path)


@pytest.fixture
def postmark(smtp: SmtpServer, httpserver: HTTPServer, tmp_path: Path) -> Target:
    """The provider that used to receive these strings raw in its JSON."""
    return make_target("postmark", smtp, httpserver, tmp_path)


# --- 1. no header or recipient can be injected -----------------------------------------


@pytest.mark.parametrize("name", [INJECTED_NAME, "Cron\rX-Injected: x", "Cron\u2028X: y"])
def test_sendmail_full_name_cannot_inject_headers(
    target: Target, tmp_path: Path, name: str
) -> None:
    r = mailrelay(
        "--provider",
        target.url,
        "--state",
        str(tmp_path / "state.toml"),
        "sendmail",
        "-t",
        "-f",
        "a@example.com",
        "-F",
        name,
        input=PLAIN_MAIL.decode(),
    )
    assert r.returncode == 65, r.stderr
    assert r.stderr.count("\n") == 1 and "-F (full name)" in r.stderr
    assert "attacker" not in r.stderr
    assert target.received() == 0  # refused before any provider was contacted
    assert not (tmp_path / "state.toml").exists()


@pytest.mark.parametrize(
    "args, field",
    [
        (["-s", "a\u2028Bcc: x@evil.example"], "subject"),
        (["-s", "a\x85b"], "subject"),
        (["-s", "a\x0bb"], "subject"),
        (["-s", "a\x0cb"], "subject"),
        (["-s", "a\x1cb"], "subject"),
        (["-s", "a\x1db"], "subject"),
        (["-s", "a\x1eb"], "subject"),
        (["-s", "a\u2029b"], "subject"),
        (["-s", "ok", "--header", "X-A: a\rX-B: b"], "--header"),
        (["-s", "ok", "--tag", "t\nX: y"], "tag"),
        (["-s", "ok", "--metadata", "k\nX-Evil: y=1"], "metadata key"),
        (["-s", "ok", "--metadata", "k=v\u2028X: y"], "metadata k"),
        (["-s", "ok", "-r", "Ops\x85X-A: b <a@example.com>"], "--from"),
        (["-s", "ok", "--reply-to", "Ops\u2028 <r@example.com>"], "--reply-to"),
    ],
)
def test_send_flags_refuse_line_breaks_and_controls(
    postmark: Target, tmp_path: Path, args: list[str], field: str
) -> None:
    target = postmark
    base = ["--provider", target.url, "--state", str(tmp_path / "state.toml"), "send"]
    r = mailrelay(*base, "-r", "a@example.com", "--text", "hi", *args, "b@example.com")
    assert r.returncode == 65, r.stderr
    assert r.stderr.count("\n") == 1 and field in r.stderr
    assert target.received() == 0


@pytest.mark.parametrize(
    "change, field",
    [
        ({"attachments": [{"filename": "a\r\nX-A: b.txt", "content_base64": "aGk="}]}, "file name"),
        # readers would decode it into "invoice.exe"
        (
            {"attachments": [{"filename": "=?utf-8?q?invoice.exe?=", "content_base64": "aGk="}]},
            "encoded word",
        ),
        (
            {
                "attachments": [
                    {"filename": "a.png", "content_base64": "aGk=", "content_id": "c\nX: y"}
                ]
            },
            "content id",
        ),
        ({"metadata": {"k\r\nX-Evil": "v"}}, "metadata key"),
        ({"subject": "s\u0085X: y"}, "subject"),
        ({"headers": {"X-A": "a\u2028b"}}, "X-A"),
        ({"tags": ["a\x1eb"]}, "tag"),
        ({"to": ["B\u2029 <b@example.com>"]}, "to"),
    ],
)
def test_json_messages_refuse_them_too(
    postmark: Target, tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    target = postmark
    doc = {"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "hi"}
    doc.update(change)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    r = mailrelay("--provider", target.url, "send", "--message", str(path), input=None)
    assert r.returncode == 65, r.stderr
    assert r.stderr.count("\n") == 1 and field in r.stderr
    assert target.received() == 0


def test_eml_subject_with_a_separator_is_refused(target: Target, tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes("From: a@example.com\nTo: b@example.com\nSubject: a\u2028b\n\nhi\n".encode())
    r = mailrelay("--provider", target.url, "send", "--eml", str(path), input=None)
    assert r.returncode == 65, r.stderr
    assert "Subject" in r.stderr or "subject" in r.stderr
    assert target.received() == 0


def test_attachment_names_are_rfc2231_encoded_and_arrive_whole(tmp_path: Path) -> None:
    name = 'rapport "final"; name=x.exe été.pdf'
    doc = {
        "from": "a@example.com",
        "to": ["b@example.com"],
        "subject": "s",
        "text": "hi",
        "attachments": [{"filename": name, "content_base64": "aGk="}],
    }
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    out = tmp_path / "outbox"
    r = mailrelay("--provider", f"outbox://{out}", "send", "--message", str(path), input=None)
    assert r.returncode == 0, r.stderr
    (msg,) = outbox_messages(out)
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == name


# --- 2 and 3. one rendering before any provider; text arrives as typed ---------------------

LONG_WORD = "x" * 300 + "\U0001f600"


@pytest.mark.parametrize(
    "subject", [LONG_WORD, "Price =?utf-8?q?x?= list", "=?utf-8?b?aGk=?=", "Ünïcode " + LONG_WORD]
)
def test_subjects_and_headers_arrive_as_typed(tmp_path: Path, subject: str) -> None:
    out = tmp_path / "outbox"
    name = "Bob =?utf-8?q?x?= " + LONG_WORD
    r = mailrelay(
        "--provider",
        f"outbox://{out}",
        "send",
        "-r",
        f"{name} <a@example.com>",
        "-s",
        subject,
        "--header",
        f"X-Note: {subject}",
        "--text",
        "hi",
        "b@example.com",
    )
    assert r.returncode == 0, r.stderr
    (msg,) = outbox_messages(out)
    assert msg["Subject"] == subject
    assert msg["X-Note"] == subject
    assert msg["From"].addresses[0].display_name == name
    raw = next(out.glob("*.eml")).read_bytes()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_a_message_that_cannot_be_written_is_a_data_error_before_any_provider(
    smtp: SmtpServer, tmp_path: Path
) -> None:
    path = tmp_path / "m.json"
    # a lone surrogate: valid JSON, no UTF-8 form
    path.write_text('{"from": "a@example.com", "to": ["b@example.com"], "subject": "s\\ud800"}')
    r = mailrelay("--provider", smtp_url(smtp, "relay"), "send", "--message", str(path), input=None)
    assert r.returncode == 65, r.stderr
    assert r.stderr.count("\n") == 1
    assert smtp.connections == 0


# --- 4. bounded work for any input -----------------------------------------------------


def test_a_header_folded_over_200000_lines_costs_linear_memory() -> None:
    import tracemalloc

    from mailrelay.message import parse_eml

    data = b"From: a@example.com\nTo: b@example.com\nX-Long: x\n" + b" y\n" * 200_000
    data += b"Subject: s\n\nbody\n"
    tracemalloc.start()
    try:
        msg = parse_eml(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert msg.header("X-Long") == "x" + " y" * 200_000
    assert peak < 100 * len(data)  # the quadratic parser: about 400 times the input


def nested(depth: int) -> bytes:
    head = b"From: a@example.com\nTo: b@example.com\nSubject: s\nMIME-Version: 1.0\n"
    body = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(depth)
    )
    body += b"Content-Type: text/plain\n\nhi\n"
    body += b"".join(b"--b%d--\n" % i for i in reversed(range(depth)))
    return head + body


@pytest.mark.parametrize("depth", [1000, 2000])
def test_deeply_nested_multipart_is_a_data_error(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "deep.eml"
    path.write_bytes(nested(depth))
    r = mailrelay("--provider", f"outbox://{tmp_path / 'o'}", "send", "--eml", str(path))
    assert r.returncode == 65, r.stderr
    assert r.stderr.count("\n") == 1 and "nested too deeply" in r.stderr


@pytest.fixture
def small_limit(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text('[defaults]\nfrom = "a@example.com"\nmax_size = 200000\n')
    return {"MAILRELAY_CONFIG": str(config)}


@pytest.mark.parametrize(
    "args",
    [
        ["-s", "x", "--text", "hi", "-a", "/dev/zero"],
        ["-s", "x", "--text-file", "/dev/zero"],
        ["--eml", "/dev/zero"],
        ["--message", "/dev/zero"],
    ],
)
def test_endless_inputs_stop_at_the_size_limit(
    tmp_path: Path, small_limit: dict[str, str], args: list[str]
) -> None:
    out = tmp_path / "outbox"
    r = mailrelay(
        "--provider", f"outbox://{out}", "send", *args, "b@example.com", env=small_limit, input=None
    )
    if "--message" in args:  # gives its own recipients
        r = mailrelay("--provider", f"outbox://{out}", "send", *args, env=small_limit, input=None)
    assert r.returncode == 65, r.stderr
    assert r.stderr.count("\n") == 1
    assert "size limit" in r.stderr or "not a regular file" in r.stderr
    assert not out.exists() or not list(out.iterdir())


def test_a_fifo_attachment_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = tmp_path / "outbox"
    r = mailrelay(
        "--provider", f"outbox://{out}", "send", "-r", "a@example.com", "-s", "x",
        "--text", "hi", "-a", str(fifo), "b@example.com", timeout=30,
    )  # fmt: skip
    assert r.returncode == 65, r.stderr
    assert "not a regular file" in r.stderr


def test_a_fifo_config_is_a_config_error(tmp_path: Path) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    r = mailrelay("--config", str(fifo), "providers", timeout=30)
    assert r.returncode == 78, r.stderr
    assert "not a regular file" in r.stderr


def test_a_fifo_state_file_never_holds_mail_up(tmp_path: Path) -> None:
    fifo = tmp_path / "state.toml"
    os.mkfifo(fifo)
    out = tmp_path / "outbox"
    r = mailrelay(
        "--provider", f"outbox://{out}", "--state", str(fifo), "send", "-r", "a@example.com",
        "-s", "x", "--text", "hi", "b@example.com", timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "not a regular file" in r.stderr
    assert len(outbox_messages(out)) == 1


# --- 5. hostile servers: every attempt ends at its deadline, every answer is bounded ----


class HostileServer:
    """A TCP server on 127.0.0.1 that answers each connection with `talk(conn)`, in a thread;
    every connection is given up after `limit` seconds whatever `talk` does."""

    def __init__(self, talk: Callable[[socket.socket, float], None], limit: float = 20) -> None:
        self.talk = talk
        self.limit = limit
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.sent = 0  # bytes sent, over every connection
        self.closed_by_client = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=self.limit + 5)

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.talk(conn, time.monotonic() + self.limit)
            except OSError:  # the client gave up and closed: what the tests want
                self.closed_by_client.set()

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def stopped(self) -> bool:
        return self._stop.is_set()


def read_request(conn: socket.socket) -> None:
    conn.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


def postmark_at(port: int, name: str, timeout: float = 2) -> str:
    base = quote(f"http://127.0.0.1:{port}", safe="")
    return f"postmark://pm-token-123456@?base_url={base}&timeout={timeout:g}&name={name}"


def failover_from(hostile_url: str, smtp: SmtpServer, tmp_path: Path, timeout: int) -> Any:
    """`send --json` through `hostile_url` first, then the real relay; the two attempts."""
    r = mailrelay(
        "--provider", hostile_url, "--provider", smtp_url(smtp, "relay"),
        "--state", str(tmp_path / "state.toml"), "send", "--timeout", str(timeout), "--json",
        "-r", "a@example.com", "-s", "x", "--text", "hi", "b@example.com",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    first, second = json.loads(r.stdout)["attempts"]
    assert second["provider"] == "relay" and second["outcome"] == "accepted"
    return first


def test_a_trickling_http_server_cannot_hold_the_attempt(smtp: SmtpServer, tmp_path: Path) -> None:
    server: HostileServer

    def trickle(conn: socket.socket, until: float) -> None:
        read_request(conn)
        reply = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000
        for byte in reply:
            if time.monotonic() > until or server.stopped():
                return
            server.send(conn, bytes([byte]))
            time.sleep(0.4)

    with HostileServer(trickle) as server:
        first = failover_from(postmark_at(server.port, "slow"), smtp, tmp_path, 15)
    assert first["provider"] == "slow" and first["outcome"] == "ambiguous"
    assert len(smtp.messages) == 1


def test_an_endless_error_body_is_read_only_in_part(smtp: SmtpServer, tmp_path: Path) -> None:
    server: HostileServer
    cap = 512 * 1024 * 1024

    def endless(conn: socket.socket, until: float) -> None:
        read_request(conn)
        server.send(conn, b"HTTP/1.1 500 Oops\r\nContent-Length: 100000000000\r\n\r\n")
        block = b"x" * 65536
        while time.monotonic() < until and server.sent < cap and not server.stopped():
            server.send(conn, block)

    with HostileServer(endless) as server:
        first = failover_from(postmark_at(server.port, "endless", timeout=10), smtp, tmp_path, 30)
        assert server.closed_by_client.wait(10)
    assert first["outcome"] == "transient" and "HTTP 500" in first["detail"]
    assert len(first["detail"]) < 1000
    # what the kernel's buffers hold beyond the 64 KiB read, far below the server's cap
    assert server.sent < 64 * 1024 * 1024


def test_an_smtp_server_with_endless_greeting_lines_cannot_hold_the_attempt(
    smtp: SmtpServer, tmp_path: Path
) -> None:
    server: HostileServer

    def chatter(conn: socket.socket, until: float) -> None:
        while time.monotonic() < until and not server.stopped():
            server.send(conn, b"220-still greeting you\r\n")
            time.sleep(0.1)

    with HostileServer(chatter) as server:
        url = f"smtp://127.0.0.1:{server.port}?security=none&timeout=2&name=chatty"
        first = failover_from(url, smtp, tmp_path, 15)
    assert first["provider"] == "chatty" and first["outcome"] == "transient"


def test_an_endless_smtp_reply_is_cut_at_64_kib(smtp: SmtpServer, tmp_path: Path) -> None:
    server: HostileServer

    def flood(conn: socket.socket, until: float) -> None:
        line = b"220-" + b"y" * 1000 + b"\r\n"
        while time.monotonic() < until and not server.stopped():
            server.send(conn, line * 64)

    with HostileServer(flood) as server:
        url = f"smtp://127.0.0.1:{server.port}?security=none&timeout=10&name=flood"
        first = failover_from(url, smtp, tmp_path, 30)
        assert server.closed_by_client.wait(10)
    assert first["provider"] == "flood" and "longer than 65536" in first["detail"]
    assert server.sent < 64 * 1024 * 1024


# --- 6. secrets --------------------------------------------------------------------------


def send_with_postmark_token(tmp_path: Path, httpserver: HTTPServer, token: str) -> Any:
    """`send` through a Postmark provider whose token comes from $PM_TOKEN."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[defaults]\nfrom = "a@example.com"\n\n[[providers]]\ntype = "postmark"\n'
        f'base_url = "{httpserver.url_for("/").rstrip("/")}"\n'
        'server_token = { env = "PM_TOKEN" }\n'
    )
    return mailrelay(
        "--config", str(config), "send", "-s", "x", "--text", "hi", "b@example.com",
        env={"PM_TOKEN": token},
    )  # fmt: skip


def test_a_secret_with_a_crlf_end_is_used_without_it(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(
        "/email", headers={"X-Postmark-Server-Token": "pm-token-123456"}
    ).respond_with_json(POSTMARK_OK)
    r = send_with_postmark_token(tmp_path, httpserver, "pm-token-123456\r\n")
    assert r.returncode == 0, r.stderr
    assert len(httpserver.log) == 1


def test_a_secret_with_a_control_character_is_refused_unseen(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    r = send_with_postmark_token(tmp_path, httpserver, "pm-tok\x1ben-123456")
    assert r.returncode == 78, r.stderr  # every provider's configuration failed
    assert "control character" in r.stderr
    assert "pm-tok" not in r.stderr and "en-123456" not in r.stderr
    assert httpserver.log == []


def test_an_echoed_basic_authorization_is_scrubbed_everywhere(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    key = "key-0123456789abcdef"
    basic = base64.b64encode(f"api:{key}".encode()).decode()

    def echo(request: Request) -> Response:
        return Response(
            json.dumps({"message": f"bad auth: {request.headers.get('Authorization')}"}),
            status=503,
            content_type="application/json",
        )

    httpserver.expect_request("/v3/mg.example.com/messages").respond_with_handler(echo)
    base = quote(httpserver.url_for("/").rstrip("/"), safe="")
    log = tmp_path / "audit.jsonl"
    r = mailrelay(
        "--provider", f"mailgun://{key}@mg.example.com?base_url={base}", "--state",
        str(tmp_path / "state.toml"), "--log-file", str(log), "send", "--queue", "--json",
        "-r", "a@example.com", "-s", "x", "--text", "hi", "b@example.com",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr  # queued
    assert len(httpserver.log) == 1
    assert "bad auth: Basic ***" in r.stdout
    spool = Path(os.environ["XDG_DATA_HOME"]) / "mailrelay" / "spool"
    places = {"stdout": r.stdout, "stderr": r.stderr}
    places["state"] = (tmp_path / "state.toml").read_text()
    places["audit log"] = log.read_text()
    for path in spool.rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_text(errors="replace")
    assert len(places) > 4  # the spool holds the message
    for where, text in places.items():
        assert basic not in text, where
        assert key not in text, where


# --- 7. files another user planted ---------------------------------------------------------


def send_with(tmp_path: Path, *extra: str) -> Any:
    out = tmp_path / "outbox"
    return mailrelay(
        "--provider", f"outbox://{out}", "--state", str(tmp_path / "state" / "state.toml"),
        *extra, "send", "-r", "a@example.com", "-s", "x", "--text", "hi", "b@example.com",
    )  # fmt: skip


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_text("someone else's file\n")
    path.chmod(0o644)
    return path


def test_a_planted_lock_file_link_is_not_followed(tmp_path: Path, victim: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.toml.lock").symlink_to(victim)
    r = send_with(tmp_path)
    assert r.returncode == 0, r.stderr  # the mail goes all the same
    assert "symbolic link" in r.stderr
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert victim.read_text() == "someone else's file\n"


def test_a_planted_audit_log_link_is_not_followed(tmp_path: Path, victim: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.symlink_to(victim)
    r = send_with(tmp_path, "--log-file", str(log))
    assert r.returncode == 0, r.stderr
    assert "symbolic link" in r.stderr
    assert victim.read_text() == "someone else's file\n"


@pytest.mark.parametrize("which", ["lock", "audit"])
def test_a_file_owned_by_another_user_is_refused(tmp_path: Path, which: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    (tmp_path / "state").mkdir()
    path = tmp_path / "state" / "state.toml.lock" if which == "lock" else tmp_path / "audit.jsonl"
    path.write_text("")
    os.chown(path, 54321, 54321)
    extra = ("--log-file", str(path)) if which == "audit" else ()
    r = send_with(tmp_path, *extra)
    assert r.returncode == 0, r.stderr
    assert "owned by another user" in r.stderr
    assert path.read_text() == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["-t", "-f", "a@example.com\nX-Injected: x"],
        ["-f", "a@example.com", "b@example.com\r\nX-Injected: x"],
        ["-t", "-f", "a@example.com", "-F", "Cron\x85Daemon"],
    ],
)
def test_sendmail_sender_and_recipients_cannot_inject(
    smtp: SmtpServer, tmp_path: Path, argv: list[str]
) -> None:
    r = mailrelay(
        "--provider", smtp_url(smtp, "relay"), "--state", str(tmp_path / "state.toml"),
        "sendmail", *argv, input=PLAIN_MAIL.decode(),
    )  # fmt: skip
    assert r.returncode == 65, r.stderr
    assert r.stderr.count("\n") == 1
    assert smtp.connections == 0


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("a\u2028b\rc", "U+2028"),  # the first bad character is the one named
        ("a\u2029b\x1bc", "U+2029"),
        ("a\x1bb\u2028c", "U+001B"),
        ("a\rb\u2029", "line breaks (CR/LF)"),
        ("a\x85b", "U+0085"),
    ],
)
def test_a_header_value_names_its_first_bad_character(value: str, named: str) -> None:
    from mailrelay.errors import MessageError
    from mailrelay.message.headers import check_header_value

    check_header_value("Subject", "plain \t text, é and ü")  # TAB and letters are fine
    with pytest.raises(MessageError, match="Subject: ") as info:
        check_header_value("Subject", value)
    assert named in str(info.value)
    assert value not in str(info.value)
