"""gunicorn for `mailrelay serve`: one process tree, threaded workers, graceful stops.

gunicorn's own application class (gunicorn.app.base.BaseApplication) carries the settings,
so there is no config file or shell wrapper. SIGTERM and SIGINT both stop gracefully:
the workers finish the requests in flight (a send runs to its end), then everything exits 0.
A queue flusher runs as a thread of each worker (not of the master, which forks): the
spool locks each entry while it is sent, so two flushers never send one message twice.
The master makes the workers' private metrics folder before it forks them and removes it
after the last one has exited (see `metrics_folder`); a start removes the folders of
masters that died without doing so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from mailrelay.errors import ExitCode
from mailrelay.serve.worker import DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, GracefulWorker

if TYPE_CHECKING:
    from flask import Flask

    from mailrelay.app import App
    from mailrelay.result import Listener
    from mailrelay.spool import FlushReport


FOLDER_PREFIX = "mailrelay-serve-metrics-"
OWNER_FILE = "owner.json"  # who made the folder, so a later start can tell it was abandoned


class GracefulArbiter(Arbiter):  # type: ignore[misc]
    def handle_int(self) -> None:
        self.handle_term()  # gunicorn's SIGINT is a quick stop; ours lets sends finish


class Flusher:
    """Sends what is due in the spool every `interval` seconds, while some provider is not
    cooling down (`queue flush` from cron does the same)."""

    def __init__(
        self,
        app: App,
        interval: float,
        chores: Sequence[Callable[[], object]] = (),
        listeners: Sequence[Listener] = (),
    ) -> None:
        self.app = app
        self.interval = interval
        self.chores = list(chores)  # more housekeeping at the same pace (expired keys)
        self.listeners = list(listeners)  # told of its attempts too (the metrics)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mailrelay-flusher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float) -> None:
        self.stopping.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            for chore in (self.flush_once, *self.chores):
                try:
                    chore()
                except Exception as exc:  # a bad spool file or state must not end the thread
                    from mailrelay.logline import escape_controls
                    from mailrelay.secrets import scrub

                    reason = escape_controls(str(exc))
                    sys.stderr.write(scrub(f"mailrelay: housekeeping failed: {reason}\n"))

    def flush_once(self) -> FlushReport | None:
        """One flush (mailrelay.flushing, as `queue flush` runs it), logged in one line; None
        when there was nothing to do or every provider cools down."""
        from mailrelay.flushing import flush_spool

        app = self.app
        if not app.spool().pending():
            return None
        engine = app.engine()
        engine.listeners.extend(self.listeners)
        state = engine.store.load()
        if all(engine.cooling_until(state, p) is not None for p in engine.providers):
            return None  # nobody to send through: the entries keep their tries and backoff
        report = flush_spool(app, engine=engine)
        sent, queued, failed = report.count("sent"), report.count("queued"), report.count("failed")
        held = f", {report.count('held')} still held" if report.count("held") else ""
        if sent or queued or failed or held:
            sys.stderr.write(
                f"mailrelay: queue flush: {sent} sent, {queued} still queued{held}, "
                f"{failed} moved to failed/\n"
            )
        return report


class ServeApplication(BaseApplication):  # type: ignore[misc]
    def __init__(
        self,
        factory: Any,
        options: dict[str, Any],
        flush_interval: float,
        client_timeouts: tuple[float, float] = (DEFAULT_HEADER_TIMEOUT, DEFAULT_BODY_TIMEOUT),
    ) -> None:
        self.factory = factory
        self.options = options
        self.flush_interval = flush_interval
        self.client_timeouts = client_timeouts  # headers, body: read by each GracefulWorker
        self.flushers: dict[int, Flusher] = {}
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if self.flush_interval > 0:
            self.cfg.set("post_worker_init", self._start_flusher)
        self.cfg.set("worker_exit", self._worker_exit)

    def _start_flusher(self, worker: Any) -> None:
        service = worker.wsgi.extensions["mailrelay"]
        chores = [service.keys.sweep] if hasattr(service.keys, "sweep") else []
        flusher = Flusher(service.app, self.flush_interval, chores, [service.metrics])
        self.flushers[worker.pid] = flusher
        flusher.start()

    def _worker_exit(self, _arbiter: Any, worker: Any) -> None:
        """A worker stops: its flusher first, then its state counters to the file."""
        flusher = self.flushers.pop(worker.pid, None)
        if flusher is not None:
            flusher.stop(float(self.options.get("graceful_timeout", 30)))
        # the state counters the worker holds in memory (none if it never loaded the app)
        service = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("mailrelay")
        if service is not None:
            service.close()

    def load(self) -> Flask:
        app: Flask = self.factory()  # in each worker, after the fork
        return app

    def run(self) -> None:
        from gunicorn.errors import HaltServer

        try:
            with metrics_folder():
                GracefulArbiter(self).run()
        except HaltServer as exc:  # a worker could not start: its error is in the log above
            sys.stderr.write(f"mailrelay: error: {exc.reason}\n")
            sys.exit(ExitCode.SOFTWARE)
        except RuntimeError as exc:
            sys.stderr.write(f"mailrelay: error: {exc}\n")
            sys.exit(1)


@contextlib.contextmanager
def metrics_folder() -> Iterator[str]:
    """A new private folder (mode 0700, a random name: never shared, never guessed) for the
    workers' metrics files, named in PROMETHEUS_MULTIPROC_DIR for the workers to inherit; it
    replaces any such folder inherited (a re-exec, or the user's own). Removed on the way out
    of the arbiter, which returns or exits only once every worker has stopped (or was
    killed after graceful_timeout), so no request still running writes after it is gone."""
    from mailrelay.serve.metrics import MULTIPROC_ENV

    sweep_metrics_folders()
    folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX)
    _write_owner(folder)
    os.environ[MULTIPROC_ENV] = folder
    master = os.getpid()
    try:
        yield folder
    finally:
        # A worker is forked inside this block and leaves by SystemExit through the same
        # frames: only the master, after its arbiter is done, may remove the folder (a
        # worker that stopped first would pull it from under one still answering).
        if os.getpid() == master:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(folder, ignore_errors=True)


def _write_owner(folder: str) -> None:
    from mailrelay.serve.liveness import owner

    fd = os.open(
        os.path.join(folder, OWNER_FILE),
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
        0o600,
    )
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(owner(), f)


def sweep_metrics_folders() -> int:
    """Remove the metrics folders of masters that are gone (SIGKILL, the OOM killer, a power
    cut leave theirs behind): this user's own folders whose owner file names a process
    that no longer runs. A folder without an owner file (still being made) is left alone, as
    is one whose owner may be alive. Returns how many were removed."""
    from mailrelay.serve.liveness import owner_alive

    removed = 0
    try:
        entries = list(os.scandir(tempfile.gettempdir()))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(FOLDER_PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            fd = os.open(os.path.join(entry.path, OWNER_FILE), os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, encoding="utf-8") as f:
                who = json.load(f)
        except (OSError, ValueError):
            continue
        if not owner_alive(who):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def gunicorn_options(bind: str, workers: int, threads: int, grace: float) -> dict[str, Any]:
    return {
        "bind": [bind],
        "workers": workers,
        "threads": threads,
        "worker_class": GracefulWorker,
        "graceful_timeout": int(grace),
        "timeout": int(max(30.0, grace)),
        "keepalive": 5,
        "accesslog": None,  # the app logs one line per request itself, on stderr
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "mailrelay-serve",
        "preload_app": False,
    }
