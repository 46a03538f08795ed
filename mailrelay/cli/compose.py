"""The message `mailrelay send` is given: built from its options, with the body from a file
or standard input as mail(1) reads it, or whole from an .eml file (--eml) or JSON (--message).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, TextIO

from mailrelay.datarecord import record
from mailrelay.errors import UsageError

if TYPE_CHECKING:
    from mailrelay.cli import CliApp
    from mailrelay.cli.output import Output
    from mailrelay.message import Message

_EML_SLACK = 1024 * 1024  # an .eml beyond max_size that a Bcc or a CRLF change may account for
TERMINAL_HINT = "reading the message body from the terminal; end it with Ctrl-D on a new line"


def _decode(data: bytes, where: str, out: Output) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        out.warn(f"{where} is not UTF-8; undecodable bytes were replaced")
        return data.decode("utf-8", errors="replace")


def read_stdin(out: Output, *, explicit: bool) -> str | None:
    """The body from standard input, read to the end of input however long it takes (the
    job before the pipe may run for an hour), as mail(1) does; None when there is none.

    On a terminal (without `explicit`, '-') a one-line hint goes to stderr first and the
    body is read until Ctrl-D, as mailx does.
    """
    stream = sys.stdin
    if stream is None:
        return None
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a real file (e.g. an in-memory stream in tests)
        return _decode(_read_all(stream), "standard input", out)
    if os.isatty(fd) and not explicit:
        out.note(TERMINAL_HINT)
    return _decode(_read_all(stream), "standard input", out)


def _read_all(stream: TextIO) -> bytes:
    buffer = getattr(stream, "buffer", None)
    return bytes(buffer.read()) if buffer is not None else stream.read().encode()


def read_text_file(path: str, what: str, out: Output, limit: int) -> str:
    if path == "-":
        return read_stdin(out, explicit=True) or ""
    from mailrelay.message import read_input_file

    return _decode(read_input_file(path, f"{what} {path}", limit=limit), f"{what} {path}", out)


def read_input_bytes(path: str, what: str, limit: int) -> bytes:
    """The bytes of FILE, or of standard input for '-', at most `limit`; a one-line error
    when unreadable or larger."""
    from mailrelay.message import read_bounded, read_input_file

    if path == "-":
        stream = sys.stdin
        buffer = getattr(stream, "buffer", None)
        if buffer is None:
            return stream.read().encode()
        return read_bounded(buffer, f"{what} (standard input)", limit)
    return read_input_file(path, f"{what} {path}", limit=limit)


def read_whole_message(
    app: CliApp,
    eml: str | None,
    message_file: str | None,
    recipients: tuple[str, ...],
    sender: str | None,
) -> Message:
    from mailrelay.message import DEFAULT_MAX_SIZE, parse_eml

    settings = app.settings
    max_size = settings.max_size or DEFAULT_MAX_SIZE
    if eml is not None:
        where = "standard input" if eml == "-" else eml
        return parse_eml(
            read_input_bytes(eml, "--eml", max_size + _EML_SLACK),
            where=where,
            recipients=recipients,
            extract=True,
            envelope_from=sender,
            default_sender=settings.sender,
            max_size=max_size,
        )
    assert message_file is not None
    from mailrelay.message.msgjson import load_message

    return load_message(
        # JSON carries attachments in base64: 4/3 of their size, and some room
        read_input_bytes(message_file, "--message", max_size * 2),
        where="standard input" if message_file == "-" else message_file,
        base_dir=None if message_file == "-" else os.path.dirname(os.path.abspath(message_file)),
        default_sender=sender or settings.sender,
        max_size=max_size,
    )


@record(frozen=True)
class MessageOptions:
    """The options of `send` that build a message piece by piece (and its sender, which a
    whole message may use too), as click gives them."""

    recipients: tuple[str, ...]
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    sender: str | None
    reply_to: tuple[str, ...]
    subject: str
    text: str | None
    text_file: str | None
    html: str | None
    html_file: str | None
    attach: tuple[str, ...]
    header: tuple[str, ...]
    tag: tuple[str, ...]
    metadata: tuple[str, ...]
    no_stdin: bool

    def pieces(self) -> dict[str, object]:
        """The options that add a piece to a message, by flag, as given."""
        return {
            "--to": self.to,
            "--cc": self.cc,
            "--bcc": self.bcc,
            "--reply-to": self.reply_to,
            "--subject": self.subject,
            "--text": self.text,
            "--text-file": self.text_file,
            "--html": self.html,
            "--html-file": self.html_file,
            "--attach": self.attach,
            "--header": self.header,
            "--tag": self.tag,
            "--metadata": self.metadata,
        }


def message_from_options(app: CliApp, given: MessageOptions) -> Message:
    from mailrelay.message import DEFAULT_MAX_SIZE, build_message

    out = app.out
    text, text_file, html, html_file = given.text, given.text_file, given.html, given.html_file
    if text is not None and text_file is not None:
        raise UsageError("give --text or --text-file, not both")
    if html is not None and html_file is not None:
        raise UsageError("give --html or --html-file, not both")
    if text_file == "-" and html_file == "-":
        raise UsageError("standard input can be the text or the HTML body, not both")
    limit = app.settings.max_size or DEFAULT_MAX_SIZE
    if text_file is not None:
        text = read_text_file(text_file, "--text-file", out, limit)
    if html_file is not None:
        html = read_text_file(html_file, "--html-file", out, limit)
    if text is None and html is None and not given.no_stdin:
        text = read_stdin(out, explicit=False)
    settings = app.settings
    from_addr = given.sender or settings.sender
    if not from_addr:
        raise UsageError("no sender: give -r/--from, or set 'from' in [defaults] of the config")
    return build_message(
        sender=from_addr,
        to=[*given.recipients, *given.to],
        cc=given.cc,
        bcc=given.bcc,
        reply_to=given.reply_to,
        subject=given.subject,
        text=text,
        html=html,
        headers=given.header,
        attachments=given.attach,
        tags=given.tag,
        metadata=given.metadata,
        max_size=settings.max_size or DEFAULT_MAX_SIZE,
    )
