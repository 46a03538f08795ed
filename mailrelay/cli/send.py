"""`mailrelay send`: build one message (mail(1) habits) and hand it to the failover engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from mailrelay.cli import CliApp, global_options, json_option, pass_app
from mailrelay.cli.completion import complete_provider_names
from mailrelay.cli.compose import MessageOptions, message_from_options, read_whole_message
from mailrelay.config import POLICIES
from mailrelay.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from mailrelay.delivery import Delivery
    from mailrelay.engine import Engine
    from mailrelay.message import Message
    from mailrelay.result import SendResult

FILE = click.Path()  # completes file names in the shell; reading says what is wrong


@click.command(context_settings={"max_content_width": 100})
@click.argument("recipients", nargs=-1, metavar="[ADDRESS]...")
@click.option("--to", "to", multiple=True, metavar="ADDR", help="Recipient (repeatable).")
@click.option("-c", "--cc", multiple=True, metavar="ADDR", help="Carbon-copy recipient(s).")
@click.option("-b", "--bcc", multiple=True, metavar="ADDR", help="Blind-copy recipient(s).")
@click.option("-r", "--from", "sender", metavar="ADDR", help="Sender (default: [defaults] from).")
@click.option("--reply-to", multiple=True, metavar="ADDR", help="Reply-To address(es).")
@click.option("-s", "--subject", default="", metavar="TEXT", help="Subject line.")
@click.option("--text", metavar="TEXT", help="Plain-text body.")
@click.option(
    "--text-file", metavar="PATH", type=FILE, help="Plain-text body from a file ('-' = stdin)."
)
@click.option("--html", metavar="HTML", help="HTML body (a text part is made from it).")
@click.option("--html-file", metavar="PATH", type=FILE, help="HTML body from a file ('-' = stdin).")
@click.option(
    "-a", "--attach", multiple=True, metavar="PATH", type=FILE, help="Attach a file (repeatable)."
)
@click.option("--header", multiple=True, metavar="'NAME: VALUE'", help="Extra header (repeatable).")
@click.option("--tag", multiple=True, metavar="TAG", help="Provider tag/category (repeatable).")
@click.option(
    "--metadata", multiple=True, metavar="KEY=VALUE", help="Provider metadata (repeatable)."
)
@click.option("--no-stdin", is_flag=True, help="Never read the body from standard input.")
@click.option(
    "-E",
    "--skip-empty",
    is_flag=True,
    help="Send nothing (exit 0) when the body is empty, as mailx -E (cron jobs that mail "
    "only when they print something).",
)
@click.option(
    "--eml",
    metavar="FILE",
    type=FILE,
    help="Send a complete RFC 5322 message from FILE ('-' = stdin); recipients are the "
    "arguments plus its To/Cc/Bcc.",
)
@click.option(
    "--message",
    "message_file",
    metavar="FILE",
    type=FILE,
    help="Read the message as JSON from FILE ('-' = stdin); see 'mailrelay schema'.",
)
@click.option(
    "--batch",
    metavar="FILE",
    type=FILE,
    help="Send one JSON message per line of FILE ('-' = stdin), several at once.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=64),
    metavar="N",
    help="With --batch: messages in flight at once (default 8).",
)
@click.option(
    "--queue/--no-queue",
    default=None,
    help="When every provider fails for now, keep the message in the spool and exit 0 "
    "(default: on_failure in the config).",
)
@click.option(
    "--policy", type=click.Choice(POLICIES), help="Where to start: sticky, priority, round-robin."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="Deadline for the whole send, all attempts included.",
)
@click.option(
    "--via",
    multiple=True,
    metavar="NAME",
    shell_complete=complete_provider_names,
    help="Send only through this configured provider (repeatable: these, in this order, "
    "failing over among them).",
)
@click.option("--dry-run", is_flag=True, help="Show the plan and the message; send nothing.")
@click.option(
    "--ignore-suppression",
    is_flag=True,
    help="Send to suppressed addresses too (see `mailrelay suppressions`).",
)
@global_options()
@json_option
@pass_app
def send(
    app: CliApp,
    /,
    *,
    skip_empty: bool,
    eml: str | None,
    message_file: str | None,
    batch: str | None,
    concurrency: int | None,
    queue: bool | None,
    policy: str | None,
    timeout: float | None,
    via: tuple[str, ...],
    dry_run: bool,
    ignore_suppression: bool,
    json_mode: bool,
    **options: Any,  # the message's pieces: MessageOptions
) -> None:
    """Send one message through the first provider that accepts it.

    The body comes from --text/--html (or their -file forms), else from standard input,
    read to its end however long that takes (on a terminal: until Ctrl-D). With only HTML,
    a plain-text alternative is made from it. -E sends nothing when the body is empty.

    A whole message can come instead as RFC 5322 (--eml), as JSON (--message), or as JSON
    lines, one message each (--batch).

    \b
    Examples:
      echo "disk 91% full" | mailrelay send -s "web1: disk" ops@example.com
      mailrelay send -s Report -a report.pdf --text "see attached" boss@example.com
      mailrelay send --dry-run -s test --text hi me@example.com
      mailrelay send --via backup -s test --text hi me@example.com
      mailrelay send --eml saved.eml --queue ops@example.com
      mailrelay send --message alert.json
      mailrelay send --batch welcome.jsonl --concurrency 16 --json
    """
    app.output(json_mode=json_mode)
    app.via = list(via)
    given = MessageOptions(**options)
    whole = {"--eml": eml, "--message": message_file, "--batch": batch}
    _check_sources(whole, given.pieces(), given.recipients)
    if concurrency is not None and batch is None:
        raise UsageError("--concurrency goes with --batch")
    settings = app.settings
    queue_on_failure = settings.on_failure == "queue" if queue is None else queue
    if batch is not None:
        from mailrelay.cli.batch import run_batch

        if dry_run:
            raise UsageError("--dry-run does not go with --batch")
        code = run_batch(
            app,
            batch,
            concurrency=concurrency or 8,
            queue=queue_on_failure,
            policy=policy,
            timeout=timeout,
            default_sender=given.sender or settings.sender,
            check_suppression=not ignore_suppression,
        )
        click.get_current_context().exit(int(code))
    if eml is not None or message_file is not None:
        message = read_whole_message(app, eml, message_file, given.recipients, given.sender)
    else:
        message = message_from_options(app, given)
    body = (message.text or "").strip() or (message.html or "").strip() or message.attachments
    if skip_empty and not body:
        if app.verbose:
            app.out.note("the body is empty: nothing sent (-E/--skip-empty)")
        return
    engine = app.engine(policy=policy, timeout=timeout)  # --timeout runs from here on
    if dry_run:
        from mailrelay.cli.dryrun import show_plan

        show_plan(app, engine, engine.store.load(), message)
        return
    delivery = deliver(app, engine, message, queue=queue_on_failure, check=not ignore_suppression)
    click.get_current_context().exit(delivery.exit_code)


def _check_sources(
    whole: dict[str, str | None], pieces: Mapping[str, object], recipients: tuple[str, ...]
) -> None:
    """At most one source of a whole message (--eml, --message, --batch), and none of the
    options that build one piece by piece beside it."""
    given = [name for name, value in whole.items() if value is not None]
    if len(given) > 1:
        raise UsageError(f"give one of {', '.join(given)}, not several")
    if not given:
        return
    clash = [name for name, value in pieces.items() if value]
    if clash:
        raise UsageError(f"{given[0]} gives the whole message; {clash[0]} cannot be added")
    if recipients and given[0] != "--eml":
        raise UsageError(f"{given[0]} gives the recipients; no address arguments with it")


def deliver(
    app: CliApp,
    engine: Engine,
    message: Message,
    *,
    queue: bool,
    hold: Callable[[SendResult], Delivery | None] | None = None,
    check: bool = True,
) -> Delivery:
    """Send through the engine and report (mailrelay.delivery decides what becomes of it);
    with `queue`, a message every provider refused for now goes to the spool, exit 0;
    `hold` may keep it in held/ instead (sendmail mode); with `check`, suppressed recipients
    are left out (all of them suppressed: exit 65)."""
    from mailrelay.cli.render import show_delivery
    from mailrelay.delivery import deliver as deliver_message

    suppressions = app.suppressions() if check else None
    queueing = app.queueing() if queue else None
    delivery = deliver_message(
        engine, message, queue=queueing, hold=hold, suppressions=suppressions
    )
    if delivery.result is None and delivery.skipped:
        from mailrelay.suppression import SuppressedError

        raise SuppressedError(delivery.reason)
    for skipped in delivery.skipped or []:
        app.out.warn(f"not sent to {skipped.describe()}")
    show_delivery(app.out, delivery)
    if delivery.spool_error is not None:
        from mailrelay.spool import SpoolError

        raise SpoolError(delivery.spool_error)  # not reported as queued: exit 73
    return delivery
