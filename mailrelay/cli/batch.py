"""`mailrelay send --batch FILE`: one JSON message per line, several in flight at once.

Lines are read as they come (a million-line file is never held in memory): the main thread
reads a line and hands it to a pool of `concurrency` workers, which parse it and send it
through ONE engine; at most twice `concurrency` lines are in flight. Results are reported
by the main thread in completion order. The state goes through a `BufferedStore`, so the
batch costs a few locked writes of the state file instead of one per message; SMTP
providers keep one connection per worker, HTTP providers share a pooled session.

Exit status: 0 when every line was sent or queued; otherwise the worst of what happened,
in this order: 65 (a bad line, or a message a provider refused itself), 73 (a message could
not be written to the spool), 75 (a message failed for now and was not queued), 78, 69.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import IO, TYPE_CHECKING, Any

from mailrelay.datarecord import record
from mailrelay.errors import ExitCode, InputFileError, MailrelayError, input_file_error

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from mailrelay.cli import CliApp
    from mailrelay.delivery import Queueing
    from mailrelay.engine import Engine
    from mailrelay.message import Message
    from mailrelay.providers.base import Provider
    from mailrelay.result import SendResult
    from mailrelay.suppression import SuppressionList

# exit codes of unsent lines, worst first (see the module docstring and the README)
_PRECEDENCE = (
    ExitCode.DATAERR,
    ExitCode.CANTCREAT,
    ExitCode.TEMPFAIL,
    ExitCode.CONFIG,
    ExitCode.UNAVAILABLE,
)
STATE_MAX_PENDING = 200  # state changes folded into one locked write...
STATE_MAX_DELAY = 2.0  # ...or after this many seconds, whichever comes first


@record
class LineResult:
    """What became of one line: a bad line (`error`), or a send `result` (maybe queued)."""

    line: int
    error: str | None = None
    error_code: int = int(ExitCode.DATAERR)
    result: SendResult | None = None
    queue_id: str | None = None
    queue_error: str | None = None

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error_code
        assert self.result is not None
        if self.result.delivered or self.queue_id is not None:
            return int(ExitCode.OK)
        if self.queue_error is not None:
            return int(ExitCode.CANTCREAT)
        return int(self.result.exit_code)

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"line": self.line, "error": self.error, "exit_code": self.error_code}
        assert self.result is not None
        doc: dict[str, Any] = {"line": self.line, **self.result.to_dict()}
        if self.queue_id is not None:
            doc["queued"] = self.queue_id
            doc["exit_code"] = int(ExitCode.OK)
        if self.queue_error is not None:
            doc["queue_error"] = self.queue_error
            doc["exit_code"] = int(ExitCode.CANTCREAT)
        return doc


def _open_input(path: str) -> IO[bytes]:
    if path == "-":
        stream = sys.stdin
        buffer = getattr(stream, "buffer", None)
        if buffer is None:  # an in-memory text stream (tests): its text as UTF-8 bytes
            import io

            return io.BytesIO(stream.read().encode("utf-8"))
        return buffer  # type: ignore[no-any-return]
    try:
        return open(path, "rb")  # closed by run_batch
    except OSError as exc:
        raise input_file_error(f"--batch {path}", exc) from None


def _lines(stream: IO[bytes], path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of every non-blank line, read lazily."""
    try:
        for lineno, raw in enumerate(stream, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM
                raw = raw[3:]
            if raw.strip():
                yield lineno, raw
    except OSError as exc:
        raise InputFileError(f"--batch {path}: cannot read: {exc.strerror}") from None


class _Batch:
    """The shared, read-only context of the workers, and what one line's work is."""

    def __init__(
        self,
        app: CliApp,
        engine: Engine,
        *,
        name: str,
        base_dir: str | None,
        default_sender: str | None,
        max_size: int,
        queue: Queueing | None,
    ) -> None:
        self.app = app
        self.engine = engine
        self.name = name
        self.base_dir = base_dir
        self.default_sender = default_sender
        self.max_size = max_size
        self.queue = queue
        self.suppressions: SuppressionList | None = None  # recipients left out (send does)

    def parse(self, lineno: int, raw: bytes) -> Message:
        from mailrelay.message.msgjson import decode_json, message_from_json

        where = f"{self.name}:{lineno}"
        doc = decode_json(raw, where, one_line=True)
        return message_from_json(
            doc,
            where=where,
            base_dir=self.base_dir,
            default_sender=self.default_sender,
            max_size=self.max_size,
        )

    def run(self, lineno: int, raw: bytes) -> LineResult:
        """One line, in a worker: parse, send, maybe queue. Never raises for bad input."""
        try:
            message = self.parse(lineno, raw)
        except MailrelayError as exc:
            return LineResult(lineno, error=str(exc), error_code=int(exc.exit_code))
        except RecursionError:
            return LineResult(lineno, error=f"{self.name}:{lineno}: JSON nested too deeply")
        from mailrelay.delivery import deliver

        delivery = deliver(self.engine, message, queue=self.queue, suppressions=self.suppressions)
        if delivery.result is None and delivery.skipped:  # every recipient suppressed
            return LineResult(
                lineno, error=f"{self.name}:{lineno}: {delivery.reason}", error_code=65
            )
        return LineResult(
            lineno,
            result=delivery.result,
            queue_id=delivery.queue_id,
            queue_error=delivery.spool_error,
        )


class _Report:
    """Counts, per-line output (JSON lines or error lines) and the progress bar."""

    def __init__(self, app: CliApp, name: str, total: int | None) -> None:
        self.out = app.out
        self.name = name
        self.sent = self.queued = self.failed = self.bad = 0
        self.codes: set[int] = set()
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        out = self.out
        if out.interactive and not out.json_mode and not out.quiet:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(
                TextColumn("sending"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=out.stderr),
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.task = self.progress.add_task("batch", total=total)
            self.progress.start()

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _stderr_line(self, text: str, *, error: bool) -> None:
        if self.progress is not None:  # print above the bar, not through it
            from rich.text import Text

            from mailrelay.cli.output import PROG
            from mailrelay.secrets import scrub

            if error or not self.out.quiet:
                prefix = f"{PROG}: error: " if error else f"{PROG}: "
                self.progress.console.print(Text(scrub(prefix + text)), soft_wrap=True)
            return
        if error:
            self.out.error(text)
        else:
            self.out.note(text)

    def add(self, line: LineResult) -> None:
        code = line.exit_code
        if code:
            self.codes.add(code)
        where = f"{self.name}:{line.line}"
        if line.error is not None:
            self.bad += 1
        elif line.queue_id is not None:
            self.queued += 1
        elif code:
            self.failed += 1
        else:
            self.sent += 1
        if self.out.json_mode:
            self.out.data(json.dumps(line.to_dict(), default=str, ensure_ascii=False))
        elif line.error is not None:
            self._stderr_line(line.error, error=True)
        elif line.result is not None and code:
            tried = "; ".join(
                f"{a.provider}: {a.outcome}: {a.detail}" for a in line.result.attempts
            )
            why = f" (not queued: {line.queue_error})" if line.queue_error else ""
            self._stderr_line(f"{where}: not sent{why}: {tried}", error=True)
        elif line.queue_id is not None:
            self._stderr_line(
                f"{where}: every provider failed for now; queued as {line.queue_id}", error=False
            )
        elif self.out.verbose and line.result is not None and line.result.winner is not None:
            winner = line.result.winner
            ident = winner.message_id or line.result.message_id
            self._stderr_line(f"{where}: sent via {winner.provider}, id {ident}", error=False)
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)

    def summary(self) -> str:
        parts = [f"{self.sent} sent", f"{self.queued} queued", f"{self.failed} failed"]
        parts.append(f"{self.bad} bad line" + ("" if self.bad == 1 else "s"))
        return f"batch: {', '.join(parts)} ({self.name})"

    def finish(self) -> int:
        self.stop()
        if self.failed or self.bad:
            self.out.error(self.summary())
        elif self.queued or self.out.verbose or self.out.interactive:
            self.out.note(self.summary())
        for code in _PRECEDENCE:
            if code in self.codes:
                return int(code)
        return max(self.codes, default=0)


def _count_lines(path: str) -> int | None:
    """Non-blank lines of a regular file, for the progress bar's total (None for a pipe)."""
    try:
        if path == "-" or not os.path.isfile(path):
            return None
        count = 0
        with open(path, "rb") as fh:
            for raw in fh:
                if raw.strip():
                    count += 1
        return count
    except OSError:
        return None


def run_batch(
    app: CliApp,
    path: str,
    *,
    concurrency: int,
    queue: bool,
    policy: str | None,
    timeout: float | None,
    default_sender: str | None,
    check_suppression: bool = True,
) -> int:
    """Send every line of `path` ('-' = stdin); returns the exit code (module docstring)."""
    from mailrelay.message import DEFAULT_MAX_SIZE
    from mailrelay.state.buffered import BufferedStore

    stream = _open_input(path)
    name = "standard input" if path == "-" else path
    try:
        settings = app.settings
        store = BufferedStore(app.store(), max_pending=STATE_MAX_PENDING, max_delay=STATE_MAX_DELAY)
        engine = app.engine(policy=policy, timeout=timeout, store=store)
        app.hold_connections()
        queueing = app.queueing() if queue else None
        batch = _Batch(
            app,
            engine,
            name=name,
            base_dir=None if path == "-" else os.path.dirname(os.path.abspath(path)),
            default_sender=default_sender,
            max_size=settings.max_size or DEFAULT_MAX_SIZE,
            queue=queueing,
        )
        batch.suppressions = app.suppressions() if check_suppression else None
        total = _count_lines(path) if app.out.interactive and not app.out.json_mode else None
        report = _Report(app, name, total)
        durable = queueing.spool.deferred_durability() if queueing else contextlib.nullcontext()
        try:
            workers = budget_concurrency(engine.providers, concurrency)  # rate limits
            with durable:  # one wait for the spool's fsync, before the exit status
                _drive(batch, report, _lines(stream, name), workers)
        finally:
            report.stop()
            _flush_state(app, store)
        return report.finish()
    finally:
        if path != "-":
            stream.close()


def budget_concurrency(providers: Sequence[Provider], concurrency: int) -> int:
    """No more sends at once than the budgets let go in a second: the sum of each provider's
    tightest pace, when every provider has one (threads beyond it would only wait)."""
    if not providers or any(not p.budget.limits for p in providers):
        return concurrency
    rates = [min(limit.per_second for limit in p.budget.limits) for p in providers]
    return max(1, min(concurrency, math.ceil(sum(rates))))


def _drive(
    batch: _Batch, report: _Report, lines: Iterator[tuple[int, bytes]], concurrency: int
) -> None:
    """Read lines into the pool, at most 2 x concurrency in flight; report as they finish."""
    window = 2 * concurrency
    inflight: set[Future[LineResult]] = set()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="mailrelay-batch")
    try:
        for lineno, raw in lines:
            inflight.add(pool.submit(batch.run, lineno, raw))
            if len(inflight) >= window:
                inflight = _settle(inflight, report, block=True)
            elif any(f.done() for f in inflight):
                inflight = _settle(inflight, report, block=False)
        while inflight:
            inflight = _settle(inflight, report, block=True)
    except BaseException:
        # Ctrl-C or a closed stdout: start nothing new, let the sends under way end
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _settle(
    inflight: set[Future[LineResult]], report: _Report, *, block: bool
) -> set[Future[LineResult]]:
    """Report the finished futures (waiting for one when `block`); the rest stay."""
    if block:
        done, pending = wait(inflight, return_when=FIRST_COMPLETED)
    else:
        done = {f for f in inflight if f.done()}
        pending = inflight - done
    for future in done:
        report.add(future.result())  # a bug in a worker surfaces here (exit 70)
    return pending


def _flush_state(app: CliApp, store: Any) -> None:
    """Write what is still pending; a state problem never turns sent mail into an error."""
    from mailrelay.errors import StateError

    try:
        store.flush()
    except StateError as exc:
        app.out.warn(f"{exc}; provider state not updated")
