"""`mailrelay send`: build one message (mail(1) habits) and hand it to the failover engine."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

import click

from mailrelay.cli import App, global_options, json_option, pass_app
from mailrelay.cli.completion import complete_provider_names
from mailrelay.config import POLICIES
from mailrelay.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from mailrelay.delivery import Delivery
    from mailrelay.engine import Engine
    from mailrelay.message import Message
    from mailrelay.output import Output
    from mailrelay.result import SendResult
    from mailrelay.state import State

FILE = click.Path()  # completes file names in the shell; reading says what is wrong

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
@global_options()
@json_option
@pass_app
def send(
    app: App,
    recipients: tuple[str, ...],
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    sender: str | None,
    reply_to: tuple[str, ...],
    subject: str,
    text: str | None,
    text_file: str | None,
    html: str | None,
    html_file: str | None,
    attach: tuple[str, ...],
    header: tuple[str, ...],
    tag: tuple[str, ...],
    metadata: tuple[str, ...],
    no_stdin: bool,
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
    json_mode: bool,
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
    given = [
        name
        for name, value in (("--eml", eml), ("--message", message_file), ("--batch", batch))
        if value is not None
    ]
    if len(given) > 1:
        raise UsageError(f"give one of {', '.join(given)}, not several")
    if given:
        pieces = {
            "--to": to,
            "--cc": cc,
            "--bcc": bcc,
            "--reply-to": reply_to,
            "--subject": subject,
            "--text": text,
            "--text-file": text_file,
            "--html": html,
            "--html-file": html_file,
            "--attach": attach,
            "--header": header,
            "--tag": tag,
            "--metadata": metadata,
        }
        clash = [name for name, value in pieces.items() if value]
        if clash:
            raise UsageError(f"{given[0]} gives the whole message; {clash[0]} cannot be added")
        if recipients and given[0] != "--eml":
            raise UsageError(f"{given[0]} gives the recipients; no address arguments with it")
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
            default_sender=sender or settings.sender,
        )
        click.get_current_context().exit(int(code))
    if eml is not None or message_file is not None:
        message = read_whole_message(app, eml, message_file, recipients, sender)
    else:
        message = message_from_options(
            app,
            recipients=recipients,
            to=to,
            cc=cc,
            bcc=bcc,
            sender=sender,
            reply_to=reply_to,
            subject=subject,
            text=text,
            text_file=text_file,
            html=html,
            html_file=html_file,
            attach=attach,
            header=header,
            tag=tag,
            metadata=metadata,
            no_stdin=no_stdin,
        )
    body = (message.text or "").strip() or (message.html or "").strip() or message.attachments
    if skip_empty and not body:
        if app.verbose:
            app.out.note("the body is empty: nothing sent (-E/--skip-empty)")
        return
    engine = app.engine(policy=policy, timeout=timeout)  # --timeout runs from here on
    if dry_run:
        show_plan(app, engine, engine.store.load(), message)
        return
    outcome = deliver(app, engine, message, queue=queue_on_failure)
    click.get_current_context().exit(outcome.exit_code)


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
    app: App,
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
    from mailrelay.msgjson import load_message

    return load_message(
        # JSON carries attachments in base64: 4/3 of their size, and some room
        read_input_bytes(message_file, "--message", max_size * 2),
        where="standard input" if message_file == "-" else message_file,
        base_dir=None if message_file == "-" else os.path.dirname(os.path.abspath(message_file)),
        default_sender=sender or settings.sender,
        max_size=max_size,
    )


def message_from_options(
    app: App,
    *,
    recipients: tuple[str, ...],
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    sender: str | None,
    reply_to: tuple[str, ...],
    subject: str,
    text: str | None,
    text_file: str | None,
    html: str | None,
    html_file: str | None,
    attach: tuple[str, ...],
    header: tuple[str, ...],
    tag: tuple[str, ...],
    metadata: tuple[str, ...],
    no_stdin: bool,
) -> Message:
    from mailrelay.message import DEFAULT_MAX_SIZE, build_message

    out = app.out
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
    if text is None and html is None and not no_stdin:
        text = read_stdin(out, explicit=False)
    settings = app.settings
    from_addr = sender or settings.sender
    if not from_addr:
        raise UsageError("no sender: give -r/--from, or set 'from' in [defaults] of the config")
    return build_message(
        sender=from_addr,
        to=[*recipients, *to],
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        subject=subject,
        text=text,
        html=html,
        headers=header,
        attachments=attach,
        tags=tag,
        metadata=metadata,
        max_size=settings.max_size or DEFAULT_MAX_SIZE,
    )


def deliver(
    app: App,
    engine: Engine,
    message: Message,
    *,
    queue: bool,
    hold: Callable[[SendResult], Delivery | None] | None = None,
) -> Delivery:
    """Send through the engine and report (mailrelay.delivery decides what becomes of it);
    with `queue`, a message every provider refused for now goes to the spool, exit 0;
    `hold` may keep it in held/ instead (sendmail mode)."""
    from mailrelay.cli.render import show_delivery
    from mailrelay.delivery import deliver as deliver_message

    outcome = deliver_message(engine, message, queue=app.queueing() if queue else None, hold=hold)
    show_delivery(app.out, outcome)
    if outcome.spool_error is not None:
        from mailrelay.spool import SpoolError

        raise SpoolError(outcome.spool_error)  # not reported as queued: exit 73
    return outcome


def show_plan(app: App, engine: Engine, state: State, message: Message) -> None:
    out = app.out
    plan = engine.plan(state)
    steps: list[dict[str, Any]] = []
    for i, provider in enumerate(plan, 1):
        until = engine.cooling_until(state, provider)
        steps.append(
            {
                "position": i,
                "provider": provider.name,
                "type": provider.type,
                "settings": provider.describe(),
                "cooling_until": until,
            }
        )
    if out.json_mode:
        out.emit_json(
            {
                "dry_run": True,
                "policy": engine.policy.order,
                "first": plan[0].name if plan else None,
                "plan": steps,
                "message": message.summary(),
            }
        )
        return
    from mailrelay.clock import when_text

    out.data(f"dry run: nothing is sent and no state changes (policy {engine.policy.order})")
    for step in steps:
        cool = (
            f", cooling until {when_text(step['cooling_until'])}" if step["cooling_until"] else ""
        )
        settings = ", ".join(f"{k}={v}" for k, v in step["settings"].items())
        out.data(
            f"  {step['position']}. {step['provider']} ({step['type']}{cool}) {settings}".rstrip()
        )
    out.data("message:")
    raw = message.as_bytes().decode("utf-8", errors="replace")
    if not app.verbose:
        head, _, _ = raw.partition("\r\n\r\n")
        summary = message.summary()
        raw = head + (
            f"\r\n\r\n[text {summary['text_bytes']} bytes, html {summary['html_bytes']} bytes, "
            f"{len(message.attachments)} attachment(s); -v shows the whole message]"
        )
    for bcc in message.bcc:
        out.data(f"  (envelope) Bcc: {bcc}")
    for line in _subject_as_typed(raw.splitlines(), message.subject):
        out.data("  " + line)


def _subject_as_typed(lines: list[str], subject: str) -> list[str]:
    """The Subject header shown decoded, as the user typed it, not in its RFC 2047 form."""
    shown: list[str] = []
    in_subject = False
    for i, line in enumerate(lines):
        if not line:  # the end of the headers: the body as it is
            return shown + lines[i:]
        if in_subject and line[:1] in (" ", "\t"):
            continue  # a folded line of the encoded subject
        in_subject = line.lower().startswith("subject:")
        if in_subject and "=?" in line:
            line = f"Subject: {subject}"
        shown.append(line)
    return shown
