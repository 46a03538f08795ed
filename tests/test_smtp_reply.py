"""The SMTP reply classifier, a pure function: (stage, code, text) → outcome class, enhanced
status code and detail. Each row is a reply a real server sends (RFC 5321 §4.2 reply codes,
RFC 3463 enhanced status codes, RFC 4954 §6 AUTH replies, RFC 6531 §3.7.4 SMTPUTF8) and the
class mailrelay gives it today. The dialogue that produces these replies is in test_smtp.py.

The rules, in the order they apply: any 4xx is transient (RFC 5321 §4.2.1); anything that
is not a 4xx or 5xx (a 2xx or 3xx where a refusal came, a line without a code) is a broken
server, a provider problem; a 5xx is a provider problem when it carries 5.7.x (security or
policy), is an AUTH code (530/534/535/538) or refuses the session itself (connect, EHLO,
STARTTLS, AUTH, NOOP); 552 or 5.3.4 (too big for this server) is rejected, so another
provider may take it; 5.1.x at MAIL FROM / RCPT TO (bad address) and 5.6.x at DATA or after
it (bad content) are permanent; any other 5xx is rejected. QUIT's answer is never read.
"""

from __future__ import annotations

import pytest

from mailrelay.providers.base import Outcome
from mailrelay.providers.smtp import classify_reply, enhanced_code, verdict
from mailrelay.providers.smtp import reply as at  # the stages: at.RCPT is "RCPT TO"

T, P, R, X = Outcome.TRANSIENT, Outcome.PROVIDER, Outcome.REJECTED, Outcome.PERMANENT

# stage, reply code, reply text, outcome, enhanced status code
TABLE: list[tuple[str, int, str, Outcome, str | None]] = [
    # a 2xx or 3xx where the command failed: not a refusal this client can read
    (at.CONNECT, 250, "hello", P, None),
    (at.EHLO, 220, "2.0.0 ready again", P, "2.0.0"),
    (at.AUTH, 334, "VXNlcm5hbWU6", P, None),
    (at.MAIL, 354, "go ahead", P, None),
    (at.RCPT, 354, "start mail input", P, None),
    (at.DATA, 250, "2.0.0 ok", P, "2.0.0"),
    (at.END, 250, "ok?", P, None),
    (at.END, 354, "more data?", P, None),
    # 4xx in every stage: transient (RFC 5321 §4.2.1), whatever the enhanced code says
    (at.CONNECT, 421, "4.3.2 Service not available, closing transmission channel", T, "4.3.2"),
    (at.EHLO, 421, "too many connections from your host", T, None),
    (at.STARTTLS, 454, "4.7.0 TLS not available due to temporary reason", T, "4.7.0"),
    (at.AUTH, 454, "4.7.0 Temporary authentication failure", T, "4.7.0"),
    (at.AUTH, 432, "4.7.12 A password transition is needed", T, "4.7.12"),
    (at.MAIL, 451, "4.7.1 Greylisted, please try again later", T, "4.7.1"),
    (at.MAIL, 452, "4.3.1 Insufficient system storage", T, "4.3.1"),
    (at.RCPT, 450, "4.2.1 Mailbox temporarily disabled", T, "4.2.1"),
    (at.RCPT, 451, "4.7.0 Greylisting in action, come back later", T, "4.7.0"),
    (at.RCPT, 452, "4.5.3 Too many recipients", T, "4.5.3"),
    (at.RCPT, 450, "5.1.1 class differs from the code", T, None),
    (at.DATA, 451, "4.3.0 Local error in processing", T, "4.3.0"),
    (at.END, 452, "4.3.1 Insufficient system storage", T, "4.3.1"),
    (at.END, 421, "4.4.2 Timeout, closing connection", T, "4.4.2"),
    (at.NOOP, 421, "shutting down", T, None),
    # 5xx refusing the session itself: every message would meet it
    (at.CONNECT, 554, "No SMTP service here", P, None),
    (at.CONNECT, 521, "does not accept mail (RFC 7504)", P, None),
    (at.EHLO, 501, "5.5.4 Invalid domain name", P, "5.5.4"),
    (at.EHLO, 502, "Command not implemented", P, None),
    (at.STARTTLS, 554, "5.7.3 TLS not available", P, "5.7.3"),
    (at.AUTH, 535, "5.7.8 Authentication credentials invalid", P, "5.7.8"),
    (at.AUTH, 535, "Authentication failed", P, None),
    (at.AUTH, 534, "5.7.9 Authentication mechanism is too weak", P, "5.7.9"),
    (
        at.AUTH,
        538,
        "5.7.11 Encryption required for requested authentication mechanism",
        P,
        "5.7.11",
    ),
    (at.AUTH, 504, "5.5.4 Unrecognized authentication type", P, "5.5.4"),
    (at.NOOP, 500, "Command unrecognized", P, None),
    # AUTH codes at any stage: our configuration
    (at.MAIL, 530, "5.7.0 Authentication required", P, "5.7.0"),
    (at.MAIL, 530, "authentication required", P, None),
    (at.RCPT, 530, "Must issue a STARTTLS command first", P, None),
    (at.DATA, 535, "authentication went stale", P, None),
    # 5.7.x security or policy at any stage
    (at.MAIL, 550, "5.7.1 Sender address not verified for this account", P, "5.7.1"),
    (at.RCPT, 554, "5.7.1 Relay access denied", P, "5.7.1"),
    (at.END, 550, "5.7.1 Message rejected as spam", P, "5.7.1"),
    (at.END, 550, "5.7.26 Unauthenticated email is not accepted (DMARC)", P, "5.7.26"),
    # too big for this server (552, 5.3.4): another provider may take it
    (at.MAIL, 552, "5.3.4 Message size exceeds fixed maximum message size", R, "5.3.4"),
    (at.RCPT, 552, "too many recipients", R, None),
    (at.RCPT, 552, "5.2.2 Mailbox full", R, "5.2.2"),
    (at.RCPT, 552, "5.1.1 552 before 5.1.x", R, "5.1.1"),
    (at.DATA, 554, "5.3.4 too big", R, "5.3.4"),
    (at.END, 552, "5.2.3 Message length exceeds administrative limit", R, "5.2.3"),
    (at.END, 552, "Requested mail action aborted: exceeded storage allocation", R, None),
    # 5.1.x at MAIL FROM / RCPT TO: the address itself is bad
    (
        at.RCPT,
        550,
        "5.1.1 <nobody@example.com>: Recipient address rejected: User unknown",
        X,
        "5.1.1",
    ),
    (at.RCPT, 553, "5.1.3 Bad destination mailbox address syntax", X, "5.1.3"),
    (at.RCPT, 550, "5.1.10 Recipient address has null MX", X, "5.1.10"),
    (at.RCPT, 550, "5.01.001 leading zeros", X, "5.1.1"),
    (at.MAIL, 553, "5.1.7 Bad sender's mailbox address syntax", X, "5.1.7"),
    (at.MAIL, 550, "5.1.8 Bad sender's system address", X, "5.1.8"),
    (at.DATA, 550, "5.1.1 an address code at DATA", R, "5.1.1"),
    (at.END, 550, "5.1.1 an address code after the data", R, "5.1.1"),
    # 5.6.x at DATA or after the data: the content is bad
    (at.END, 554, "5.6.0 Message content rejected", X, "5.6.0"),
    (at.DATA, 550, "5.6.7 Non-ASCII addresses not permitted", X, "5.6.7"),
    (at.RCPT, 553, "5.6.7 Non-ASCII addresses not permitted for that recipient", R, "5.6.7"),
    # a 5xx with no enhanced code, outside the session stages: rejected
    (at.RCPT, 550, "No such user here", R, None),
    (at.RCPT, 551, "User not local; please try <a@example.org>", R, None),
    (at.MAIL, 553, "Requested action not taken: mailbox name not allowed", R, None),
    (at.DATA, 503, "Bad sequence of commands", R, None),
    (at.END, 554, "Transaction failed", R, None),
    (at.RCPT, 550, "", R, None),
    # garbage: no code, a code out of range, an enhanced code that is not one
    (at.END, -1, "garbage instead of a reply", P, None),
    (at.MAIL, 600, "6.0.0 no such class", P, None),
    (at.RCPT, 199, "1.0.0 nor this one", P, None),
    (at.RCPT, 550, "5.1.1.9 four parts", R, None),
    (at.RCPT, 550, "5.1.1,unknown", R, None),
    (at.RCPT, 550, "5.1234.1 a subject of four digits", R, None),
    (at.RCPT, 550, "user unknown 5.1.1", R, None),
    (at.RCPT, 550, "4.1.1 class differs from the code", R, None),
    (at.RCPT, 550, "2.0.0 class differs from the code", R, None),
]


@pytest.mark.parametrize(
    ("stage", "code", "text", "outcome", "enhanced"),
    [pytest.param(*row, id=f"{row[0]}-{row[1]}-{row[2][:24]}") for row in TABLE],
)
def test_reply_classification(
    stage: str, code: int, text: str, outcome: Outcome, enhanced: str | None
) -> None:
    assert classify_reply(stage, code, text) is outcome
    assert enhanced_code(code, text) == enhanced
    found = verdict(stage, code, text)
    assert (found.outcome, found.enhanced) == (outcome, enhanced)
    assert found.detail == f"{code} {text} (reply to {stage})"


def test_the_table_covers_every_class_and_stage() -> None:
    """A row for each of the classes a reply can get, and a 4xx and a 5xx at every stage."""
    assert {row[3] for row in TABLE} == {T, P, R, X}
    for stage in (
        at.CONNECT,
        at.EHLO,
        at.STARTTLS,
        at.AUTH,
        at.MAIL,
        at.RCPT,
        at.DATA,
        at.END,
        at.NOOP,
    ):
        codes = {row[1] // 100 for row in TABLE if row[0] == stage}
        assert {4, 5} <= codes, stage


def test_the_detail_is_one_line_of_bounded_length() -> None:
    found = verdict(at.RCPT, 550, b"5.1.1 first line\n  second\tline\r\n")
    assert found.detail == "550 5.1.1 first line second line (reply to RCPT TO)"
    long = verdict(at.END, 554, "x" * 1000)
    assert long.detail == f"554 {'x' * 299}… (reply to end of data)"
    assert (
        verdict(at.MAIL, 550, b"\xff\xfe bytes").detail
        == "550 \ufffd\ufffd bytes (reply to MAIL FROM)"
    )


def test_the_enhanced_code_is_read_from_the_text_as_it_arrives() -> None:
    """A multi-line reply carries its enhanced code on the first line (joined by spaces)."""
    found = verdict(
        at.RCPT, 550, b"5.1.1 The email account that you tried to reach\n5.1.1 does not exist"
    )
    assert (found.outcome, found.enhanced) == (X, "5.1.1")
