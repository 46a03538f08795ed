"""`mailrelay status --message ID`: what became of one message, per recipient, from the
records `serve` keeps (its send result, then the provider's events)."""

from __future__ import annotations

from mailrelay.cli import CliApp
from mailrelay.errors import ExitCode, MailrelayError


class UnknownMessage(MailrelayError):
    exit_code = ExitCode.NOINPUT


def show_message_status(app: CliApp, message_id: str) -> None:
    from mailrelay.events.status import StatusLog

    out = app.out
    log = StatusLog(app.records(), keep=app.settings.message_status_for)
    doc = log.lookup(message_id)
    if doc is None:
        days = app.settings.message_status_for / 86400
        raise UnknownMessage(
            f"no status kept for message {message_id!r} (statuses of messages sent through "
            f"serve are kept {days:g} days: message_status_for)"
        )
    doc.pop("expires", None)
    if out.json_mode:
        out.emit_json(doc)
        return
    via = doc.get("provider") or "-"
    ident = doc.get("provider_message_id") or "-"
    out.data(f"message {doc['message_id']}: {doc['status']} via {via} (id {ident})")
    rows = [
        [address, str(entry.get("status")), str(entry.get("at")), str(entry.get("detail") or "-")]
        for address, entry in sorted((doc.get("recipients") or {}).items())
    ]
    out.table("recipients", ["recipient", "status", "since", "detail"], rows, long=["detail"])
