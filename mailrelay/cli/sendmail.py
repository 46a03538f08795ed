"""`mailrelay sendmail` and the `mailrelay-sendmail` console script: a sendmail drop-in.

Cron and many other programs hand mail to `/usr/sbin/sendmail` as a complete RFC 5322
message on standard input. This command takes that message, with the flags they pass
(cron: `-FCronDaemon -i -odi -oem -oi -t -f root`), and gives it to the failover engine.
When every provider fails for now the message is queued, as an MTA would (exit 0).

Its argv is parsed here, not by click: sendmail's flags are getopt-style single letters
with attached values (`-FCronDaemon`, `-oi`, `-B8BITMIME`) that click cannot express.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import click

from mailrelay.cli import CliApp
from mailrelay.datarecord import field, record
from mailrelay.errors import MessageError, UsageError
from mailrelay.heldmail import hold_reason, parse_sendmail_message, sendmail_aliases

if TYPE_CHECKING:
    from mailrelay.delivery import Delivery
    from mailrelay.message import Message
    from mailrelay.result import SendResult

# Letters that take a value, attached (-fADDR) or as the next word (-f ADDR).
_WITH_VALUE = frozenset("abBCdeFfhLNOopRrVX")
# Taken and ignored without a word: msmtp, nullmailer and dma accept these too.
_IGNORED_FLAGS = frozenset("GmnU")
# Taken with a value and ignored: delivery details an API or relay decides for us.
_IGNORED_VALUES = frozenset("BdeNOpRVhL")
# Taken with a value and ignored, with a warning: the caller may expect them to matter.
_WARNED_VALUES = {
    "C": "mailrelay reads its own config ($MAILRELAY_CONFIG)",
    "X": "use log_file in the config or $MAILRELAY_CONFIG for an audit log",
    "a": "mailrelay has no accounts; it tries every configured provider",
}
_LONE_DOT = re.compile(rb"(?:^|\n)\.\r?(?:\n|$)")
_READ_SLACK = 1024 * 1024  # input beyond max_size that a Bcc or a CRLF change may account for

USAGE = """\
Usage: mailrelay sendmail [options] [address ...]
       mailrelay-sendmail [options] [address ...]

Read a complete RFC 5322 message from standard input and send it through the first
configured provider that accepts it; queue it when every provider fails for now (exit 0).
While the configuration does not allow sending (no config, no usable From, a local name
such as "root" with no [aliases] entry, no providers, a broken config, or every provider
failing in a way only a config change mends) the message is held (exit 78) and
'mailrelay queue flush' sends it later. Success prints nothing. Settings come from the
config file (~/.config/mailrelay/config.toml, else /etc/mailrelay/config.toml; cron passes
no other environment), $MAILRELAY_CONFIG, $MAILRELAY_PROVIDERS and $MAILRELAY_STATE (or
mailrelay's global options before 'sendmail').

Options (as sendmail):
  -t            recipients from the To, Cc and Bcc headers, plus the addresses given
  -f ADDR       envelope sender (MAIL FROM); also the From when the message has none
                or an unqualified one (cron's "root")
  -r ADDR       the same as -f
  -F NAME       full name for a From that mailrelay writes
  -i, -oi       a line with a single "." does not end the message
  -v            say what happened (every attempt)
  -bm           deliver mail (the default)
  -bp           list the queue (mailrelay queue list)
  -q            flush the queue once (mailrelay queue flush)
  -h, --help    this help (-h N, a hop count, is ignored)
  --            the rest are addresses
Ignored: -o* (e.g. -odi -oem), -B*, -e*, -N*, -R*, -V*, -d*, -h*, -L*, -O*, -p*, -G -m -n
-U; -C, -X and -a are ignored with a warning. Unknown options are ignored with a warning,
so a cron mail is never lost to a flag.
"""


@record
class SendmailArgs:
    """What a sendmail command line asks for."""

    recipients: list[str] = field(default_factory=list)
    extract: bool = False  # -t
    sender: str | None = None  # -f / -r
    full_name: str | None = None  # -F
    ignore_dots: bool = False  # -i / -oi
    verbose: int = 0  # -v
    mode: str = "send"  # send, list (-bp), flush (-q), help (--help)
    warnings: list[str] = field(default_factory=list)

    def options(self) -> dict[str, Any]:
        """What a held message keeps of the command line, to be sent the same way later."""
        return {
            "recipients": list(self.recipients),
            "extract": self.extract,
            "sender": self.sender,
            "full_name": self.full_name,
        }


def parse_sendmail_args(argv: Sequence[str]) -> SendmailArgs:
    """Parse sendmail's getopt-style flags; options may follow addresses (GNU getopt)."""
    args = SendmailArgs()
    words = list(argv)
    i = 0
    options_done = False
    while i < len(words):
        word = words[i]
        i += 1
        if options_done or not word.startswith("-") or word == "-":
            args.recipients.append(word)
            continue
        if word == "--":
            options_done = True
            continue
        if word == "--help" or (word == "-h" and not (i < len(words) and words[i].isdigit())):
            args.mode = "help"  # a bare -h asks for help; -h N stays sendmail's hop count
            continue
        if word.startswith("--"):
            args.warnings.append(f"ignoring unknown option {word}")
            continue
        j = 1
        while j < len(word):
            letter = word[j]
            j += 1
            if letter == "q":
                _queue_run(args, word[j:])
                break
            if letter in _WITH_VALUE:
                value = word[j:]
                if not value:
                    if i >= len(words):
                        raise UsageError(f"sendmail option -{letter} needs a value")
                    value = words[i]
                    i += 1
                _option(args, letter, value)
                break
            if letter == "t":
                args.extract = True
            elif letter == "i":
                args.ignore_dots = True
            elif letter == "v":
                args.verbose += 1
            elif letter not in _IGNORED_FLAGS:
                # the rest of the word may be this option's value: skip it all
                args.warnings.append(f"ignoring unknown option -{word[j - 1 :]}")
                break
    return args


def _queue_run(args: SendmailArgs, value: str) -> None:
    if value:
        raise UsageError(
            f"-q{value}: mailrelay runs no queue daemon; run 'mailrelay queue flush' from cron "
            "(or 'mailrelay sendmail -q' once)"
        )
    args.mode = "flush"


def _option(args: SendmailArgs, letter: str, value: str) -> None:
    if letter in ("f", "r"):
        args.sender = value
    elif letter == "F":
        args.full_name = value
    elif letter == "o":
        if value == "i":
            args.ignore_dots = True
        # any other -o option (-odi, -oem, -oQ...) is an MTA setting: ignored
    elif letter == "b":
        if value == "m":
            args.mode = "send"
        elif value == "p":
            args.mode = "list"
        else:
            raise UsageError(
                f"-b{value} is not supported: mailrelay sendmail delivers mail (-bm), lists "
                "the queue (-bp) or flushes it (-q)"
            )
    elif letter in _WARNED_VALUES:
        args.warnings.append(f"ignoring -{letter} {value}: {_WARNED_VALUES[letter]}")
    # the rest of _IGNORED_VALUES (-B8BITMIME, -em, -N..., -R..., -V...) are ignored


def cut_at_lone_dot(data: bytes) -> bytes:
    """The input up to a line holding a single ".", which ends it as in sendmail without -i."""
    match = _LONE_DOT.search(data)
    if match is None:
        return data
    start = match.start()
    return data[: start + 1] if data[start : start + 1] == b"\n" else data[:start]


def read_message_bytes(limit: int) -> bytes:
    """All of standard input, or a one-line error once it passes `limit` bytes."""
    stream = sys.stdin
    if stream is None:
        raise MessageError("standard input: closed, expected an RFC 5322 message")
    buffer = getattr(stream, "buffer", None)
    data = bytes(buffer.read(limit + 1)) if buffer is not None else stream.read().encode()
    if len(data) > limit:
        raise MessageError(
            f"standard input: message too large: more than {limit} bytes (max_size in the config)"
        )
    return data


class RawArgsCommand(click.Command):
    """A command that gets its argv untouched in `ctx.args` (click would eat "--")."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.args = list(args)
        return ctx.args


@click.command(
    cls=RawArgsCommand,
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
    add_help_option=False,
)
@click.pass_context
def sendmail(ctx: click.Context) -> None:
    """Act as sendmail: send the RFC 5322 message on standard input (for cron and scripts).

    Takes sendmail's flags (-t, -f/-r, -F, -i/-oi; ignores -o*, -B* and the like) and
    queues the message when every provider fails for now; holds it (exit 78) while the
    configuration does not allow sending (no config, no usable From, a local name with no
    alias, no providers, or every provider failing for its configuration).
    Also installed as the mailrelay-sendmail command, for cron or a /usr/sbin/sendmail
    link. See --help.

    \b
    Examples:
      printf 'To: ops@example.com\\nSubject: hi\\n\\nbody\\n' | mailrelay sendmail -t
      mailrelay sendmail -FCronDaemon -i -odi -oem -oi -t -f root < cron-output.eml
    """
    app = ctx.find_object(CliApp)
    assert app is not None
    args = parse_sendmail_args(ctx.args)
    if args.mode == "help":
        click.echo(USAGE, nl=False)
        return
    if args.verbose:
        app.verbose += args.verbose
        app.output(json_mode=False)
    for warning in args.warnings:
        app.out.warn(warning)
    if args.mode in ("list", "flush"):
        _run_queue_command(ctx, "list" if args.mode == "list" else "flush")
        return
    from mailrelay.cli.send import deliver
    from mailrelay.delivery import forget_held
    from mailrelay.errors import ConfigError, NoSenderError
    from mailrelay.message import DEFAULT_MAX_SIZE

    try:
        max_size = app.settings.max_size or DEFAULT_MAX_SIZE
    except ConfigError:
        max_size = DEFAULT_MAX_SIZE  # read the message all the same, to keep it (below)
    data = read_message_bytes(max_size + _READ_SLACK)
    if not args.ignore_dots:
        data = cut_at_lone_dot(data)
    options = args.options()
    try:
        message = parse_sendmail_message(
            data,
            options,
            default_sender=app.settings.sender,
            max_size=max_size,
            aliases=sendmail_aliases(app),
        )
        engine = app.engine()
    except (ConfigError, NoSenderError) as exc:
        # An MTA never drops what it was handed: until the configuration allows sending,
        # the message is kept as it came, and 'queue flush' sends it once it does.
        ctx.exit(hold_message(app, data, options, hold_reason(app, str(exc))))
    # an MTA queues what fails for now; what only a config change mends is held instead
    delivery = deliver(
        app, engine, message, queue=True, hold=partial(_hold_after, app, data, options, message)
    )
    if delivery.status == "held":
        _say_held(app, delivery, app.spool().where)
    elif delivery.status == "sent":
        forget_held(app.spool(), message.message_id)  # a held copy resent by hand
    ctx.exit(delivery.exit_code)


def _hold_after(
    app: CliApp, data: bytes, options: dict[str, Any], message: Message, result: SendResult
) -> Delivery | None:
    """Held, not queued, when every provider failed in a way only the config can mend."""
    from mailrelay.delivery import config_change_reason, hold, needs_config_change

    if not needs_config_change(result):
        return None
    reason = config_change_reason(result)
    return hold(app.spool(), data, reason=reason, options=options, result=result, message=message)


def hold_message(app: CliApp, data: bytes, options: dict[str, Any], reason: str) -> int:
    """Keep the message in held/ (the configured spool, else the default one) and say so in
    one line; the exit code (78 held, 73 when even that failed)."""
    from mailrelay.delivery import hold
    from mailrelay.errors import ConfigError
    from mailrelay.spool import Spool, default_spool_dir
    from mailrelay.spool.protocol import QueueStore

    spool: QueueStore
    try:
        spool = app.spool()
    except ConfigError:
        spool = Spool(default_spool_dir(), warn=app.out.warn)
    delivery = hold(spool, data, reason=reason, options=options)
    _say_held(app, delivery, spool.where)
    return delivery.exit_code


def _say_held(app: CliApp, delivery: Delivery, where: str) -> None:
    reason = delivery.reason
    if delivery.spool_error is not None:
        app.out.error(f"{reason}; the message could not be kept either: {delivery.spool_error}")
    else:
        app.out.error(
            f"{reason}; the message is held as {delivery.queue_id} in "
            f"{delivery.path or where}; "
            "'mailrelay queue flush' sends it once the configuration allows"
        )


def _run_queue_command(ctx: click.Context, name: str) -> None:
    """`-bp` / `-q` as `mailrelay queue list` / `queue flush`, when that command exists."""
    root = ctx.find_root()
    group = root.command
    queue = group.get_command(root, "queue") if isinstance(group, click.Group) else None
    if not isinstance(queue, click.Group) or queue.get_command(root, name) is None:
        flag = "-bp" if name == "list" else "-q"
        raise UsageError(f"{flag} needs 'mailrelay queue {name}', which this mailrelay lacks")
    with queue.make_context("queue", [name], parent=ctx) as sub:
        queue.invoke(sub)


def main(argv: Sequence[str] | None = None) -> None:
    """The `mailrelay-sendmail` console script: `mailrelay sendmail` with the same exit codes."""
    from mailrelay.cli import main as cli_main

    cli_main(["sendmail", *(sys.argv[1:] if argv is None else argv)])
