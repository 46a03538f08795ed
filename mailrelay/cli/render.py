"""How a delivery (what became of a message) is shown: human lines on stderr, or one JSON
document on stdout."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailrelay.errors import ExitCode

if TYPE_CHECKING:
    from mailrelay.cli.output import Output
    from mailrelay.delivery import Delivery
    from mailrelay.result import SendResult


def show_result(out: Output, result: SendResult) -> None:
    """A sent or failed result: silent on success under cron, every attempt on failure."""
    if out.json_mode:
        out.emit_json(result.to_dict())
        return
    winner = result.winner
    if winner is not None:
        if out.quiet or not (out.verbose or out.interactive):
            return  # success is silent under cron: cron mails any output
        for a in result.attempts[:-1]:
            if a.config_error:  # e.g. its secret's variable is unset: say so, once a line
                out.note(f"{a.provider} ({a.type}) skipped: {a.detail}")
            else:
                out.note(f"{a.provider} ({a.type}) failed: {a.outcome}: {a.detail}")
        ident = winner.message_id or result.message_id
        out.note(f"sent via {winner.provider} ({winner.type}), id {ident}")
        return
    for a in result.attempts:
        out.error(f"{a.provider} ({a.type}): {a.outcome}: {a.detail}")
    code = result.exit_code
    if code == ExitCode.DATAERR:
        out.error("not sent: the provider refused the message itself; not tried elsewhere")
    elif code == ExitCode.TEMPFAIL:
        out.error("not sent: every provider failed, at least one temporarily; try again later")
    else:
        out.error("not sent: every provider failed")


def show_queued(out: Output, delivery: Delivery) -> None:
    """Every provider failed for now and the message is in the spool (exit 0)."""
    result = delivery.result
    assert result is not None
    if out.json_mode:
        doc = result.to_dict()
        doc.update(
            exit_code=0,
            queued=True,
            queue_id=delivery.queue_id,
            spool_file=str(delivery.path) if delivery.path else None,
        )
        out.emit_json(doc)
    elif out.verbose:
        for a in result.attempts:
            out.note(f"{a.provider} ({a.type}) failed: {a.outcome.value}: {a.detail}")
    out.note(
        f"every provider failed for now ({delivery.reason}); queued as {delivery.queue_id}; "
        "'mailrelay queue flush' will retry it"
    )


def show_delivery(out: Output, delivery: Delivery) -> None:
    """Whatever became of the message, as `send` and sendmail mode show it."""
    if delivery.status == "queued":
        show_queued(out, delivery)
    elif delivery.result is not None and out.json_mode and delivery.skipped:
        doc = delivery.result.to_dict()  # and the recipients left out, suppressed
        doc["suppressed"] = [s.to_dict() for s in delivery.skipped]
        out.emit_json(doc)
    elif delivery.result is not None:
        show_result(out, delivery.result)
