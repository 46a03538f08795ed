"""parse_eml: a whole RFC 5322 message (sendmail mode, send --eml) as a Message keeping its bytes.

The last tests send parsed messages through every HTTP provider's loopback fake: the API
providers carry a whole message field by field (subject, text, HTML, attachments, headers).
"""

from __future__ import annotations

from email import message_from_bytes
from email import policy as email_policy

import pytest
from pytest_httpserver import HTTPServer

from mailrelay.cli.sendmail import cut_at_lone_dot, parse_sendmail_args
from mailrelay.errors import MessageError, UsageError
from mailrelay.message import Address, parse_eml
from mailrelay.providers import registry
from mailrelay.providers.options import ProviderSpec
from tests.esp.fakebase import FakeESP, server_base_url

CRON = (
    "From: root (Cron Daemon)\n"
    "To: ops@example.com\n"
    "Subject: Cron <root@web1> /usr/local/bin/backup.sh\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=UTF-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "Auto-Submitted: auto-generated\n"
    "Precedence: bulk\n"
    "X-Cron-Env: <SHELL=/bin/sh>\n"
    "X-Cron-Env: <HOME=/root>\n"
    "\n"
    "backup done: 3 fichiers copiés ✓\n"
    ".hidden file kept\n"
).encode()

MULTIPART = (
    b"From: Reports <reports@example.com>\r\n"
    b"To: Boss <boss@example.com>\r\n"
    b"Cc: team@example.com\r\n"
    b"Bcc: audit@example.com\r\n"
    b"Reply-To: help@example.com\r\n"
    b"Subject: =?utf-8?q?Rapport_d=C3=A9taill=C3=A9?=\r\n"
    b"Date: Mon, 02 Nov 2026 09:00:00 +0100\r\n"
    b"Message-ID: <report-42@example.com>\r\n"
    b"X-Ticket: 42\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"plain body\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>html body</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: text/csv\r\n"
    b'Content-Disposition: attachment; filename="report.csv"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"YSxiCjEsMgo=\r\n"
    b"--outer--\r\n"
)


def head(raw: bytes) -> bytes:
    return raw.partition(b"\r\n\r\n")[0]


def test_cron_output_is_kept_and_its_from_rewritten() -> None:
    msg = parse_eml(
        CRON,
        extract=True,
        envelope_from="root",
        full_name="CronDaemon",
        default_sender="Ops <cron@example.com>",
    )
    assert msg.raw is not None
    assert msg.sender == Address("cron@example.com", "CronDaemon")
    assert msg.envelope_from is None and msg.return_path.email == "cron@example.com"
    assert [a.email for a in msg.recipients()] == ["ops@example.com"]
    assert msg.subject == "Cron <root@web1> /usr/local/bin/backup.sh"
    assert msg.text == "backup done: 3 fichiers copiés ✓\n.hidden file kept\n"
    # every header but From byte for byte, in order, CRLF; Date and Message-ID added
    lines = head(msg.raw).split(b"\r\n")
    assert lines[0] == b"From: CronDaemon <cron@example.com>"
    assert lines[1:10] == CRON.split(b"\n\n")[0].split(b"\n")[1:]
    assert lines[10].startswith(b"Date: ") and lines[11].startswith(b"Message-ID: <")
    assert msg.raw.endswith(
        "\r\nbackup done: 3 fichiers copiés ✓\r\n.hidden file kept\r\n".encode()
    )
    assert msg.message_id == lines[11].decode().removeprefix("Message-ID: ")
    # one field per name for the API providers (most take headers as a JSON object)
    assert ("X-Cron-Env", "<SHELL=/bin/sh>, <HOME=/root>") in msg.headers
    assert ("Auto-Submitted", "auto-generated") in msg.headers


def test_cron_name_comes_from_the_from_comment_without_f_flag() -> None:
    msg = parse_eml(CRON, default_sender="cron@example.com")
    assert msg.sender == Address("cron@example.com", "Cron Daemon")


def test_qualified_envelope_sender_becomes_mail_from_and_from() -> None:
    msg = parse_eml(CRON, envelope_from="backup@example.com", default_sender="x@example.com")
    assert msg.sender.email == "backup@example.com"
    assert msg.return_path.email == "backup@example.com"
    # a From that is fine stays, and -f is the envelope sender only
    msg = parse_eml(MULTIPART, envelope_from="bounces@example.com")
    assert msg.sender.email == "reports@example.com"
    assert msg.envelope_from == Address("bounces@example.com")


def test_no_sender_anywhere_is_a_one_line_error() -> None:
    with pytest.raises(MessageError, match="no usable From"):
        parse_eml(CRON, envelope_from="root")


def test_multipart_with_bcc_date_and_message_id_kept() -> None:
    msg = parse_eml(MULTIPART)
    assert msg.raw is not None
    assert b"Bcc" not in msg.raw and b"audit@example.com" not in msg.raw
    assert [a.email for a in msg.to] == ["boss@example.com"]
    assert [a.email for a in msg.cc] == ["team@example.com"]
    assert [a.email for a in msg.bcc] == ["audit@example.com"]
    assert msg.message_id == "<report-42@example.com>"
    assert msg.date.isoformat() == "2026-11-02T09:00:00+01:00"
    assert msg.subject == "Rapport détaillé"
    assert (
        msg.text == "plain body" and msg.html == "<p>html body</p>"
    )  # CRLF before a boundary is the boundary's
    assert [(a.filename, a.content_type, a.data) for a in msg.attachments] == [
        ("report.csv", "text/csv", b"a,b\n1,2\n")
    ]
    assert [str(a) for a in msg.reply_to] == ["help@example.com"]
    assert msg.headers == [("X-Ticket", "42")]
    # the bytes are the input less the Bcc line
    assert msg.raw == MULTIPART.replace(b"Bcc: audit@example.com\r\n", b"")
    assert msg.as_bytes() == msg.raw


def test_without_extract_only_the_arguments_are_recipients() -> None:
    msg = parse_eml(MULTIPART, extract=False, recipients=["other@example.com"])
    assert [a.email for a in msg.recipients()] == ["other@example.com"]
    assert msg.raw is not None and b"Bcc" not in msg.raw


def test_extract_adds_the_arguments_once() -> None:
    msg = parse_eml(MULTIPART, recipients=["boss@example.com", "extra@example.com"])
    assert [a.email for a in msg.recipients()] == [
        "boss@example.com",
        "team@example.com",
        "audit@example.com",
        "extra@example.com",
    ]


def test_folded_bcc_and_resent_bcc_are_removed() -> None:
    data = (
        b"From: a@example.com\nTo: b@example.com\nBcc: c@example.com,\n d@example.com\n"
        b"Resent-Bcc: e@example.com\nSubject: s\n\nbody\n"
    )
    msg = parse_eml(data)
    assert msg.raw is not None
    assert b"c@example.com" not in msg.raw and b"d@example.com" not in msg.raw
    assert b"e@example.com" not in msg.raw and b"Bcc" not in msg.raw
    assert [a.email for a in msg.bcc] == ["c@example.com", "d@example.com"]


def test_8bit_subject_and_body_go_through_byte_for_byte() -> None:
    data = "From: a@example.com\nTo: b@example.com\nSubject: Café ☃ prêt\n\nnaïve\n".encode()
    msg = parse_eml(data)
    assert msg.subject == "Café ☃ prêt"
    assert msg.raw is not None
    assert "Subject: Café ☃ prêt\r\n".encode() in msg.raw
    assert msg.raw.endswith("\r\n\r\nnaïve\r\n".encode())


def test_latin1_bytes_do_not_break_parsing() -> None:
    data = b"From: a@example.com\nTo: b@example.com\nSubject: caf\xe9\n\nna\xefve\n"
    msg = parse_eml(data)
    assert msg.raw is not None and b"Subject: caf\xe9\r\n" in msg.raw
    assert msg.subject.startswith("caf") and msg.subject.encode("utf-8")


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_lf_and_crlf_input_give_the_same_bytes(eol: bytes) -> None:
    data = eol.join([b"From: a@example.com", b"To: b@example.com", b"Subject: s", b"", b"x", b""])
    msg = parse_eml(data + b"y")  # and a last line without a line end
    assert msg.raw is not None
    assert msg.raw.endswith(b"\r\n\r\nx\r\ny\r\n")
    assert b"\n" not in msg.raw.replace(b"\r\n", b"")


def test_mbox_from_line_is_dropped() -> None:
    data = b"From root@web1 Mon Nov  2 09:00:00 2026\nFrom: a@example.com\nTo: b@example.com\n\nx\n"
    msg = parse_eml(data)
    assert msg.raw is not None and msg.raw.startswith(b"From: a@example.com\r\n")
    assert msg.sender.email == "a@example.com"


def test_a_body_without_headers_is_sent_as_the_body() -> None:
    # as sendmail: the header block ends at the first line that is not a field
    msg = parse_eml(
        b"disk 91% full on web1\nsecond line\n",
        recipients=["ops@example.com"],
        default_sender="cron@example.com",
    )
    assert msg.raw is not None
    assert msg.text == "disk 91% full on web1\nsecond line\n"
    assert msg.subject == ""
    assert msg.raw.startswith(b"From: cron@example.com\r\nDate: ")
    assert msg.raw.endswith(b"\r\n\r\ndisk 91% full on web1\r\nsecond line\r\n")
    parsed = message_from_bytes(msg.raw, policy=email_policy.default)
    assert parsed["Message-ID"]


def test_no_recipients_is_one_line() -> None:
    with pytest.raises(MessageError) as info:
        parse_eml(CRON, extract=False, default_sender="x@example.com")
    assert "no recipients" in str(info.value) and "\n" not in str(info.value)


def test_unqualified_recipient_names_mailto() -> None:
    data = b"From: a@example.com\nTo: root\n\nx\n"
    with pytest.raises(MessageError, match=r"'root' has no domain.*MAILTO"):
        parse_eml(data)


def test_empty_input_is_refused() -> None:
    with pytest.raises(MessageError, match="empty input"):
        parse_eml(b"\n\n", recipients=["a@example.com"], default_sender="x@example.com")


def test_huge_message_is_a_size_error() -> None:
    data = b"From: a@example.com\nTo: b@example.com\n\n" + b"x" * 2000
    with pytest.raises(MessageError, match=r"message too large: .* limit 1000"):
        parse_eml(data, max_size=1000)


# --- the sendmail command line ------------------------------------------------------------


def test_crons_argv() -> None:
    args = parse_sendmail_args(["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"])
    assert args.extract and args.ignore_dots
    assert args.full_name == "CronDaemon" and args.sender == "root"
    assert args.recipients == [] and args.warnings == [] and args.mode == "send"


def test_flag_forms() -> None:
    args = parse_sendmail_args(
        ["-ti", "-rme@example.com", "-F", "Me Myself", "-B8BITMIME", "-bm", "-em", "-Nnever"]
    )
    assert args.extract and args.ignore_dots and args.sender == "me@example.com"
    assert args.full_name == "Me Myself" and args.warnings == []
    args = parse_sendmail_args(["a@example.com", "-v", "--", "-odd@example.com", "-t"])
    assert args.recipients == ["a@example.com", "-odd@example.com", "-t"]
    assert args.verbose == 1 and not args.extract and not args.ignore_dots


def test_unknown_flags_warn_and_go_on() -> None:
    args = parse_sendmail_args(["-Zfoo", "--weird", "-C", "/etc/mail/sendmail.cf", "a@example.com"])
    assert args.recipients == ["a@example.com"]
    assert args.warnings[0] == "ignoring unknown option -Zfoo"
    assert args.warnings[1] == "ignoring unknown option --weird"
    assert args.warnings[2].startswith("ignoring -C /etc/mail/sendmail.cf")


def test_queue_modes_and_refusals() -> None:
    assert parse_sendmail_args(["-bp"]).mode == "list"
    assert parse_sendmail_args(["-q"]).mode == "flush"
    with pytest.raises(UsageError, match="-bs is not supported"):
        parse_sendmail_args(["-bs"])
    with pytest.raises(UsageError, match="queue daemon"):
        parse_sendmail_args(["-q30m"])
    with pytest.raises(UsageError, match="-f needs a value"):
        parse_sendmail_args(["-t", "-f"])


@pytest.mark.parametrize(
    ("data", "cut"),
    [
        (b"a\n.\nb\n", b"a\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n"),
        (b".\nb\n", b""),
        (b"a\n.", b"a\n"),
        (b"a\n..\n.b\n. \n", b"a\n..\n.b\n. \n"),
    ],
)
def test_lone_dot_ends_the_input(data: bytes, cut: bytes) -> None:
    assert cut_at_lone_dot(data) == cut


# --- every HTTP provider carries a parsed message -----------------------------------------

EVERY_FAKE = True  # a test taking `fake` runs over every provider fake (tests/conftest.py)


def test_every_http_provider_carries_a_cron_message(fake: FakeESP, httpserver: HTTPServer) -> None:
    cfg = fake.config(server_base_url(httpserver))
    provider = registry.build(ProviderSpec(cfg.get("name", fake.type), fake.type, cfg, "test"))
    message = parse_eml(
        CRON.replace(b"To: ops@example.com\n", b"To: ops@example.com\nBcc: audit@example.com\n"),
        envelope_from="root",
        full_name="CronDaemon",
        default_sender="Ops <cron@example.com>",
    )
    provider.send(message, timeout=5)
    got = fake.normalize(fake.sent[-1])
    assert got["from"] == "CronDaemon <cron@example.com>"
    assert got["to"] == ["ops@example.com"]
    assert got["bcc"] == ["audit@example.com"]
    assert got["subject"] == "Cron <root@web1> /usr/local/bin/backup.sh"
    assert (
        got["text"].replace("\r\n", "\n") == "backup done: 3 fichiers copiés ✓\n.hidden file kept\n"
    )
    assert got["headers"].get("Auto-Submitted") == "auto-generated"
    assert "<HOME=/root>" in got["headers"].get("X-Cron-Env", "")  # ses: raw, both fields


def test_every_http_provider_carries_a_multipart_message(
    fake: FakeESP, httpserver: HTTPServer
) -> None:
    cfg = fake.config(server_base_url(httpserver))
    provider = registry.build(ProviderSpec(cfg.get("name", fake.type), fake.type, cfg, "test"))
    provider.send(parse_eml(MULTIPART), timeout=5)
    got = fake.normalize(fake.sent[-1])
    assert got["from"] == "Reports <reports@example.com>"
    assert got["to"] == ["Boss <boss@example.com>"]
    assert got["cc"] == ["team@example.com"] and got["bcc"] == ["audit@example.com"]
    assert got["subject"] == "Rapport détaillé"
    assert got["text"].replace("\r\n", "\n").rstrip("\n") == "plain body"
    assert got["html"].replace("\r\n", "\n").rstrip("\n") == "<p>html body</p>"
    assert ("report.csv", "text/csv", b"a,b\n1,2\n") in got["attachments"]
    assert got["headers"].get("X-Ticket") == "42"
