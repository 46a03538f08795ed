"""JSON input (`send --message`): the shipped schema, errors that name the field, delivery
through a real SMTP server and an HTTP fake, `mailrelay schema`, and the schema kept in step
with message_from_dict / message_to_dict."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from pytest_httpserver import HTTPServer

from mailrelay.errors import ExitCode, InputFileError, MessageError
from mailrelay.message import (
    Address,
    Attachment,
    Message,
    message_from_dict,
    message_to_dict,
    parse_eml,
)
from mailrelay.message.msgjson import (
    PLAIN_FIELDS,
    is_rfc3339,
    load_message,
    message_from_json,
    message_schema,
)
from tests.esp.fake_postmark import FakePostmark
from tests.esp.fakebase import server_base_url
from tests.smtpserver import shared_server
from tests.test_cli import run
from tests.test_e2e import mailrelay, write_config

ROOT = Path(__file__).resolve().parent.parent
PDF = b"%PDF-1.4\n" + bytes(range(256))


def load(doc: Any, tmp_path: Path | None = None, where: str = "alert.json") -> Message:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return load_message(
        data,
        where=where,
        base_dir=str(tmp_path) if tmp_path else None,
        default_sender="cron@example.com",
    )


def error_of(doc: Any, tmp_path: Path | None = None) -> str:
    with pytest.raises(MessageError) as info:
        load(doc, tmp_path)
    text = str(info.value)
    assert "\n" not in text and "Traceback" not in text
    assert info.value.exit_code == ExitCode.DATAERR
    return text


GOOD: dict[str, Any] = {"to": "a@example.com", "subject": "disk full", "text": "web1: 91%\n"}
B64: dict[str, Any] = {"content_base64": "AA==", "filename": "a"}


# --- errors name the field ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {**GOOD, "subjcet": "x"},
            "alert.json: subjcet: unknown field (did you mean 'subject'?)",
        ),
        ({**GOOD, "colour": "red"}, "alert.json: colour: unknown field"),
        ({**GOOD, "subject": 3}, "alert.json: subject: expected a string, got a number"),
        (
            {**GOOD, "to": 5},
            "alert.json: to: expected a string or a list of strings, got a number",
        ),
        ({**GOOD, "to": ["a@example.com", 7]}, "alert.json: to[1]: expected a string"),
        ({**GOOD, "to": ["a@example.com", "x"]}, "alert.json: to[1]: 'x' is not a valid address"),
        ({**GOOD, "cc": ["nobody@"]}, "alert.json: cc[0]: 'nobody@' is not a valid address"),
        ({**GOOD, "from": "ops"}, "alert.json: from: 'ops' is not a valid address"),
        ({**GOOD, "tags": "deploy"}, "alert.json: tags: expected a list of strings"),
        ({**GOOD, "metadata": {"run": 7}}, "alert.json: metadata.run: expected a string"),
        ({**GOOD, "headers": {"X-Run": 7}}, "alert.json: headers.X-Run: expected a string"),
        (
            {**GOOD, "headers": {"Bad Name": "v"}},
            "alert.json: headers: 'Bad Name' is not a valid header name",
        ),
        (
            {**GOOD, "headers": {"Subject": "v"}},
            "alert.json: headers.Subject: the Subject header is set by its own option",
        ),
        (
            {**GOOD, "attachments": [{"filename": "a.txt"}]},
            "alert.json: attachments[0]: 'path' or 'content_base64' is required",
        ),
        (
            {**GOOD, "attachments": [{"path": "a.txt", "content_base64": "AA=="}]},
            "alert.json: attachments[0]: give 'path' or 'content_base64', not both",
        ),
        (
            {**GOOD, "attachments": [{"content_base64": "AA=="}]},
            "alert.json: attachments[0].filename: required with content_base64",
        ),
        (
            {**GOOD, "attachments": [{"content_base64": "no!pe", "filename": "a"}]},
            "alert.json: attachments[0].content_base64: not valid base64",
        ),
        (
            {**GOOD, "attachments": [{"content_base64": "AAA", "filename": "a"}]},
            "alert.json: attachments[0].content_base64: not valid base64",
        ),
        (
            {**GOOD, "attachments": [{"content_base64": "AA==", "filename": "a", "cid": "x"}]},
            "alert.json: attachments[0].cid: unknown field",
        ),
        (
            {**GOOD, "attachments": [{"content_base64": "AA==", "filename": "a", "inline": 1}]},
            "alert.json: attachments[0].inline: expected true or false",
        ),
        (
            {**GOOD, "attachments": [{**B64, "content_type": "pdf"}]},
            "alert.json: attachments[0].content_type: 'pdf' is not a MIME type",
        ),
        ({**GOOD, "attachments": {}}, "alert.json: attachments: expected a list"),
        ({**GOOD, "date": "2026-11-22 09:00"}, "alert.json: date: '2026-11-22 09:00' is not an"),
        ({**GOOD, "date": "2026-11-22T09:00:00"}, "alert.json: date: "),
        ({**GOOD, "message_id": "abc"}, "alert.json: message_id: 'abc' is not a Message-ID"),
        ({**GOOD, "text": ["a"]}, "alert.json: text: expected a string or null, got a list"),
        ({"subject": "x"}, "alert.json: no recipients: give 'to', 'cc' or 'bcc'"),
        ({"to": "a@example.com"}, "alert.json: empty message: give 'subject', 'text'"),
        ([GOOD], "alert.json: expected a JSON object, got a list"),
        ("hello", "alert.json: expected a JSON object, got a string"),
    ],
)
def test_errors_name_the_field(doc: Any, expected: str) -> None:
    assert error_of(doc).startswith(expected)


def test_bad_json_gives_line_and_column() -> None:
    text = error_of(b'{\n  "to": "a@example.com"\n  "subject": "x"\n}\n')
    assert text.startswith("alert.json: not valid JSON: ")
    assert "line 3 column 3" in text


def test_json_nested_too_deeply_is_a_data_error_not_a_crash() -> None:
    assert error_of(b"[" * 100_000) == "alert.json: JSON nested too deeply"


def test_not_utf8() -> None:
    assert error_of(b'{"subject": "\xff"}') == "alert.json: not UTF-8"


def test_a_byte_order_mark_is_fine() -> None:
    assert load(b"\xef\xbb\xbf" + json.dumps(GOOD).encode()).subject == "disk full"


def test_a_huge_bad_value_is_not_echoed_whole() -> None:
    text = error_of({**GOOD, "message_id": "x" * 100_000})
    assert len(text) < 300


def test_missing_attachment_file_is_exit_66(tmp_path: Path) -> None:
    doc = {**GOOD, "attachments": [{"path": "reports/nope.pdf"}]}
    with pytest.raises(InputFileError) as info:
        load(doc, tmp_path)
    assert str(info.value) == "alert.json: attachments[0].path: reports/nope.pdf: no such file"
    assert info.value.exit_code == ExitCode.NOINPUT


def test_attachment_paths_are_relative_to_the_json_file(tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_bytes(PDF)
    msg = load({**GOOD, "attachments": [{"path": "report.pdf"}]}, tmp_path)
    assert msg.attachments == [Attachment("report.pdf", "application/pdf", PDF)]


def test_message_from_json_validates_too() -> None:
    # the batch sender calls message_from_json on each decoded line
    with pytest.raises(MessageError, match=r"^batch.jsonl:3: subjcet: unknown field"):
        message_from_json(
            {**GOOD, "subjcet": "x"},
            where="batch.jsonl:3",
            base_dir=None,
            default_sender="cron@example.com",
        )


def test_a_full_message(tmp_path: Path) -> None:
    (tmp_path / "logo.png").write_bytes(b"\x89PNG fake")
    msg = load(
        {
            "$schema": "./message.schema.json",
            "from": "Ops <ops@example.com>",
            "to": ["a@example.com", "Bee <b@example.com>"],
            "cc": "c@example.com",
            "bcc": ["d@example.com"],
            "reply_to": "help@example.com",
            "subject": "Report",
            "text": "see attached",
            "html": '<p>see <img src="cid:logo"></p>',
            "headers": {"X-Report": "weekly", "X-Tag": ["a", "b"]},
            "attachments": [
                {"path": "logo.png", "inline": True, "content_id": "logo"},
                {"content_base64": base64.b64encode(PDF).decode(), "filename": "r.pdf"},
            ],
            "tags": ["weekly"],
            "metadata": {"run": "42"},
            "message_id": "<report-42@example.com>",
            "date": "2026-11-22T09:00:00Z",
        },
        tmp_path,
    )
    assert msg.sender == Address("ops@example.com", "Ops")
    assert [a.email for a in msg.recipients()] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    ]
    assert msg.headers == [("X-Report", "weekly"), ("X-Tag", "a"), ("X-Tag", "b")]
    assert msg.attachments[0] == Attachment("logo.png", "image/png", b"\x89PNG fake", True, "logo")
    assert msg.attachments[1].data == PDF
    assert msg.message_id == "<report-42@example.com>"
    assert msg.date.isoformat() == "2026-11-22T09:00:00+00:00"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2026-11-22T09:00:00Z", True),
        ("2026-11-22T09:00:00.123+02:00", True),
        ("2026-11-22t09:00:00z", True),
        ("2026-11-22T09:00:00", False),
        ("2026-11-22 09:00:00Z", False),
        ("2026-13-22T09:00:00Z", False),
        ("2026-11-22", False),
        ("yesterday", False),
    ],
)
def test_rfc3339(value: str, ok: bool) -> None:
    assert is_rfc3339(value) is ok


# --- through the command --------------------------------------------------------------------


def test_message_through_a_real_smtp_server(tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_bytes(PDF)
    alert = tmp_path / "alert.json"
    alert.write_text(
        json.dumps(
            {
                "to": "Ops <ops@example.com>",
                "bcc": ["audit@example.com"],
                "subject": "Bericht über Disk",
                "text": "web1: 91%\n",
                "headers": {"X-Job": "nightly"},
                "attachments": [{"path": "report.pdf"}],
            }
        )
    )
    with shared_server() as server:
        r = mailrelay(
            "--provider",
            f"smtp://127.0.0.1:{server.port}?security=none&timeout=5",
            "--state",
            str(tmp_path / "state.toml"),
            "send",
            "-r",
            "cron@example.com",
            "--message",
            str(alert),
            input=None,
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout == "" and r.stderr == ""
        ((mail_from, rcpts, data),) = server.messages
    assert mail_from == "cron@example.com"
    assert rcpts == ["ops@example.com", "audit@example.com"]
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["Subject"] == "Bericht über Disk" and msg["X-Job"] == "nightly"
    assert msg["Bcc"] is None
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "report.pdf" and att.get_content() == PDF


def test_message_from_stdin_through_an_http_fake(tmp_path: Path) -> None:
    postmark = FakePostmark()
    doc = {
        "from": "Ops <ops@example.com>",
        "to": ["a@example.com"],
        "subject": "deploy done",
        "html": "<p>v1.2 is <b>live</b></p>",
        "tags": ["deploy"],
        "metadata": {"build": "812"},
        "attachments": [
            {"content_base64": base64.b64encode(b"a,b\n1,2\n").decode(), "filename": "x.csv"}
        ],
    }
    with HTTPServer(host="127.0.0.1", port=0) as http:
        postmark.install(http)
        cfg = write_config(tmp_path / "config.toml", [postmark.config(server_base_url(http))])
        r = run(
            ["--config", str(cfg), "send", "--json", "--message", "-"],
            input=json.dumps(doc),
        )
    assert r.code == 0, r.err
    assert r.json()["delivered"] is True
    (sent,) = [postmark.normalize(p) for p in postmark.sent]
    assert sent["from"] == "Ops <ops@example.com>" and sent["to"] == ["a@example.com"]
    assert sent["subject"] == "deploy done"
    assert sent["html"] == doc["html"] and "live" in sent["text"]
    assert sent["tags"] == ["deploy"] and sent["metadata"] == {"build": "812"}
    assert sent["attachments"] == [("x.csv", "text/csv", b"a,b\n1,2\n")]


def test_command_exit_codes(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    base = ["--provider", f"outbox://{outbox}", "send", "-r", "cron@example.com", "--message"]
    bad = tmp_path / "alert.json"
    bad.write_text(json.dumps({**GOOD, "subjcet": "x"}))
    r = run([*base, str(bad)])
    assert r.code == 65
    assert r.err == (f"mailrelay: error: {bad}: subjcet: unknown field (did you mean 'subject'?)\n")
    r = run([*base, str(tmp_path / "missing.json")])
    assert r.code == 66 and "missing.json: no such file" in r.err
    bad.write_text(json.dumps({**GOOD, "attachments": [{"path": "gone.pdf"}]}))
    r = run([*base, str(bad)])
    assert r.code == 66
    assert r.err == f"mailrelay: error: {bad}: attachments[0].path: gone.pdf: no such file\n"
    bad.write_text('{"to": "a@example.com",}')
    r = run([*base, str(bad)])
    assert r.code == 65 and "not valid JSON" in r.err and "line 1 column 24" in r.err
    assert not outbox.exists()  # nothing went out


# --- mailrelay schema -----------------------------------------------------------------------


def test_schema_command_prints_a_valid_draft_2020_12_schema() -> None:
    r = run(["schema"])
    assert r.code == 0 and r.err == ""
    printed = json.loads(r.out)
    Draft202012Validator.check_schema(printed)
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert printed == json.loads(
        (ROOT / "mailrelay" / "message" / "message.schema.json").read_text()
    )
    # a standard validator (no mailrelay code) agrees with mailrelay on good and bad input
    validator = Draft202012Validator(printed, format_checker=FormatChecker())
    assert validator.is_valid(GOOD)
    assert not validator.is_valid({**GOOD, "subjcet": "x"})
    assert not validator.is_valid({**GOOD, "attachments": [{"filename": "a"}]})


def test_import_of_the_cli_pays_for_no_heavy_module() -> None:
    code = (
        "import sys, mailrelay.cli; "
        "print(sorted(m for m in ('jsonschema', 'requests', 'rich') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# --- the schema and message_from_dict / message_to_dict stay in step -------------------------

BASE: dict[str, Any] = {
    "to": "a@example.com",
    "subject": "s",
    "message_id": "<base@example.com>",
    "date": "2026-01-01T00:00:00+00:00",
}
# one value per property of the schema, different from what BASE gives
SAMPLES: dict[str, Any] = {
    "from": "Other <other@example.com>",
    "to": ["t2@example.com"],
    "cc": "c@example.com",
    "bcc": ["b@example.com"],
    "reply_to": "r@example.com",
    "subject": "s2",
    "text": "t2",
    "html": "<p>h2</p>",
    "headers": {"X-Drift": "1"},
    "attachments": [{"content_base64": "AA==", "filename": "a.bin"}],
    "tags": ["t"],
    "metadata": {"k": "v"},
    "message_id": "<drift@example.com>",
    "date": "2026-01-02T03:04:05Z",
}
ATTACHMENT: dict[str, Any] = {"content_base64": "AA==", "filename": "a.bin"}
ATTACHMENT_SAMPLES: dict[str, Any] = {
    "content_base64": "AQI=",
    "filename": "b.txt",
    "content_type": "text/csv",
    "inline": True,
    "content_id": "part1",
}
NOT_IN_SCHEMA = {"raw_base64", "envelope_from"}  # the spool's fields, not for users to write


def schema_validator() -> Draft202012Validator:
    return Draft202012Validator(message_schema(), format_checker=FormatChecker())


def test_every_schema_property_has_a_sample() -> None:
    props = set(message_schema()["properties"]) - {"$schema"}
    assert props == set(SAMPLES), "add a sample for each new property (and handle it)"
    att_props = set(message_schema()["$defs"]["attachment"]["properties"])
    assert att_props - {"path"} == set(ATTACHMENT_SAMPLES)


@pytest.mark.parametrize("prop", sorted(SAMPLES))
def test_every_schema_property_is_read_by_message_from_dict(prop: str) -> None:
    doc = {**BASE, prop: SAMPLES[prop]}
    assert schema_validator().is_valid(doc)
    plain = message_to_dict(message_from_dict(BASE, default_sender="s@example.com"))
    changed = message_to_dict(message_from_dict(doc, default_sender="s@example.com"))
    assert changed != plain, f"message_from_dict ignores the schema's {prop!r}"


@pytest.mark.parametrize("prop", sorted(ATTACHMENT_SAMPLES))
def test_every_attachment_property_is_read_by_message_from_dict(prop: str) -> None:
    def attachment(extra: dict[str, Any]) -> Attachment:
        doc = {**BASE, "attachments": [{**ATTACHMENT, **extra}]}
        assert schema_validator().is_valid(doc)
        return message_from_dict(doc, default_sender="s@example.com").attachments[0]

    assert attachment({prop: ATTACHMENT_SAMPLES[prop]}) != attachment({})


def rich_messages() -> list[Message]:
    full = message_from_dict(
        {**BASE, **SAMPLES, "attachments": [{**ATTACHMENT, **ATTACHMENT_SAMPLES}]},
        default_sender="s@example.com",
    )
    eml = parse_eml(
        b"From: Cron <cron@example.com>\nTo: a@example.com\nSubject: x\nX-A: 1\n\nbody\n",
        extract=True,
    )
    bare = Message(sender=Address("a@example.com"), to=[Address("b@example.com")], subject="x")
    return [full, eml, bare]


@pytest.mark.parametrize("msg", rich_messages(), ids=["full", "eml", "bare"])
def test_what_message_to_dict_writes_is_valid_under_the_schema(msg: Message) -> None:
    doc = {k: v for k, v in message_to_dict(msg).items() if k not in NOT_IN_SCHEMA}
    errors = [e.message for e in schema_validator().iter_errors(doc)]
    assert errors == []
    props = message_schema()["properties"]
    att_props = message_schema()["$defs"]["attachment"]["properties"]
    assert set(doc) <= set(props)
    for att in doc["attachments"]:
        assert set(att) <= set(att_props)
    if msg.raw is None:  # the JSON form round-trips through the JSON input
        again = message_from_json(doc, where="x", base_dir=None, default_sender=None)
        assert again == msg


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    doc=st.dictionaries(
        st.sampled_from([*PLAIN_FIELDS, "headers", "date", "nope"]),
        json_values | st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3),
        max_size=5,
    )
)
def test_the_plain_fields_fast_path_agrees_with_the_schema(doc: dict[str, object]) -> None:
    """schema_error skips jsonschema for documents of the plain fields only: it must say
    valid exactly when jsonschema does, for such documents."""
    from mailrelay.message.msgjson import _plainly_valid

    valid = Draft202012Validator(message_schema()).is_valid(doc)
    if set(doc) <= set(PLAIN_FIELDS):
        assert _plainly_valid(doc) == valid, doc
    else:
        assert not _plainly_valid(doc)
