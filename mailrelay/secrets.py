"""Secret values from the config: literal, environment, command or file; and their redaction.

A secret is resolved only when a provider needs it. Every resolved value is remembered so
that `scrub()` can blank it out of any text before it is shown or logged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mailrelay.errors import ConfigError

REDACTED = "***"
_known: set[str] = set()


def remember(value: str) -> None:
    """Register a secret value so it is scrubbed from everything mailrelay prints, with its
    form inside a JSON string (as a JSON body carries it: Mandrill's key, an echo quoted
    back in a provider's error); `scrub` also finds its percent-encoded form."""
    if value and len(value) >= 3:
        _known.add(value)
        escaped = json.dumps(value)[1:-1]
        if escaped != value:
            _known.add(escaped)


def remember_auth(user: str, password: str) -> None:
    """Register the encoded forms in which a credential leaves: HTTP Basic's base64 of
    "user:password" (RFC 7617, as Mailgun takes its key), SASL PLAIN's base64 of
    "\\0user\\0password" (RFC 4616) and SASL LOGIN's base64 of the password alone, so that a
    server echoing them back cannot put them into an error, the state or a log."""
    import base64

    for form in (f"{user}:{password}", f"\0{user}\0{password}", password):
        remember(base64.b64encode(form.encode("utf-8")).decode("ascii"))


def scrub(text: str) -> str:
    """Replace every known secret value in text (and its percent-encoded form) by ***."""
    if not _known or not text:
        return text
    from urllib.parse import quote

    for value in sorted(_known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
        quoted = quote(value, safe="")
        if quoted != value and quoted in text:
            text = text.replace(quoted, REDACTED)
    return text


class Secret:
    """A secret as written in the config; `reveal()` resolves it (once)."""

    FORMS = ("env", "command", "file")

    def __init__(
        self,
        spec: object,
        *,
        source: str | None = None,
        provider: str | None = None,
        key: str | None = None,
    ) -> None:
        self._where: dict[str, Any] = {"source": source, "provider": provider, "key": key}
        self._value: str | None = None
        if isinstance(spec, str):
            self.kind, self.arg = "literal", spec
            if not spec:
                raise ConfigError("empty secret", **self._where)
            remember(spec)
            self._value = self._checked(spec)
            remember(self._value)  # the form that is sent, without a line end
        elif isinstance(spec, dict):
            keys = set(spec)
            if len(keys) != 1 or not keys <= set(self.FORMS):
                raise ConfigError(
                    "a secret is a string or a table with exactly one of env, command, file",
                    **self._where,
                )
            (self.kind,) = keys
            arg = spec[self.kind]
            if self.kind == "command":
                if (
                    not isinstance(arg, list)
                    or not arg
                    or not all(isinstance(a, str) and a for a in arg)
                ):
                    raise ConfigError(
                        "command must be a non-empty list of strings (argv, no shell)",
                        **self._where,
                    )
            elif not isinstance(arg, str) or not arg:
                raise ConfigError(f"{self.kind} must be a non-empty string", **self._where)
            self.arg = arg
        else:
            raise ConfigError(
                "a secret is a string or a table with exactly one of env, command, file",
                **self._where,
            )

    @property
    def is_literal(self) -> bool:
        return self.kind == "literal"

    def describe(self) -> str:
        """Where the secret comes from, without its value."""
        if self.kind == "literal":
            return REDACTED
        if self.kind == "command":
            return f"<command {self.arg[0]}>"
        return f"<{self.kind} {self.arg}>"

    def __repr__(self) -> str:
        return f"Secret({self.describe()})"

    __str__ = __repr__

    def missing(self) -> str | None:
        """Why it cannot be resolved, for an env or file secret, without running anything
        (`providers` says so on every run); None when it looks fine or is a command."""
        if self._value is not None:
            return None
        if self.kind == "env" and not os.environ.get(self.arg):
            return str(self._fail(f"environment variable {self.arg} is not set"))
        if self.kind == "file" and not os.access(Path(self.arg).expanduser(), os.R_OK):
            return str(self._fail(f"cannot read secret file {self.arg}"))
        return None

    def reveal(self) -> str:
        if self._value is None:
            value = self._resolve()
            remember(value)
            self._value = self._checked(value)
            remember(self._value)  # the form that is sent, without a line end
        return self._value

    def _checked(self, value: str) -> str:
        """The value without the line end a file, an env file or a command leaves after it
        (CRLF too); any other control character is refused without showing the value."""
        value = value.rstrip("\r\n")
        what = "the secret" if self.kind == "literal" else f"the secret from {self.describe()}"
        if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
            raise self._fail(
                f"{what} holds a control character (a line break or the like); not used"
            )
        if not value:
            raise self._fail(f"{what} is empty")
        return value

    def _fail(self, message: str) -> ConfigError:
        return ConfigError(message, **self._where)

    def _resolve(self) -> str:
        if self.kind == "env":
            value = os.environ.get(self.arg)
            if not value:
                raise self._fail(f"environment variable {self.arg} is not set")
            return value
        if self.kind == "file":
            path = Path(self.arg).expanduser()
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise self._fail(f"cannot read secret file {path}: {exc.strerror}") from None
            if not value:
                raise self._fail(f"secret file {path} is empty")
            return value
        return self._run_command()

    def _run_command(self) -> str:
        import subprocess  # only a { command = [...] } secret needs it

        argv: list[str] = self.arg  # type: ignore[assignment]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
            )
        except FileNotFoundError:
            raise self._fail(f"secret command {argv[0]!r} not found") from None
        except subprocess.TimeoutExpired:
            raise self._fail(f"secret command {argv[0]!r} timed out after 30 s") from None
        except OSError as exc:
            raise self._fail(f"secret command {argv[0]!r}: {exc.strerror}") from None
        if proc.returncode != 0:
            raise self._fail(f"secret command {argv[0]!r} exited with {proc.returncode}")
        # the first line only, like msmtp's passwordeval
        value = proc.stdout.splitlines()[0].strip() if proc.stdout.strip() else ""
        if not value:
            raise self._fail(f"secret command {argv[0]!r} printed nothing")
        return value


def forget_all() -> None:
    """Drop every remembered secret (for long-running callers and tests)."""
    _known.clear()
