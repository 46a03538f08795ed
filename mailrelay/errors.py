"""Exception hierarchy and the one exit-code table (sysexits.h)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of `send` and every other command but `status` (sysexits.h)."""

    OK = 0
    USAGE = 64  # EX_USAGE: bad command line
    DATAERR = 65  # EX_DATAERR: bad message or input data; a provider refused the message itself
    NOINPUT = 66  # EX_NOINPUT: an input file is missing or unreadable
    UNAVAILABLE = 69  # EX_UNAVAILABLE: every provider failed, none temporarily
    SOFTWARE = 70  # EX_SOFTWARE: a bug in mailrelay
    CANTCREAT = 73  # EX_CANTCREAT: cannot write the state file, spool or outbox
    TEMPFAIL = 75  # EX_TEMPFAIL: every provider failed, at least one temporarily: retry later
    CONFIG = 78  # EX_CONFIG: configuration error


class StatusExit(IntEnum):
    """Exit codes of `mailrelay status`."""

    HEALTHY = 0
    DEGRADED = 1
    NONE_HEALTHY = 69


EXIT_CODE_DOC: dict[int, str] = {
    0: "sent (or queued, where the user asked for queuing)",
    64: "usage error: bad command line",
    65: "bad message or data; or a provider refused the message itself",
    66: "an input file is missing or unreadable",
    69: "every provider failed, none of them temporarily",
    70: "internal error (a bug: please report it, with --debug output)",
    73: "cannot write the state file, spool or outbox",
    75: "every provider failed, at least one temporarily: try again later",
    78: "configuration error",
}


class MailrelayError(Exception):
    """An error that ends the command with a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.SOFTWARE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(MailrelayError):
    exit_code = ExitCode.USAGE


class MessageError(MailrelayError):
    """The message (or input data) is invalid; no provider was contacted."""

    exit_code = ExitCode.DATAERR


class NoSenderError(MessageError):
    """No usable From: neither the message, -f, nor the configuration gives one.

    Sendmail mode holds such a message until the configuration allows sending it."""


class NoAliasError(NoSenderError):
    """A recipient is a bare local name ("root") that no alias maps to an address: held,
    as a missing From is, until [aliases] in the configuration names one."""


class InputFileError(MailrelayError):
    exit_code = ExitCode.NOINPUT


class StateError(MailrelayError):
    exit_code = ExitCode.CANTCREAT


class ConfigError(MailrelayError):
    """A configuration error, naming where it is: file, provider and key."""

    exit_code = ExitCode.CONFIG

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        provider: str | None = None,
        key: str | None = None,
    ) -> None:
        where = []
        if source:
            where.append(source)
        if provider:
            where.append(f"provider {provider!r}")
        if key:
            where.append(f"key {key!r}")
        full = f"{': '.join(where)}: {message}" if where else message
        super().__init__(full)
        self.source = source
        self.provider = provider
        self.key = key
        self.reason = message


def input_file_error(label: str, exc: OSError) -> InputFileError:
    """The one-line error for an input file that cannot be read: "LABEL: no such file"."""
    if isinstance(exc, FileNotFoundError):
        reason = "no such file"
    elif isinstance(exc, IsADirectoryError):
        reason = "is a directory"
    else:
        reason = f"cannot read: {exc.strerror}"
    return InputFileError(f"{label}: {reason}")


def did_you_mean(word: str, known: Sequence[str]) -> str:
    """ " (did you mean 'x'?)" for the closest of `known` to a mistyped word, else ""."""
    import difflib

    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
