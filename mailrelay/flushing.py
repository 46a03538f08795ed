"""One flush of the spool, whichever front end runs it: `queue flush` (from cron) renders
the report it returns, serve's flusher logs it. So the two can never end a flush differently:

- held messages (sendmail mode) first, read again with today's configuration
  (mailrelay.heldmail's `load_held`, mailrelay.delivery's `flush_held`);
- then the queued messages that are due (`QueueStore.flush`), each sent with the `keep` hook
  that leaves a retry uncounted: a message is counted once in the state's `messages`, when it
  was queued, however often it is tried again;
- every send leaves out the recipients suppressed since the message was queued or held
  (mailrelay.suppression's `suppressing`);
- the messages moved to failed/ make one `expired` alert ([alerts]).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailrelay.app import App
    from mailrelay.engine import Engine
    from mailrelay.message import Message
    from mailrelay.result import Disposition, SendResult
    from mailrelay.spool import FlushItem, FlushReport


def flush_spool(
    app: App,
    *,
    engine: Engine | None = None,
    ignore_backoff: bool = False,
    progress: Callable[[FlushItem | None], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> FlushReport:
    """Flush `app`'s spool (held messages, then the due queued ones) and return the report,
    held messages' items first. Without `engine`, the app's is built when the first message
    is sent (a configuration problem shows only when there is something to send), holding
    its providers' connections for the rest of the flush. `progress` hears of each item (and
    None for a file it passed over), `on_start` how many queued files it will look at."""
    from mailrelay.delivery import flush_held
    from mailrelay.heldmail import load_held
    from mailrelay.message import DEFAULT_MAX_SIZE
    from mailrelay.suppression import suppressing

    spool = app.spool()
    settings = app.settings
    engines = [engine] if engine is not None else []

    def send_one(message: Message) -> SendResult:
        if not engines:  # only when something is due: a config problem shows here
            engines.append(app.engine())
            app.hold_connections()  # one SMTP connection for the whole flush
        return engines[0].send(message, keep=retried)

    send = suppressing(send_one, app.suppressions(), warn=app.warn)
    held_items: list[FlushItem] = []
    if spool.held_keys():
        held_items = flush_held(spool, lambda h: load_held(app, h), send, queue=app.queueing())
        for item in held_items:
            if progress is not None:
                progress(item)
    report = spool.flush(
        send,
        retry=settings.queue_retry,
        max_retry=settings.queue_max_retry,
        max_age=settings.queue_max_age,
        ignore_backoff=ignore_backoff,
        max_size=settings.max_size or DEFAULT_MAX_SIZE,
        progress=progress,
        on_start=on_start,
    )
    report.items[:0] = held_items
    alert_expired(app, report)
    return report


def retried(result: SendResult) -> Disposition | None:
    """The `keep` of a flush's send: a retry that fails again stays queued, and the message
    was counted once already, when it was queued (None: not counted again)."""
    return None


def alert_expired(app: App, report: FlushReport) -> None:
    """One `expired` alert naming the messages the flush moved to failed/, if any."""
    moved = [(i.id, i.detail) for i in report.items if i.status == "failed"]
    alerter = app.alerter() if moved else None
    if alerter is not None:
        from mailrelay.state.transitions import expired_event

        alerter.dispatch([expired_event(moved)])
