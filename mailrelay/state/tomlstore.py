"""The default state store: a TOML file (docs/architecture.md, "State").

It is written only under an exclusive `fcntl.flock` on a sibling lock file, as a temp file in
the same directory that is fsynced and then `os.replace`d, so readers never see half a file
and concurrent updates never lose an increment. A corrupt file is moved aside with a warning:
a bad state file never stops mail.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import tomli_w

from mailrelay.datarecord import record_fields
from mailrelay.errors import StateError
from mailrelay.fsutil import (
    fsync_directory,
    make_private_dirs,
    open_own_file,
    read_regular_file,
    replace_private,
)
from mailrelay.state.protocol import ProviderState, State

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


SCHEMA = 1


def _warn_stderr(message: str) -> None:
    print(f"mailrelay: warning: {message}", file=sys.stderr)


class _Unusable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Corrupt(_Unusable):
    """The file exists but its content is not a state we can use."""


class _Unreadable(_Unusable):
    """The file exists (or may) but cannot be read, e.g. permission denied."""


_COUNTERS = ("sent", "failed", "consecutive_failures")
_TIMES = ("last_success", "last_failure", "cooldown_until")
_TEXTS = ("last_error", "last_outcome")
_LOCK_POLL_MAX = 0.025  # longest sleep between two tries at the lock


class TomlStateStore:
    """The state as a TOML file, locked with flock and replaced atomically."""

    # one host's file: a local problem (an unset secret) rests the provider here, as the
    # user of a single-host cron job expects; a store other hosts read sets this True
    shared = False

    def __init__(
        self,
        path: Path,
        *,
        warn: Callable[[str], None] | None = None,
        lock_timeout: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.location = str(self.path)
        self.lock_timeout = lock_timeout
        self._warn = warn if warn is not None else _warn_stderr

    def __repr__(self) -> str:
        return f"TomlStateStore({self.location!r})"

    # -- reading --------------------------------------------------------------------------

    def load(self) -> State:
        try:
            return self._read_or_afresh()
        except _Corrupt as exc:
            reason = exc.reason
        # moving the file aside is a write: do it under the lock, on a fresh read, since a
        # writer may have replaced the corrupt file in the meantime
        try:
            with self._locked(create_dirs=False):
                return self._read_for_update()
        except StateError as exc:
            why = str(exc).removeprefix(f"state file {self.path}: ")
            self._warn(
                f"state file {self.path} was unreadable ({reason}); "
                f"could not move it aside ({why}); starting afresh"
            )
            return State()

    def _read(self) -> State:
        try:
            data = read_regular_file(self.path)
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise _Unreadable(exc.strerror or type(exc).__name__) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Corrupt("not UTF-8") from None
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise _Corrupt(f"not valid TOML: {exc}") from None
        except RecursionError:
            raise _Corrupt("not valid TOML: nested too deeply") from None
        return _state_from_document(document)

    def _read_or_afresh(self) -> State:
        """The file's state, or an empty one (with a warning) when the file cannot be read;
        a corrupt file raises _Corrupt."""
        try:
            return self._read()
        except _Unreadable as exc:
            self._warn(f"state file {self.path} is unreadable ({exc.reason}); starting afresh")
            return State()

    def _read_for_update(self) -> State:
        """Read under the exclusive lock; a corrupt file is moved aside, an unreadable one
        is reported and then replaced by the write that follows."""
        try:
            return self._read_or_afresh()
        except _Corrupt as exc:
            aside = self._move_aside()
            self._warn(
                f"state file {self.path} was unreadable ({exc.reason}); "
                f"moved to {aside}; starting afresh"
            )
            return State()

    def _move_aside(self) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        base = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        aside, n = base, 1
        while aside.exists():  # only ever renamed under the lock, so this check holds
            n += 1
            aside = base.with_name(f"{base.name}-{n}")
        try:
            os.rename(self.path, aside)
        except OSError as exc:
            raise self._error("cannot move it aside", exc) from None
        return aside

    # -- writing --------------------------------------------------------------------------

    def update(self, change: Callable[[State], None]) -> State:
        with self._locked(create_dirs=True):
            state = self._read_for_update()
            change(state)
            text = render_state(state)
            try:  # never write a file that the next run would move aside as corrupt
                written = _state_from_document(tomllib.loads(text))
            except _Corrupt as exc:
                raise ValueError(f"refusing to write an invalid state: {exc.reason}") from None
            self._write(text)
            return written

    def _write(self, text: str) -> None:
        directory = self.path.parent
        self._remove_stale_temps()
        try:
            replace_private(self.path, text.encode("utf-8"), sync=True)
        except OSError as exc:
            raise self._error("cannot write it", exc) from None
        try:
            fsync_directory(directory)
        except OSError as exc:
            raise StateError(f"cannot sync directory {directory}: {exc.strerror}") from None

    def _remove_stale_temps(self) -> None:
        # every writer holds the lock, so a temp file seen now was left by a crashed one
        prefix = f".{self.path.name}."
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.path.parent):
                if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    # -- locking --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, *, create_dirs: bool) -> Iterator[None]:
        """Hold the exclusive flock on the sibling lock file, waiting up to lock_timeout."""
        if create_dirs:
            self._make_dirs()
        try:
            fd = open_own_file(self.lock_path, os.O_RDWR)
        except OSError as exc:
            raise self._error(f"cannot open its lock file {self.lock_path.name}", exc) from None
        try:
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_mode & 0o777 != 0o600:
                    os.fchmod(fd, 0o600)
            self._acquire(fd)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _acquire(self, fd: int) -> None:
        deadline = time.monotonic() + self.lock_timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            except OSError as exc:
                raise self._error("cannot lock it", exc) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StateError(
                    f"state file {self.path}: cannot lock it: {self.lock_path} is still "
                    f"locked by another process after {self.lock_timeout:g} s"
                )
            # jitter so that many waiting processes do not wake in step
            time.sleep(min(pause * (0.5 + int.from_bytes(os.urandom(2), "big") / 65536), remaining))
            pause = min(pause * 2, _LOCK_POLL_MAX)

    def _make_dirs(self) -> None:
        try:
            make_private_dirs(self.path.parent)
        except NotADirectoryError as exc:
            raise StateError(
                f"state file {self.path}: cannot create its directory: "
                f"{exc.filename} exists and is not a directory"
            ) from None
        except OSError as exc:
            raise self._error("cannot create its directory", exc) from None

    def _error(self, what: str, exc: OSError) -> StateError:
        reason = exc.strerror or os.strerror(exc.errno or 0) or type(exc).__name__
        if exc.filename and str(exc.filename) != str(self.path):
            reason = f"{reason}: {exc.filename}"
        return StateError(f"state file {self.path}: {what}: {reason}")


# -- the file format --------------------------------------------------------------------


def _state_from_document(document: dict[str, Any]) -> State:
    """Validate a parsed TOML document; unknown extra keys are ignored (forward compatible)."""
    if "schema" not in document:
        raise _Corrupt("no schema version")
    schema = document["schema"]
    if type(schema) is not int or schema != SCHEMA:
        raise _Corrupt(f"schema {schema!r} is not supported (expected {SCHEMA})")
    state = State()
    failover = _table(document, "failover", "failover")
    state.last_provider = _text(failover.get("last_provider"), "failover.last_provider")
    state.last_result = _text(failover.get("last_result"), "failover.last_result")
    if "last_index" in failover:
        state.last_index = _counter(failover["last_index"], "failover.last_index")
    for name, table in _table(document, "providers", "providers").items():
        where = f"providers.{_key(name)}"
        if not isinstance(table, dict):
            raise _Corrupt(f"{where}: expected a table")
        entry = ProviderState()
        for key, read in _READERS.items():
            if key in table:
                setattr(entry, key, read(table[key], f"{where}.{key}"))
        outcomes = _table(table, "outcomes", f"{where}.outcomes")
        for outcome, count in outcomes.items():
            entry.outcomes[outcome] = _counter(count, f"{where}.outcomes.{_key(outcome)}")
        for minute, count in _table(table, "minutes", f"{where}.minutes").items():
            if not re.fullmatch(r"\d+:[a-z_]+", minute):
                raise _Corrupt(f"{where}.minutes.{_key(minute)}: expected MINUTE:OUTCOME")
            entry.minutes[minute] = _counter(count, f"{where}.minutes.{_key(minute)}")
        state.providers[name] = entry
    for result, count in _table(document, "messages", "messages").items():
        state.messages[result] = _counter(count, f"messages.{_key(result)}")
    return state


def _table(document: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = document.get(key, {})
    if not isinstance(value, dict):
        raise _Corrupt(f"{where}: expected a table")
    return value


def _text(value: object, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _Corrupt(f"{where}: expected a string")
    return value


def _counter(value: object, where: str) -> int:
    if type(value) is not int:  # bool is an int subclass: refuse it too
        raise _Corrupt(f"{where}: expected an integer")
    if value < 0:
        raise _Corrupt(f"{where}: negative ({value})")
    return value


def _utc(value: object, where: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        kind = "a local date-time" if isinstance(value, (datetime, date)) else type(value).__name__
        raise _Corrupt(f"{where}: expected an offset date-time, got {kind}")
    try:
        return value.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise _Corrupt(f"{where}: date-time out of range") from None


# how each plain field of a provider's table is read
_READERS: dict[str, Callable[[object, str], object]] = {
    **dict.fromkeys(_COUNTERS, _counter),
    **dict.fromkeys(_TIMES, _utc),
    **dict.fromkeys(_TEXTS, _text),
}


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'"{name}"'


def _to_utc(value: datetime, *, milliseconds: bool) -> datetime:
    if value.tzinfo is None:
        raise ValueError("state datetimes must be timezone-aware")
    value = value.astimezone(timezone.utc)
    micro = (value.microsecond // 1000) * 1000 if milliseconds else 0
    return value.replace(microsecond=micro)


# tomli_w writes "2026-11-22 09:14:03+00:00"; we write the RFC 3339 "T ... Z" form.
# Only these keys hold datetimes and every string value is quoted, so the match is exact.
_DATETIME_LINE = re.compile(
    r"^(last_success|last_failure|cooldown_until) = "
    r"(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(\.\d{3})?\d*\+00:00$",
    re.MULTILINE,
)


def render_state(state: State) -> str:
    """The state as TOML text, in the layout of docs/architecture.md; None fields are omitted."""
    failover: dict[str, Any] = {}
    if state.last_provider is not None:
        failover["last_provider"] = state.last_provider
    if state.last_index is not None:
        failover["last_index"] = state.last_index
    if state.last_result is not None:
        failover["last_result"] = state.last_result
    providers: dict[str, Any] = {}
    for name, entry in state.providers.items():
        table: dict[str, Any] = {}
        for key in record_fields(entry):  # the documented order
            value = getattr(entry, key)
            if value is None or (key in ("outcomes", "minutes") and not value):
                continue
            if key in _TIMES:
                value = _to_utc(value, milliseconds=key == "cooldown_until")
            table[key] = value
        providers[name] = table
    document: dict[str, Any] = {"schema": SCHEMA, "failover": failover, "providers": providers}
    if state.messages:
        document["messages"] = dict(state.messages)
    text = tomli_w.dumps(document)
    return _DATETIME_LINE.sub(r"\1 = \2T\3\4Z", text)
