"""Alerts: tell a person, by a channel that is not this mail, when the mail itself breaks.

The events (`provider_down`, `provider_up`, `all_failed`, `queued`, `expired`) are found as
transitions inside the atomic state update (mailrelay/state/transitions.py); this module
sends them. `[alerts] command` gets each event as one JSON object on standard input (run
without a shell); `[alerts] urls` are apprise notification URLs (the optional extra
`mailrelay[alerts]`, imported only when an alert goes out). Both are bounded by `timeout`
seconds in all: a command still running then is killed, and every failure is one warning.
Alerts never change an exit code.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mailrelay.datarecord import field, record
from mailrelay.secrets import Secret, scrub

if TYPE_CHECKING:
    from mailrelay.state.transitions import Event

DEFAULT_TIMEOUT = 5.0

Warn = Callable[[str], None]


# --- configuration ------------------------------------------------------------------------


@record
class AlertSettings:
    command: list[str] = field(default_factory=list)  # argv, run without a shell
    urls: list[Secret] = field(default_factory=list)  # apprise URLs (they hold tokens)
    timeout: float = DEFAULT_TIMEOUT

    @property
    def enabled(self) -> bool:
        return bool(self.command or self.urls)


# --- sending --------------------------------------------------------------------------------


class Dispatcher:
    """Sends events to the command and the URLs, at most `timeout` seconds per call."""

    def __init__(self, settings: AlertSettings, *, warn: Warn | None = None) -> None:
        self.settings = settings
        self.warn: Warn = warn or (lambda _msg: None)

    def __call__(self, events: Sequence[Event]) -> None:
        self.dispatch(events)

    def dispatch(self, events: Sequence[Event]) -> None:
        """Send `events`; never raises, every failure is one warning."""
        if not events or not self.settings.enabled:
            return
        deadline = time.monotonic() + self.settings.timeout
        try:
            notifier = self._start_urls(events) if self.settings.urls else None
            if self.settings.command:
                self._run_commands(events, deadline)
            if notifier is not None:
                notifier.join(max(0.0, deadline - time.monotonic()))
                if notifier.is_alive():
                    self.warn(
                        "alert: the notification URLs did not answer within "
                        f"{self.settings.timeout:g} s; given up"
                    )
        except Exception as exc:  # an alert must never cost the mail
            self.warn(scrub(f"alert: internal error: {type(exc).__name__}: {exc}"))

    # the command ---------------------------------------------------------------------------

    def _run_commands(self, events: Sequence[Event], deadline: float) -> None:
        import subprocess
        import tempfile

        argv = self.settings.command
        name = argv[0]
        running: list[tuple[subprocess.Popen[bytes], Any]] = []
        problems: list[str] = []
        files = contextlib.ExitStack()
        try:
            for event in events:  # all at once: one bound for all of them
                # stderr to a file, not a pipe: nothing to drain while waiting
                err = files.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
                try:
                    proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        start_new_session=True,
                    )
                except OSError as exc:
                    why = exc.strerror or str(exc)
                    self.warn(f"alert: cannot run the alert command {name}: {why}")
                    break
                running.append((proc, err))
                assert proc.stdin is not None
                with contextlib.suppress(OSError):  # it did not read: its exit status tells
                    proc.stdin.write(event.to_json().encode("utf-8") + b"\n")
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            for proc, err in running:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _kill(proc)
                    problems.append(f"did not finish within {self.settings.timeout:g} s; killed")
                    continue
                if proc.returncode != 0:
                    err.seek(0)
                    said = err.read(4096).decode("utf-8", "replace").strip().splitlines()[-1:]
                    problems.append(
                        f"exit status {proc.returncode}" + (f": {said[0][:200]}" if said else "")
                    )
        finally:
            for proc, _ in running:
                if proc.poll() is None:
                    _kill(proc)
            files.close()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            self.warn(scrub(f"alert: the alert command {name} {problems[0]}{more}"))

    # the URLs ------------------------------------------------------------------------------

    def _start_urls(self, events: Sequence[Event]) -> threading.Thread:
        # a thread that may outlive the bound: daemon, so it never holds the process up
        thread = threading.Thread(
            target=self._notify, args=(list(events),), name="mailrelay-alerts", daemon=True
        )
        thread.start()
        return thread

    def _notify(self, events: list[Event]) -> None:
        try:
            import apprise
        except ImportError:
            self.warn(
                "alert: [alerts] urls need apprise, which is not installed "
                "(pip install 'mailrelay[alerts]')"
            )
            return
        try:
            sender = apprise.Apprise()
            for i, url in enumerate(self.settings.urls):
                if not sender.add(url.reveal()):
                    self.warn(f"alert: [alerts] urls[{i}] is not a notification URL apprise knows")
            if not len(sender):
                return
            failed = 0
            for event in events:
                if not sender.notify(title=event.title, body=_body(event)):
                    failed += 1
            if failed:
                self.warn(f"alert: {failed} of {len(events)} notification(s) were not delivered")
        except Exception as exc:
            self.warn(scrub(f"alert: notification failed: {type(exc).__name__}: {exc}"))


def _body(event: Event) -> str:
    doc = event.to_dict()
    lines = [f"{k}: {v}" for k, v in doc.items() if v not in (None, "")]
    return "\n".join(lines)


def _kill(proc: Any) -> None:
    import os
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and whatever it started
    except OSError:
        proc.kill()
    proc.wait()


class BackgroundDispatcher:
    """A non-blocking front for `Dispatcher` (for `serve`): events queue up and one daemon
    thread sends them. `close(wait)` waits at most `wait` seconds for what is queued."""

    def __init__(self, dispatcher: Dispatcher, *, max_queued: int = 1000) -> None:
        import queue

        self.dispatcher = dispatcher
        self._full = queue.Full
        self._queue: queue.Queue[list[Event] | None] = queue.Queue(maxsize=max_queued)
        self._thread = threading.Thread(target=self._run, name="mailrelay-alerts", daemon=True)
        self._dropped = False
        self._closed = False
        self._thread.start()

    def __call__(self, events: Sequence[Event]) -> None:
        self.dispatch(events)

    def dispatch(self, events: Sequence[Event]) -> None:
        if not events or self._closed:
            return
        try:
            self._queue.put_nowait(list(events))
        except self._full:
            if not self._dropped:  # said once: a flood of alerts is itself the news
                self._dropped = True
                self.dispatcher.warn("alert: too many alerts waiting; some were dropped")

    def _run(self) -> None:
        while True:
            events = self._queue.get()
            if events is None:
                return
            self.dispatcher.dispatch(events)
            if self._closed and self._queue.empty():
                return

    def close(self, wait: float | None = None) -> None:
        """Take no more events; wait at most `wait` seconds for the queued ones to go out."""
        self._closed = True
        with contextlib.suppress(self._full):  # full: the worker ends when it has drained it
            self._queue.put_nowait(None)
        self._thread.join(wait)


def read_alerts(table: object, source: str) -> AlertSettings:
    """The `[alerts]` table of the config."""
    from mailrelay.errors import ConfigError
    from mailrelay.providers.options import ProviderConfig

    if not isinstance(table, dict):
        raise ConfigError("[alerts] must be a table", source=source)
    known = ("command", "urls", "timeout")
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown key; known: {', '.join(known)}", source=source, key=f"alerts.{unknown[0]}"
        )
    cfg = ProviderConfig("[alerts]", "alerts", table, source)
    settings = AlertSettings()
    try:
        command = table.get("command")
        if command is not None and (
            not isinstance(command, list)
            or not command
            or not all(isinstance(a, str) and a for a in command)
        ):
            raise cfg.error("command", "must be a list of non-empty strings (an argv)")
        settings.command = list(command or [])
        urls = table.get("urls", [])
        if isinstance(urls, (str, dict)):
            urls = [urls]
        if not isinstance(urls, list):
            raise cfg.error("urls", "must be a list of notification URLs")
        settings.urls = [
            Secret(url, source=source, key=f"alerts.urls[{i}]") for i, url in enumerate(urls)
        ]
        settings.timeout = cfg.get_float("timeout", DEFAULT_TIMEOUT)
    except ConfigError as exc:
        key = exc.key or "?"
        raise ConfigError(
            exc.reason, source=source, key=key if key.startswith("alerts.") else f"alerts.{key}"
        ) from None
    return settings
