"""Building a message from command-line pieces: flags, input files, attachments."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from mailrelay.errors import MessageError, input_file_error
from mailrelay.message.addresses import parse_address, parse_addresses
from mailrelay.message.headers import parse_header
from mailrelay.message.model import DEFAULT_MAX_SIZE, Attachment, Message
from mailrelay.message.validate import validate_message

_READ_CHUNK = 1024 * 1024


def read_input_file(
    path: str | Path, label: str, *, limit: int | None = None, regular: bool = False
) -> bytes:
    """A whole input file; unreadable → InputFileError "LABEL: no such file" (exit 66).

    Read in chunks, never more than `limit` bytes (a MessageError past it: /dev/zero ends
    there); with `regular`, anything but a regular file (a FIFO, a device) is refused before
    a byte is read, as opening a FIFO would wait for a writer.
    """
    from mailrelay.fsutil import open_for_reading

    try:
        fd = open_for_reading(path, regular=regular)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # not a regular file: the input's fault
            raise MessageError(f"{label}: not a regular file") from None
        raise input_file_error(label, exc) from None
    with os.fdopen(fd, "rb", buffering=0) as fh:
        try:
            return read_bounded(fh, label, limit)
        except OSError as exc:
            raise input_file_error(label, exc) from None


def read_bounded(stream: BinaryIO, label: str, limit: int | None) -> bytes:
    """All of `stream`, in chunks; a one-line MessageError once it passes `limit` bytes."""
    chunks: list[bytes] = []
    total = 0
    while True:
        want = _READ_CHUNK if limit is None else min(_READ_CHUNK, limit + 1 - total)
        chunk = stream.read(want)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if limit is not None and total > limit:
            raise MessageError(
                f"{label}: larger than the message size limit of {limit} bytes "
                "(max_size in the config)"
            )


def load_attachment(
    path: str, *, inline: bool = False, max_size: int = DEFAULT_MAX_SIZE
) -> Attachment:
    """Read an attachment file, guessing its MIME type from the name."""
    import mimetypes  # only a send with attachments pays for it (and its Windows registry)

    p = Path(path)
    data = read_input_file(p, f"attachment {path}", limit=max_size, regular=True)
    ctype, encoding = mimetypes.guess_type(p.name)
    if ctype is None or encoding is not None:
        ctype = "application/octet-stream"
    return Attachment(filename=p.name, content_type=ctype, data=data, inline=inline)


def html_to_text(html: str) -> str:
    import html2text  # only paid for when a text alternative must be made

    conv = html2text.HTML2Text()
    conv.body_width = 0
    return str(conv.handle(html)).strip() + "\n"


def build_message(
    *,
    sender: str,
    to: Sequence[str] = (),
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: Sequence[str] = (),
    subject: str = "",
    text: str | None = None,
    html: str | None = None,
    headers: Sequence[str] = (),
    attachments: Sequence[str] = (),
    tags: Sequence[str] = (),
    metadata: Sequence[str] = (),
    max_size: int = DEFAULT_MAX_SIZE,
) -> Message:
    """Build and validate a message from command-line values (addresses as strings)."""
    if not sender:
        raise MessageError("no sender: give --from/-r or set 'from' in [defaults] of the config")
    meta: dict[str, str] = {}
    for item in metadata:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MessageError(f"--metadata: expected KEY=VALUE, got {item!r}")
        meta[key] = value
    if html is not None and text is None:
        text = html_to_text(html)
    msg = Message(
        sender=parse_address("--from", sender),
        to=parse_addresses("--to", to),
        cc=parse_addresses("--cc", cc),
        bcc=parse_addresses("--bcc", bcc),
        reply_to=parse_addresses("--reply-to", reply_to),
        subject=subject,
        text=text,
        html=html,
        headers=[parse_header("--header", h) for h in headers],
        attachments=[load_attachment(a, max_size=max_size) for a in attachments],
        tags=list(tags),
        metadata=meta,
    )
    validate_message(msg, max_size=max_size)
    return msg
