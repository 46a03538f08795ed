"""`mailrelay queue`: the spool of messages every provider refused for now.

`send --queue` (or `on_failure = "queue"`) puts a message here; `queue flush` (from cron)
sends what is due; `list`, `show` and `drop` let a person look and decide.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from mailrelay.cli import CliApp, HintingGroup, global_options, json_option, pass_app

if TYPE_CHECKING:
    from mailrelay.cli.output import Output
    from mailrelay.message import Message
    from mailrelay.spool import FlushItem, FlushReport, QueuedMessage


def _relative(when: datetime, now: datetime) -> str:
    from mailrelay.spool.listing import relative

    return relative(when, now)


@click.group(cls=HintingGroup, context_settings={"max_content_width": 100})
@global_options()
def queue() -> None:
    """List, send and drop the messages waiting in the spool.

    A message lands in the spool when every provider failed for now and queuing is on
    (send --queue, or on_failure = "queue" in the config). Run 'mailrelay queue flush -q'
    from cron to send what is due.

    \b
    Examples:
      mailrelay queue list
      mailrelay queue flush --now
      mailrelay queue show 3F9K
    """


@queue.command("list")
@click.option("--failed", is_flag=True, help="List the messages in failed/ instead.")
@global_options()
@json_option
@pass_app
def list_command(app: CliApp, failed: bool, json_mode: bool) -> None:
    """List the queued messages, oldest first (or those in failed/ with --failed).

    Shows each message's id, age, tries, next try, recipients, subject and last error.
    """
    out = app.output(json_mode=json_mode)
    spool = app.spool()
    entries = spool.entries(failed=failed)
    held = [] if failed else spool.held()
    now = spool.now()
    if out.json_mode:
        out.emit_json(
            {
                "spool": spool.where,
                "failed": failed,
                "count": len(entries) + len(held),
                "held": len(held),
                "messages": [h.info(now) for h in held] + [e.info(now) for e in entries],
            }
        )
        return
    if not entries and not held:
        where = spool.failed_where if failed else spool.where
        out.note(f"no messages in {where}")
        return
    from mailrelay.spool.listing import FAILED_COLUMNS, QUEUED_COLUMNS, failed_rows, queued_rows

    if failed:
        columns, rows = FAILED_COLUMNS, failed_rows(entries, now)
    else:
        columns, rows = QUEUED_COLUMNS, queued_rows(held, entries, now)
    where = spool.failed_where if failed else spool.where
    title = f"{len(entries) + len(held)} message(s) in {where}"
    if held:
        title += f", {len(held)} held until the configuration allows sending"
    out.table(title, columns, rows, long=["why", "last error"])


def _describe(app: CliApp, entry: QueuedMessage) -> tuple[dict[str, Any], Message]:
    from mailrelay.message import DEFAULT_MAX_SIZE

    message = entry.message(max_size=app.settings.max_size or DEFAULT_MAX_SIZE)
    return {"envelope": {"sender": entry.sender, "recipients": entry.recipients}}, message


@queue.command("show")
@click.argument("queue_id", metavar="ID")
@global_options()
@json_option
@pass_app
def show_command(app: CliApp, queue_id: str, json_mode: bool) -> None:
    """Show one queued, failed or held message: envelope, headers, every try.

    The body is shown only with -v. ID may be a unique start of an id.
    """
    from mailrelay.clock import age_text, when_text
    from mailrelay.spool import HeldMessage

    out = app.output(json_mode=json_mode)
    spool = app.spool()
    found = spool.find_any(queue_id)
    now = spool.now()
    if isinstance(found, HeldMessage):
        from mailrelay.cli.held import show_held

        show_held(app, out, found, now)
        return
    entry = found
    doc, message = _describe(app, entry)
    summary = message.summary()
    if out.json_mode:
        info = entry.info(now)
        info.update(doc)
        info["path"] = str(entry.path) if entry.path else None
        info["where"] = spool.place(entry)
        info["message"] = summary
        info["history"] = entry.history
        if app.verbose:
            info["body"] = message.as_bytes().decode("utf-8", errors="replace")
        out.emit_json(info)
        return
    state = (
        f"failed: {entry.failed_reason}"
        if entry.failed_reason is not None
        else f"queued, next try {_relative(entry.next_try, now)} ({when_text(entry.next_try)})"
    )
    age = age_text((now - entry.created).total_seconds())
    lines = [
        f"id:          {entry.id}",
        f"file:        {spool.place(entry)}",
        f"state:       {state}",
        f"created:     {when_text(entry.created)} ({age} ago)",
        f"tries:       {entry.tries}",
        f"envelope:    from {entry.sender} to {', '.join(entry.recipients)}",
        f"from:        {summary['from']}",
    ]
    for key in ("to", "cc", "bcc", "reply_to"):
        values = summary[key]
        if isinstance(values, list) and values:
            lines.append(f"{key.replace('_', '-') + ':':<12} {', '.join(map(str, values))}")
    lines.append(f"subject:     {summary['subject']}")
    lines.append(f"message-id:  {summary['message_id']}")
    headers = summary.get("headers")
    if isinstance(headers, list):
        lines += [f"header:      {h}" for h in headers]
    for att in message.attachments:
        lines.append(f"attachment:  {att.filename} ({att.content_type}, {len(att.data)} bytes)")
    lines.append("history:")
    for entry_try in entry.history:
        for a in entry_try.get("attempts", []):
            lines.append(
                f"  {entry_try.get('time')}  {a.get('provider')} ({a.get('type')}): "
                f"{a.get('outcome')}: {a.get('detail')}"
            )
    for line in lines:
        out.data(line)
    if app.verbose:
        out.data("")
        for line in message.as_bytes().decode("utf-8", errors="replace").splitlines():
            out.data(line)
    else:
        out.data("(-v shows the whole message)")


@queue.command("drop")
@click.argument("queue_id", metavar="ID")
@global_options()
@pass_app
def drop_command(app: CliApp, queue_id: str) -> None:
    """Remove a queued or failed message for good, without sending it.

    ID may be a unique start of an id.
    """
    spool = app.spool()
    entry = spool.drop(queue_id)
    where = "failed/" if entry.failed_reason is not None else "the queue"
    app.out.note(f"dropped {entry.id} from {where} (to {', '.join(entry.recipients) or '?'})")


@queue.command("flush")
@click.option("--now", "now", is_flag=True, help="Try every queued message, whatever its backoff.")
@global_options()
@json_option
@pass_app
def flush_command(app: CliApp, now: bool, json_mode: bool) -> None:
    """Send the queued messages that are due, oldest first, through the providers.

    A message that fails again waits twice as long as before (queue_retry, doubling, capped
    by queue_max_retry); one older than queue_max_age, or refused permanently, moves to
    failed/. Exit 0: all sent or none due; 75: some stay queued; 69: some moved to failed/
    or a spool file was unreadable (moved to corrupt/).
    """
    out = app.output(json_mode=json_mode)
    spool = app.spool()
    if not spool.pending():  # cron runs this often: nothing is silent
        if out.json_mode:
            from mailrelay.spool import FlushReport

            out.emit_json({"spool": spool.where, **FlushReport().to_dict()})
        click.get_current_context().exit(0)
    from mailrelay.flushing import flush_spool

    bar = _ProgressBar(out) if _show_progress(out) else None

    def progress(item: FlushItem | None) -> None:
        if bar is not None:
            bar.advance()
        if item is not None and not out.json_mode:
            _report_item(app, out, item)

    try:
        report = flush_spool(
            app,
            ignore_backoff=now,
            progress=progress,
            on_start=bar.start if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.stop()
    if out.json_mode:
        out.emit_json({"spool": spool.where, **report.to_dict()})
    else:
        _summarize_flush(app, out, report, spool.now())
    click.get_current_context().exit(report.exit_code)


def _summarize_flush(app: CliApp, out: Output, report: FlushReport, now: datetime) -> None:
    """The one line that ends a flush on the terminal: what happened, or when the next
    message is due (silent under cron when nothing was done)."""
    from mailrelay.clock import when_text

    counts = [
        (report.count("sent"), "sent"),
        (report.count("queued"), "still queued"),
        (report.count("held"), "still held"),
        (report.count("failed"), "moved to failed/"),
        (report.count("corrupt"), "unreadable, moved to corrupt/"),
        (report.count("not_due"), "not due yet"),
        (report.count("locked"), "being sent by another flush"),
    ]
    acted = any(report.count(k) for k in ("sent", "queued", "held", "failed", "corrupt"))
    if acted or app.verbose or out.interactive:
        text = ", ".join(f"{n} {what}" for n, what in counts if n) or "nothing queued"
        due = [i.next_try for i in report.items if i.next_try is not None]
        waiting = report.count("not_due")
        if waiting and not acted and due:
            nearest = min(due)
            text = (
                f"nothing due; {waiting} message(s) wait, the next "
                f"{_relative(nearest, now)} ({when_text(nearest)}); "
                "'mailrelay queue flush --now' sends them at once"
            )
        elif due and not acted:
            text += f"; next due {when_text(min(due))}"
        out.note(f"queue flush: {text}")


def _report_item(app: CliApp, out: Output, item: FlushItem) -> None:
    from mailrelay.clock import when_text

    if item.status == "sent":
        if app.verbose or out.interactive:
            out.note(f"{item.id}: sent {item.detail}".rstrip())
    elif item.status == "queued":
        out.note(f"{item.id}: still queued ({item.detail}); next try {when_text(item.next_try)}")
    elif item.status == "held":
        out.error(f"{item.id}: still held: {item.detail}")
    elif item.status == "failed":
        out.error(
            f"{item.id}: moved to failed/ ({item.detail}); see 'mailrelay queue show {item.id}'"
        )
    elif item.status == "corrupt":
        out.error(f"spool file {item.id}.json was {item.detail}; moved to {item.path}")
    elif app.verbose:
        when = f" (next try {when_text(item.next_try)})" if item.next_try else ""
        out.note(f"{item.id}: {item.status.replace('_', ' ')}{when} {item.detail}".rstrip())


def _show_progress(out: Output) -> bool:
    return not out.json_mode and not out.quiet and out.interactive


class _ProgressBar:
    """A rich progress bar on stderr (a terminal only)."""

    def __init__(self, out: Output) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self.progress = Progress(console=Console(file=out.stderr or sys.stderr), transient=True)
        self.task: Any = None

    def start(self, total: int) -> None:
        self.task = self.progress.add_task("flushing the queue", total=total)
        self.progress.start()

    def advance(self) -> None:
        if self.task is not None:
            self.progress.advance(self.task)

    def stop(self) -> None:
        self.progress.stop()
