"""Held messages (sendmail mode) in `queue show` (a flush reads them again with today's
configuration: mailrelay.heldmail's `load_held`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    from mailrelay.cli import CliApp
    from mailrelay.cli.output import Output
    from mailrelay.spool import HeldMessage


def show_held(app: CliApp, out: Output, entry: HeldMessage, now: datetime) -> None:
    """`queue show` of a held message: why it is held, its envelope and headers as they
    came (it is read again, with the configuration of the day, when a flush sends it)."""
    from mailrelay.clock import age_text, when_text

    info = entry.info(now)
    raw_text = entry.raw.decode("utf-8", errors="replace")
    if out.json_mode:
        info.update(path=str(entry.path), message_id=entry.message_id, sendmail=entry.options)
        if app.verbose:
            info["body"] = raw_text
        out.emit_json(info)
        return
    age = age_text((now - entry.created).total_seconds())
    lines = [
        f"id:          {entry.id}",
        f"file:        {entry.path}",
        f"state:       held: {entry.reason}",
        f"created:     {when_text(entry.created)} ({age} ago)",
        f"envelope:    from {info['from'] or '?'} to {', '.join(info['recipients']) or '?'}",
        f"subject:     {info['subject']}",
        f"message-id:  {entry.message_id or '-'}",
        "'mailrelay queue flush' sends it once the configuration allows",
    ]
    for line in lines:
        out.data(line)
    if app.verbose:
        out.data("")
        for line in raw_text.splitlines():
            out.data(line)
    else:
        out.data("(-v shows the whole message)")
