"""Sendmail mode's messages as today's configuration reads them: the message as it came
with sendmail's flags and the config's aliases, and why one is held while it cannot be sent.
`mailrelay sendmail` reads a message here, and a flush reads a held one again
(`load_held`), whichever front end runs it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailrelay.aliases import AliasBook
    from mailrelay.app import App
    from mailrelay.message import Message
    from mailrelay.spool import HeldMessage


def sendmail_aliases(app: App) -> AliasBook:
    """The config's [aliases] and aliases_file, for the local names a message names."""
    from mailrelay.aliases import AliasBook

    settings = app.settings
    return AliasBook(settings.aliases, settings.aliases_file, warn=app.warn)


def hold_reason(app: App, reason: str) -> str:
    """Why a message is held, "no config file" first when none was found: cron's mailer
    gets neither the crontab's variables nor /etc/environment, so that is the likely cause."""
    from mailrelay.errors import ConfigError

    try:
        settings = app.settings
    except ConfigError:
        return reason  # a broken config says so itself
    if settings.source is not None or "no config file" in reason:
        return reason
    return f"no config file (looked for {settings.searched}); {reason}"


def parse_sendmail_message(
    data: bytes,
    options: dict[str, Any],
    *,
    default_sender: str | None,
    max_size: int,
    where: str = "standard input",
    aliases: Callable[[str], list[str]] | None = None,
) -> Message:
    """The message sendmail was handed, with its flags (`SendmailArgs.options()`) and the
    aliases for local names (`sendmail_aliases`)."""
    from mailrelay.message import parse_eml

    return parse_eml(
        data,
        where=where,
        recipients=list(options.get("recipients", [])),
        extract=bool(options.get("extract")),
        envelope_from=options.get("sender"),
        full_name=options.get("full_name"),
        default_sender=default_sender,
        max_size=max_size,
        aliases=aliases,
    )


def load_held(app: App, entry: HeldMessage) -> Message:
    """A held message as today's configuration reads it (ConfigError, or NoSenderError,
    while it cannot; "no config file" first in the reason when there is none)."""
    from mailrelay.errors import ConfigError, NoSenderError
    from mailrelay.message import DEFAULT_MAX_SIZE

    settings = app.settings
    try:
        message = parse_sendmail_message(
            entry.raw,
            entry.options,
            default_sender=settings.sender,
            max_size=settings.max_size or DEFAULT_MAX_SIZE,
            where=f"held message {entry.id}",
            aliases=sendmail_aliases(app),
        )
        app.providers()  # none configured yet: it stays held
    except (ConfigError, NoSenderError) as exc:
        raise type(exc)(hold_reason(app, str(exc))) from None
    return message
