"""Property-based fuzzing (hypothesis) of what users and scripts hand mailrelay: command-line
arguments, .eml input and JSON messages. Whatever comes in: no traceback, no exit 70, only
documented exit codes, and every accepted message parses back (email package, default
policy) with exactly the headers that were meant — no more, none changed."""

from __future__ import annotations

import email
import email.policy
import json
import tempfile
from collections import Counter
from email.message import EmailMessage
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mailrelay.cli import main
from mailrelay.errors import MessageError
from mailrelay.message import Address, Attachment, Message, parse_eml, validate_message
from mailrelay.message.msgjson import load_message
from tests.test_e2e import mailrelay

DOCUMENTED = {0, 64, 65, 66, 69, 73, 75, 78}
# pieces that have broken mail tools: line ends of every kind, encoded-word look-alikes,
# quoting and address specials, long unbreakable words, non-ASCII and emoji
SPECIALS = [
    "\r", "\n", "\r\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e",
    "\x00", "\x7f", "\t", " ", "=?utf-8?q?x?=", "=?", "?=", '"', "\\", "<", ">", ",", ";",
    ":", "@", "(", ")", "x" * 300, "é", "\U0001f600", "Reply-To: evil@example.com",
]  # fmt: skip
hostile = st.lists(
    st.one_of(
        st.sampled_from(SPECIALS),
        st.text(max_size=12),
        st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Zl", "Zp"]), max_size=12),
    ),
    max_size=4,
).map("".join)
FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FORBIDDEN = {chr(c) for c in [*range(0x00, 0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0)]}
FORBIDDEN |= {"\u2028", "\u2029"}


def norm(value: str) -> str:
    """Header whitespace is folding, not content: compare values with runs of it as one."""
    return " ".join(value.split())


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert not any(
        type(d).__name__ in ("MissingHeaderBodySeparatorDefect", "InvalidHeaderDefect")
        for d in msg.defects
    ), msg.defects
    return msg


def header_names(msg: EmailMessage) -> Counter[str]:
    return Counter(name.lower() for name in msg.keys())  # noqa: SIM118  (names, not parsed)


def refused_for_a_reason(exc: MessageError, *values: str) -> bool:
    text = str(exc)
    assert "\n" not in text and "\r" not in text  # one line
    return any(set(v) & FORBIDDEN for v in values) or "cannot be written" in text


@FUZZ
@given(name=hostile, subject=hostile, value=hostile, filename=hostile, tag=hostile)
def test_built_messages_have_exactly_the_headers_meant(
    name: str, subject: str, value: str, filename: str, tag: str
) -> None:
    msg = Message(
        sender=Address("a@example.com", name),
        to=[Address("b@example.com", name), Address("c@example.com")],
        subject=subject,
        text="hi",
        headers=[("X-Fuzz", value)],
        attachments=[Attachment(filename or "f", "application/octet-stream", b"data")],
        tags=[tag],
        metadata={tag or "k": value},
    )
    try:
        validate_message(msg)
    except MessageError as exc:
        assert refused_for_a_reason(exc, name, subject, value, filename, tag)
        event("refused")
        return
    event("accepted")
    parsed = parse(msg.as_bytes())
    assert header_names(parsed) == Counter(
        ["from", "to", "subject", "date", "message-id", "x-fuzz", "content-type", "mime-version"]
    )
    assert norm(parsed["Subject"]) == norm(subject)
    assert norm(parsed["X-Fuzz"]) == norm(value)
    senders = parsed["From"].addresses
    assert len(senders) == 1 and senders[0].addr_spec == "a@example.com"
    assert norm(senders[0].display_name) == norm(name)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["b@example.com", "c@example.com"]
    (att,) = list(parsed.iter_attachments())
    assert norm(att.get_filename() or "") == norm(filename or "f")


def run_cli(args: list[str]) -> tuple[int, str]:
    runner = CliRunner()
    with runner.isolation(input=b"") as (_out, err, _):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, err.getvalue().decode("utf-8", "replace")


@FUZZ
@given(
    subject=hostile,
    sender_name=hostile,
    header=hostile,
    tag=hostile,
    extra=st.lists(st.sampled_from(["-v", "--json", "-q", "--dry-run", "--", "-x"]), max_size=2),
)
def test_command_line_arguments(
    subject: str, sender_name: str, header: str, tag: str, extra: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outbox"
        args = [
            "--provider", f"outbox://{out}", "--state", f"{tmp}/state.toml", "send",
            "-r", f"{sender_name} <a@example.com>", "-s", subject, "--header", f"X-Fuzz: {header}",
            "--tag", tag, "--text", "hi", *extra, "b@example.com",
        ]  # fmt: skip
        code, err = run_cli(args)
        assert code in DOCUMENTED, err
        assert "Traceback" not in err and "internal error" not in err
        files = sorted(out.glob("*.eml")) if out.exists() else []
        event(f"exit {code}")
        if code != 0 or "--dry-run" in extra:
            assert not files
            return
        if "--" in extra:  # "-v" etc. after "--" are addresses: refused, never sent
            return
        (path,) = files
        parsed = parse(path.read_bytes())
        envelope = {"return-path", "x-envelope-to", "x-mailrelay-tag"}
        mime = ["from", "to", "subject", "date", "message-id", "x-fuzz", "content-type"]
        mime.append("content-transfer-encoding")
        assert header_names(parsed) == Counter([*mime, "mime-version", *envelope])
        assert norm(parsed["Subject"]) == norm(subject)
        assert norm(parsed["X-Fuzz"]) == norm(header)


eml_field = st.tuples(
    st.sampled_from(["From", "To", "Cc", "Bcc", "Subject", "X-Fuzz", "Reply-To", "Date"]), hostile
)


@FUZZ
@given(
    fields=st.lists(eml_field, max_size=6),
    body=hostile,
    folded=st.booleans(),
)
def test_eml_input(fields: list[tuple[str, str]], body: str, folded: bool) -> None:
    lines = [f"{name}: {value}" for name, value in fields]
    if folded:
        lines = [line.replace(" ", "\n ", 1) for line in lines]
    data = ("\n".join(["To: b@example.com", *lines]) + "\n\n" + body).encode(
        "utf-8", "surrogatepass"
    )
    try:
        msg = parse_eml(data, default_sender="a@example.com")
    except MessageError as exc:
        assert "\n" not in str(exc)
        event("refused")
        return
    event("accepted")
    assert msg.raw is not None
    parsed = parse(msg.raw)
    # every field given (Bcc removed) and nothing else, but Date/Message-ID/From when missing
    given_names = Counter(n.lower() for n, f in _fields(data) if n.lower() != "bcc")
    got = header_names(parsed)
    added = got - given_names
    assert set(added) <= {"date", "message-id", "from"}, (added, data)
    assert all(n == 1 for n in added.values())


def _fields(data: bytes) -> list[tuple[str, bytes]]:
    from mailrelay.message import split_fields

    return split_fields(data)[0]


json_value = st.one_of(hostile, st.lists(hostile, max_size=2), st.integers(), st.none())


@FUZZ
@given(
    subject=hostile,
    to=st.lists(hostile, max_size=2),
    headers=st.dictionaries(hostile, json_value, max_size=2),
    metadata=st.dictionaries(hostile, json_value, max_size=2),
    filename=hostile,
    content_id=st.one_of(st.none(), hostile),
)
def test_json_messages(
    subject: str,
    to: list[str],
    headers: dict[str, object],
    metadata: dict[str, object],
    filename: str,
    content_id: str | None,
) -> None:
    doc = {
        "from": "a@example.com",
        "to": ["b@example.com", *to],
        "subject": subject,
        "text": "hi",
        "headers": headers,
        "metadata": metadata,
        "attachments": [{"filename": filename, "content_base64": "aGk=", "content_id": content_id}],
    }
    data = json.dumps(doc).encode()
    try:
        msg = load_message(data, where="fuzz", base_dir=None, default_sender=None)
    except MessageError as exc:
        assert "\n" not in str(exc)
        event("refused")
        return
    event("accepted")
    parsed = parse(msg.as_bytes())
    assert norm(parsed["Subject"]) == norm(subject)
    expected = Counter(n.lower() for n, _ in msg.headers)
    base = Counter(["from", "to", "subject", "date", "message-id", "content-type", "mime-version"])
    assert header_names(parsed) == base + expected
    for name, value in msg.headers:
        assert norm(value) in [norm(v) for v in parsed.get_all(name) or []]


argv_text = hostile.filter(lambda s: "\x00" not in s)  # no argv holds a NUL


@settings(max_examples=4, deadline=None, database=None)
@given(subject=argv_text, name=argv_text)
def test_the_installed_command_under_fuzz(subject: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        r = mailrelay(
            "--provider", f"outbox://{tmp}/o", "--state", f"{tmp}/s.toml", "send", "--dry-run",
            "-r", f"{name} <a@example.com>", "-s", subject, "--text", "hi", "b@example.com",
        )  # fmt: skip
    assert r.returncode in DOCUMENTED, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr


near_plain = st.lists(
    st.one_of(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
        st.sampled_from(["=?", "?=", "é", "\t", "x" * 80, '"', "\\", "<>", ",", ";", "(", ")"]),
    ),
    max_size=4,
).map("".join)


@FUZZ
@given(name=near_plain, subject=near_plain, value=near_plain, text=near_plain)
def test_what_renders_plainly_is_written_as_given(
    name: str, subject: str, value: str, text: str
) -> None:
    """validate.renders_plainly lets a message skip the MIME layout check: every message it
    passes must lay out, parse back without defects and keep its headers."""
    from mailrelay.message.validate import renders_plainly

    msg = Message(
        sender=Address("cron@example.com", name),
        to=[Address("ops@example.com", name)],
        subject=subject,
        text=text,
        headers=[("X-Job", value)],
    )
    plain = renders_plainly(msg)
    event(f"plain: {plain}")
    if not plain:
        return
    back = parse(msg.as_bytes())
    assert norm(str(back["Subject"])) == norm(subject)
    assert norm(str(back["X-Job"])) == norm(value)
    assert back["From"].addresses[0].display_name == norm(name)
    assert back["From"].addresses[0].addr_spec == "cron@example.com"
