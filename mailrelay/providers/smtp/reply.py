"""An SMTP reply → its outcome class and the words for the error, as pure functions.

No socket and no smtplib object: the reply code, its text (where an enhanced status code may
stand first) and the stage of the session it answered are all that decide. Facts: RFC 5321
§4.2 (reply codes), RFC 3463 (enhanced status codes), RFC 4954 §6 (AUTH replies), at
https://www.rfc-editor.org/.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from mailrelay.providers.base import Outcome

# Stages of one session, as named in error messages.
CONNECT = "connect"
EHLO = "EHLO"
STARTTLS = "STARTTLS"
AUTH = "AUTH"
MAIL = "MAIL FROM"
RCPT = "RCPT TO"
DATA = "DATA"
BODY = "message data"
END = "end of data"  # the final "." has been sent: the server may have queued the message
NOOP = "NOOP"
# A 5xx here refuses the session itself, so every message would meet it: a provider problem.
SESSION_STAGES = frozenset({CONNECT, EHLO, STARTTLS, AUTH, NOOP})
# Authentication required / credentials invalid / mechanism too weak / encryption required
# (RFC 4954 §6); they mean our configuration at any stage, with or without an enhanced code.
AUTH_CODES = frozenset({530, 534, 535, 538})

TEXT_LIMIT = 300
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")


class Verdict(NamedTuple):
    """What one negative reply means: its outcome class, the enhanced status code it
    carried (if any) and the error detail, e.g. "550 5.1.1 unknown (reply to RCPT TO)"."""

    outcome: Outcome
    enhanced: str | None
    detail: str


def reply_text(msg: bytes | str) -> str:
    """A reply's text as one line (continuation lines joined), at most TEXT_LIMIT long."""
    text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else msg
    text = " ".join(text.split())
    if len(text) > TEXT_LIMIT:
        text = text[: TEXT_LIMIT - 1] + "…"
    return text


def enhanced_code(code: int, text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply text, e.g. "5.7.1"."""
    m = _ENHANCED.match(text)
    if m is None or m.group(1) != str(code)[:1]:  # its class must match the reply code's
        return None
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"


def classify_reply(stage: str, code: int, text: str) -> Outcome:
    """The outcome class of a negative SMTP reply at a given stage."""
    if 400 <= code < 500:  # RFC 5321 §4.2.1: transient negative completion, incl. 454 on AUTH
        return Outcome.TRANSIENT
    if not 500 <= code < 600:  # not an SMTP reply we can read: the server is broken
        return Outcome.PROVIDER
    enhanced = enhanced_code(code, text) or ""
    # 5.7.x is security or policy (auth, relay denied, unverified sender): not the message
    if enhanced.startswith("5.7.") or code in AUTH_CODES or stage in SESSION_STAGES:
        return Outcome.PROVIDER
    if code == 552 or enhanced == "5.3.4":  # too big for THIS server; another may take it
        return Outcome.REJECTED
    if enhanced.startswith("5.1.") and stage in (MAIL, RCPT):  # bad mailbox or address
        return Outcome.PERMANENT
    if enhanced.startswith("5.6.") and stage in (DATA, END):  # bad message content
        return Outcome.PERMANENT
    return Outcome.REJECTED


def verdict(stage: str, code: int, msg: bytes | str) -> Verdict:
    """The verdict on the reply `code msg` to the command of `stage`."""
    text = reply_text(msg)
    return Verdict(
        classify_reply(stage, code, text),
        enhanced_code(code, text),
        f"{code} {text} (reply to {stage})",
    )
