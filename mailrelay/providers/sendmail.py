"""The sendmail provider: pipe the RFC 5322 message to a local command.

The command gets the envelope on its command line (`-i -f sender -- recipients...`), so Bcc
recipients are delivered while no Bcc header is ever written, and its sysexits status is
mapped to an outcome class. It refuses to run mailrelay itself: mailrelay can stand in for
/usr/sbin/sendmail, and sendmail → mailrelay → sendmail would loop forever.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any, ClassVar

from mailrelay.providers.base import (
    LABELS,
    MIME_PARTS,
    Capability,
    Health,
    Outcome,
    Provider,
    ProviderError,
    Receipt,
    tag_header_lines,
)

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.providers.options import ProviderConfig, ProviderURL

DEFAULT_COMMAND = ("/usr/sbin/sendmail",)
CHILD_ENV = "MAILRELAY_SENDMAIL_CHILD"
MAILRELAY_NAMES = frozenset({"mailrelay", "mailrelay-sendmail"})
_SCRIPT_LIMIT = 64 * 1024  # larger files are binaries, not wrapper scripts
_SCRIPT_MARKERS = (b"mailrelay.cli", b"from mailrelay", b"import mailrelay", b"-m mailrelay")
_STDERR_LIMIT = 200

# sysexits.h (/usr/include/sysexits.h) and the shell's 126/127 for exec failures.
_SYSEXITS = {
    64: "EX_USAGE",
    65: "EX_DATAERR",
    66: "EX_NOINPUT",
    67: "EX_NOUSER",
    68: "EX_NOHOST",
    69: "EX_UNAVAILABLE",
    70: "EX_SOFTWARE",
    71: "EX_OSERR",
    72: "EX_OSFILE",
    73: "EX_CANTCREAT",
    74: "EX_IOERR",
    75: "EX_TEMPFAIL",
    76: "EX_PROTOCOL",
    77: "EX_NOPERM",
    78: "EX_CONFIG",
    126: "not executable",
    127: "not found",
}
_CODE = {name: code for code, name in _SYSEXITS.items()}
_EXIT_OUTCOMES = {
    _CODE[name]: outcome
    for outcome, names in (
        (Outcome.TRANSIENT, ("EX_TEMPFAIL", "EX_OSERR", "EX_IOERR", "EX_CANTCREAT")),
        (Outcome.PERMANENT, ("EX_DATAERR", "EX_NOUSER", "EX_NOHOST")),
        (Outcome.PROVIDER, ("EX_NOPERM", "EX_CONFIG", "not executable", "not found")),
    )
    for name in names
}


def exit_outcome(code: int) -> Outcome:
    """The outcome class of a sendmail exit status; a signal (negative) or unknown is rejected."""
    if code == 0:
        return Outcome.ACCEPTED
    return _EXIT_OUTCOMES.get(code, Outcome.REJECTED)


def resolve(command: str) -> str | None:
    """The path the command would run from, or None when it is not found."""
    if os.sep in command:
        return command if os.path.exists(command) else None
    return shutil.which(command)


def calls_mailrelay(argv: list[str]) -> bool:
    """True when the command is mailrelay itself (by name, through symlinks, or a wrapper)."""
    if any(a == "-m" and b.split(".")[0] == "mailrelay" for a, b in itertools.pairwise(argv)):
        return True
    found = resolve(argv[0])
    if found is None:
        return False
    real = os.path.realpath(found)
    if {os.path.basename(found), os.path.basename(real)} & MAILRELAY_NAMES:
        return True
    try:
        if not os.path.isfile(real) or os.path.getsize(real) > _SCRIPT_LIMIT:
            return False
        with open(real, "rb") as f:
            head = f.read(_SCRIPT_LIMIT)
    except OSError:
        return False
    if b"\0" in head:  # a small binary, not a script
        return False
    return any(marker in head for marker in _SCRIPT_MARKERS)


def _first_line(f: IO[bytes]) -> str:
    f.seek(0)
    for raw in f.read(16 * 1024).splitlines():
        line = raw.decode("utf-8", "replace").strip()
        if line:
            return line[:_STDERR_LIMIT]
    return ""


class SendmailProvider(Provider):
    type: ClassVar[str] = "sendmail"
    url_schemes: ClassVar[tuple[str, ...]] = ("sendmail",)
    # tags and metadata travel as X-Mailrelay-Tag / X-Mailrelay-Metadata header fields
    capabilities: ClassVar[frozenset[Capability]] = MIME_PARTS | LABELS
    default_timeout: ClassVar[float] = 60.0
    health_check: ClassVar[str] = "command exists and is executable"

    def __init__(self, name: str, command: list[str], *, timeout: float | None = None) -> None:
        super().__init__(name, timeout=timeout)
        self.command = command

    @property
    def program(self) -> str:
        return os.path.basename(self.command[0])

    @classmethod
    def from_config(cls, cfg: ProviderConfig) -> SendmailProvider:
        command = cfg.get_str_list("command") or list(DEFAULT_COMMAND)
        command[0] = os.path.expanduser(command[0])
        if calls_mailrelay(command):
            raise cfg.error(
                "command",
                f"{command[0]} would call mailrelay itself (a sendmail → mailrelay loop); "
                "point it at the real sendmail (postfix, exim, msmtp, ...)",
            )
        return cls(cfg.name, command, timeout=cfg.get_timeout(cls.default_timeout))

    @classmethod
    def config_from_url(cls, url: ProviderURL) -> dict[str, Any]:
        if url.host not in (None, "", "localhost"):
            raise url.error("sendmail runs a local command: use sendmail:///path/to/sendmail")
        if url.username or url.password or url.port:
            raise url.error("a sendmail URL takes no user, password or port")
        if url.path in ("", "/"):
            return {}
        if not url.path.startswith("/"):
            raise url.error("the command must be an absolute path: sendmail:///usr/sbin/sendmail")
        return {"command": [url.path]}

    def describe(self) -> dict[str, str]:
        return {"command": " ".join(self.command)}

    def _error(self, outcome: Outcome, text: str, *, local: bool = False) -> ProviderError:
        return ProviderError(outcome, f"{self.program}: {text}", local=local)

    def _deliver(self, message: Message, *, timeout: float) -> Receipt:
        if os.environ.get(CHILD_ENV):
            raise self._error(
                Outcome.PROVIDER,
                f"refusing to run: this mailrelay was itself started by a sendmail provider "
                f"({CHILD_ENV} is set), so this would loop",
                local=True,
            )
        if calls_mailrelay(self.command):
            raise self._error(
                Outcome.PROVIDER, "refusing to run: it would call mailrelay itself", local=True
            )
        argv = [*self.command, "-i", "-f", message.return_path.email, "--"]
        argv += [a.email for a in message.recipients()]
        # local submission takes UNIX line ends (sendmail's non-SMTP mailers use E=\n; PHP
        # issue php/php-src#19188: some sendmail clients need LF); CRLF is for the wire
        # per chunk: chunks are whole lines, so no CRLF is split between two
        chunks = itertools.chain((tag_header_lines(message),), message.byte_stream())
        data = (chunk.replace(b"\r\n", b"\n") for chunk in chunks)
        env = {**os.environ, CHILD_ENV: "1"}
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                    env=env,
                    bufsize=0,
                    start_new_session=True,  # so a timeout kills its children too
                )
            except FileNotFoundError:
                raise self._error(
                    Outcome.PROVIDER, f"{self.command[0]} not found", local=True
                ) from None
            except PermissionError:
                raise self._error(
                    Outcome.PROVIDER, f"{self.command[0]} is not executable", local=True
                ) from None
            except OSError as exc:
                raise self._error(
                    Outcome.PROVIDER,
                    f"cannot start {self.command[0]}: {exc.strerror}",
                    local=True,
                ) from None
            written = threading.Event()
            writer = threading.Thread(
                target=_feed, args=(proc, data, written), name="sendmail-stdin", daemon=True
            )
            writer.start()
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
                writer.join(1.0)
                if written.is_set():
                    raise self._error(
                        Outcome.AMBIGUOUS,
                        f"no exit within {timeout:g} s after the message was handed over; "
                        "killed it (it may have been accepted)",
                    ) from None
                raise self._error(
                    Outcome.TRANSIENT,
                    f"did not read the message within {timeout:g} s; killed it",
                ) from None
            writer.join(1.0)
            if code == 0:
                return Receipt(
                    provider=self.name,
                    message_id=message.message_id,
                    detail=f"{self.program} exit 0",
                )
            reason = _first_line(err) or _first_line(out)
            # 126/127: a wrapper could not run its command here, not the MTA's answer
            raise self._error(
                exit_outcome(code), _describe_exit(code, reason), local=code in (126, 127)
            )

    def check(self, *, timeout: float) -> Health:
        command = self.command[0]
        found = resolve(command)
        if found is None:
            return Health(False, f"{command} not found", Outcome.PROVIDER)
        if not os.path.isfile(found):
            return Health(False, f"{found} is not a file", Outcome.PROVIDER)
        if not os.access(found, os.X_OK):
            return Health(False, f"{found} is not executable", Outcome.PROVIDER)
        if calls_mailrelay(self.command):
            return Health(False, f"{found} would call mailrelay itself", Outcome.PROVIDER)
        return Health(True, f"{found} executable")


def _describe_exit(code: int, reason: str) -> str:
    if code < 0:
        try:
            what = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            what = f"killed by signal {-code}"
    else:
        name = _SYSEXITS.get(code)
        what = f"exit {code} ({name})" if name else f"exit {code}"
    return f"{what}: {reason}" if reason else what


def _feed(proc: subprocess.Popen[bytes], data: Iterable[bytes], written: threading.Event) -> None:
    """Write the message to the command's stdin and close it; set `written` when all went."""
    stdin = proc.stdin
    assert stdin is not None
    try:
        for chunk in data:
            view = memoryview(chunk)
            while view:
                n = stdin.write(view)
                view = view[n or 0 :]
        stdin.close()
        written.set()
    except OSError:  # broken pipe: the command exited early; its status says why
        with contextlib.suppress(OSError):
            stdin.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
