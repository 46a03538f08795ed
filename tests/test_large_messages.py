"""Large attachments: the message bytes come in chunks (attachments base64-encoded on the way),
equal to what the email package would write, and a 25 MB send stays within 4x its size."""

from __future__ import annotations

import email
import email.generator
import itertools
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailrelay.message import Address, Attachment, Message
from mailrelay.providers.outbox import OutboxProvider
from mailrelay.providers.smtp import SmtpProvider
from tests.smtpserver import SmtpServer, shared_server
from tests.test_e2e import mailrelay_command, write_config

BIG = 25 * 1024 * 1024


@pytest.fixture
def restart_boundaries(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Boundaries numbered from a counter that each call restarts, so two writings of one
    message can be compared byte for byte (the email package's are random)."""

    def restart() -> None:
        counter = itertools.count()
        monkeypatch.setattr(
            email.generator.Generator,
            "_make_boundary",
            classmethod(lambda cls, text=None: f"===============mailrelay{next(counter)}=="),
        )

    return restart


def blob(n: int, seed: int = 0) -> bytes:
    return bytes((i * 131 + seed) % 256 for i in range(n))


def shapes() -> dict[str, Message]:
    sender = Address("ops@example.com", "Ops")
    to = [Address("alice@example.com")]
    date = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

    def make(**kw: Any) -> Message:
        return Message(sender=sender, to=to, date=date, message_id="<m@example.com>", **kw)

    return {
        "text only": make(subject="hello", text="one\n.two\n..three\n"),
        "html only": make(subject="hi", html="<p>hi</p>"),
        "empty body": make(subject="nothing"),
        "text and html": make(subject="both", text="plain\n", html="<p>rich</p>"),
        "attachments": make(
            subject="files",
            text="see attached\n",
            attachments=[
                Attachment("a.bin", "application/octet-stream", blob(100_000)),
                Attachment("empty.bin", "application/octet-stream", b""),
                Attachment("one.bin", "application/octet-stream", b"x"),
                Attachment("line.bin", "application/octet-stream", blob(57)),
                Attachment("notes.txt", "text/plain", b".starts with a dot\r\n.\r\n"),
                # exactly one chunk, and one byte more
                Attachment("chunk.bin", "application/octet-stream", blob(57 * 1024, 1)),
                Attachment("chunk1.bin", "application/octet-stream", blob(57 * 1024 + 1, 2)),
            ],
        ),
        "inline image with html": make(
            subject="report",
            text="report\n",
            html='<p>chart: <img src="cid:chart1"></p>',
            attachments=[
                Attachment("data.csv", "text/csv", b"a,b\r\n1,2\r\n"),
                Attachment(
                    "chart.png", "image/png", blob(5000, 3), inline=True, content_id="chart1"
                ),
                Attachment("logo.png", "image/png", blob(300, 4), inline=True),
            ],
        ),
        "non-ASCII": make(
            subject="Grüße — 報告",
            text="Prüfung bestanden ✓\n",
            html="<p>Prüfung ✓</p>",
            cc=[Address("bob@example.com", "Zoë Bäcker")],
            reply_to=[Address("team@example.com", "Équipe")],
            attachments=[Attachment("Übersicht 報告.pdf", "application/pdf", blob(4000, 5))],
        ),
        "headers": make(
            subject="with headers",
            text="x\n",
            headers=[("X-Job", "backup " * 30), ("List-Id", "<ops.example.com>")],
            attachments=[Attachment("a.bin", "application/octet-stream", blob(200))],
        ),
    }


SHAPES = shapes()


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("mime_policy", [policy.SMTP, policy.SMTPUTF8], ids=["SMTP", "SMTPUTF8"])
def test_chunks_are_the_email_packages_bytes(
    name: str, mime_policy: policy.Policy, restart_boundaries: Callable[[], None]
) -> None:
    message = SHAPES[name]
    restart_boundaries()
    expected = message.to_mime().as_bytes(policy=mime_policy)
    restart_boundaries()
    stream = message.byte_stream(mime_policy)
    chunks = list(stream)
    joined = b"".join(chunks)
    assert joined == expected
    assert stream.size == len(joined)
    assert stream.eight_bit == (not joined.isascii())
    if mime_policy is policy.SMTP:
        restart_boundaries()
        assert message.as_bytes() == expected
    # every chunk is whole lines, so dot-stuffing and CRLF → LF can go chunk by chunk
    assert all(chunk.endswith(b"\r\n") for chunk in chunks)

    parsed = email.message_from_bytes(joined, _class=EmailMessage, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == message.subject
    leaves = [p for p in parsed.walk() if not p.is_multipart()]
    bodies = [p.get_content().replace("\r\n", "\n") for p in leaves if not p.get_filename()]
    expected_bodies = [b for b in (message.text, message.html) if b is not None] or [""]
    assert [b.strip() for b in bodies] == [b.strip() for b in expected_bodies]
    attached = [(p.get_filename(), p.get_payload(decode=True)) for p in leaves if p.get_filename()]
    assert sorted(attached) == sorted((a.filename, a.data) for a in message.attachments)


def test_a_message_given_whole_is_one_chunk_as_it_is() -> None:
    raw = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: x\r\n\r\n.body\r\n"
    message = Message(sender=Address("a@example.com"), to=[Address("b@example.com")], raw=raw)
    stream = message.byte_stream()
    assert list(stream) == [raw] and stream.size == len(raw) and not stream.eight_bit
    assert message.as_bytes() == raw


def test_smtp_sends_the_chunks_dot_stuffed_with_their_size() -> None:
    message = Message(
        sender=Address("ops@example.com"),
        to=[Address("alice@example.com")],
        subject="dots",
        text=".first\n..second\nmiddle\n.\nlast\n",
        attachments=[
            Attachment("a.bin", "application/octet-stream", blob(300_000)),
            Attachment(".dotfile", "text/plain", b".\r\n.x\r\n"),
        ],
    )
    with shared_server() as server:
        provider = SmtpProvider("relay", host="127.0.0.1", port=server.port, security="none")
        provider.send(message, timeout=10)
        ((_, _, data),) = server.messages
        (options,) = server.mail_options
    parsed = email.message_from_bytes(data, _class=EmailMessage, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    text = parsed.get_body(("plain",))
    assert text is not None and text.get_content().replace("\r\n", "\n") == message.text
    attached = [(p.get_filename(), p.get_payload(decode=True)) for p in parsed.iter_attachments()]
    assert attached == [(a.filename, a.data) for a in message.attachments]
    # unstuffed by the server: a dot was doubled on each of these lines, the lone one too
    assert b"\r\n.first\r\n..second\r\nmiddle\r\n.\r\nlast\r\n" in data
    # RFC 1870: the size counts the message, not the dots doubled for the transfer
    assert f"SIZE={len(data)}" in options


# Linux keeps the old memory's high-water mark across exec, and a child forked (or vforked,
# as subprocess does) from this test process starts from pytest's: so a small Python in
# between starts the command and reads its peak RSS with os.wait4.
_MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=sys.stderr)
_, status, usage = os.wait4(proc.pid, 0)
proc.returncode = os.waitstatus_to_exitcode(status)
print(proc.returncode, usage.ru_maxrss * 1024)
"""


def run_measured(args: list[str]) -> tuple[int, int, str]:
    """Run the installed command: its exit status, peak RSS in bytes and output."""
    measured = subprocess.run(
        [sys.executable, "-c", _MEASURE, mailrelay_command(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    code, peak = measured.stdout.split()
    return int(code), int(peak), measured.stderr


@pytest.fixture
def big_attachment(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(BIG)
    path = tmp_path / "25MB.bin"
    path.write_bytes(data)
    return path, data


def attachment_of(data: bytes) -> bytes:
    parsed = email.message_from_bytes(data, _class=EmailMessage, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    (part,) = parsed.iter_attachments()
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def test_a_25_mb_attachment_over_smtp_peaks_below_4x_its_size(
    tmp_path: Path, big_attachment: tuple[Path, bytes]
) -> None:
    path, data = big_attachment
    with SmtpServer(size_limit=64 * 1024 * 1024) as server:
        cfg = write_config(
            tmp_path / "config.toml",
            [
                {
                    "name": "relay",
                    "type": "smtp",
                    "host": "127.0.0.1",
                    "port": server.port,
                    "security": "none",
                    "timeout": 60,
                }
            ],
        )
        args = ["--config", str(cfg), "--state", str(tmp_path / "state.toml"), "send"]
        args += ["-s", "big", "--text", "see attached", "-a", str(path), "ops@example.com"]
        code, peak, stderr = run_measured(args)
        assert code == 0, stderr
        ((_, _, received),) = server.messages
        (options,) = server.mail_options
    assert f"SIZE={len(received)}" in options  # exact, known before the first byte went
    assert attachment_of(received) == data
    assert peak < 4 * BIG, f"peak RSS {peak / 2**20:.0f} MiB"


def test_a_25_mb_attachment_into_the_outbox_peaks_below_4x_its_size(
    tmp_path: Path, big_attachment: tuple[Path, bytes]
) -> None:
    path, data = big_attachment
    outbox = tmp_path / "outbox"
    cfg = write_config(
        tmp_path / "config.toml", [{"name": "box", "type": "outbox", "path": str(outbox)}]
    )
    args = ["--config", str(cfg), "--state", str(tmp_path / "state.toml"), "send"]
    args += ["-s", "big", "--text", "see attached", "-a", str(path), "ops@example.com"]
    code, peak, stderr = run_measured(args)
    assert code == 0, stderr
    (written_file,) = outbox.glob("*.eml")
    assert attachment_of(written_file.read_bytes()) == data
    assert peak < 4 * BIG, f"peak RSS {peak / 2**20:.0f} MiB"


def test_outbox_writes_the_envelope_then_the_chunks(tmp_path: Path) -> None:
    message = SHAPES["inline image with html"]
    OutboxProvider("box", tmp_path).send(message, timeout=5)
    (written_file,) = tmp_path.glob("*.eml")
    data = written_file.read_bytes()
    assert data.startswith(
        b"Return-Path: <ops@example.com>\r\nX-Envelope-To: alice@example.com\r\n"
    )
    parsed = email.message_from_bytes(data, _class=EmailMessage, policy=policy.default)
    attached = [
        (p.get_filename(), p.get_payload(decode=True)) for p in parsed.walk() if p.get_filename()
    ]
    assert sorted(attached) == sorted((a.filename, a.data) for a in message.attachments)
