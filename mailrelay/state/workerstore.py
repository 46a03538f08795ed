"""The state as one `serve` worker keeps it: counters written behind, cooldowns at once.

A worker answers many requests a second, and writing the TOML file under its lock with an
fsync for each one makes every thread of every worker queue on one lock. Most of what a send
changes is plain counting (attempts by outcome, messages by result, last_success), which no
other worker needs to see at once; what another worker's plan depends on (a cooldown that
starts or ends, consecutive failures, the last provider, the last result that alerts compare)
must be on disk before the answer goes out. So `WorkerStore`:

- writes a change that moves any of those through to the file at once, together with the
  counters still pending (one locked update, in order);
- keeps a change that only counts in memory and folds the pending ones into the file every
  `flush_interval` seconds (a background thread), at `flush()` and at `close()` (serve calls
  it when a worker exits, SIGTERM included). A worker killed with SIGKILL loses at most that
  interval's counters, never a message or a cooldown;
- before each read, compares the file's inode, size and mtime with the copy it holds (one
  `stat`) and reads it again when another process has written it.

A counted change is folded as counting only (add, count, stamp forward, texts when newest),
so replaying it later never undoes what another worker wrote meanwhile.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from mailrelay.state.protocol import Changes, State, StateDelta
from mailrelay.state.tomlstore import TomlStateStore

Change = Callable[[State], None]
Signature = tuple[int, int, int]  # inode, size, mtime_ns of the state file


class _Counted:
    """The counting part of a delta that changed nothing another worker plans with."""

    def __init__(self, delta: StateDelta) -> None:
        self.delta = delta

    def __call__(self, state: State) -> None:
        delta = self.delta
        if delta.message is not None:
            state.count_message(delta.message)
        for change in delta.changes:
            change.apply_counts(state, delta.now)


def _shared(delta: StateDelta, state: State) -> bool:
    """Whether `delta` changes what another worker's plan or alerts read from `state`."""
    if delta.last_provider is not None and delta.last_provider != state.last_provider:
        return True
    if delta.message not in (None, "rejected") and delta.message != state.last_result:
        return True
    for change in delta.changes:
        if change.cooldowns or change.add.get("consecutive_failures"):
            return True
        entry = state.providers.get(change.provider)
        if entry is None:
            continue
        for key in change.clear:
            if key != "consecutive_failures" and key != "cooldown_until":
                return True  # not what a send clears: write it as it is
            if getattr(entry, key):
                return True  # a cooldown ends (or the failure count does)
    return False


class WorkerStore:
    """A StateStore in front of a TomlStateStore for one process's threads (see above)."""

    def __init__(
        self,
        inner: TomlStateStore,
        *,
        flush_interval: float = 1.0,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.inner = inner
        self.warn = warn or (lambda _message: None)
        self.location = inner.location
        self.shared: bool = getattr(inner, "shared", False)
        self.flush_interval = flush_interval
        self.writes = 0  # updates handed to the file (for tests)
        self._lock = threading.Lock()  # guards everything below
        self._write_lock = threading.Lock()  # one write to the file at a time, in order
        self._state: State | None = None  # the file as last read or written
        self._signature: Signature | None = None  # of the file _state was read from
        self._pending: list[Change] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"WorkerStore({self.inner!r})"

    # --- the StateStore protocol ---------------------------------------------------------

    def load(self) -> State:
        with self._lock:
            return self._view().copy()

    def update(self, change: Change) -> State:
        with self._lock:
            view = self._view()
            if isinstance(change, StateDelta) and not _shared(change, view):
                change(view)  # the whole delta on this worker's view (its observer sees it)
                self._pending.append(_Counted(change))
                self._start_thread()
                return view.copy()
        return self._write(change)

    # --- writing -------------------------------------------------------------------------

    def flush(self) -> None:
        """Fold the pending counters into the file now (nothing to do: no write)."""
        self._write(None)

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.flush_interval + 5)
        self.flush()

    def _write(self, change: Change | None) -> State:
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if change is not None:
                batch.append(change)
            if not batch:
                return self.load()
            try:
                written = self.inner.update(Changes(batch))
            except BaseException:
                with self._lock:  # nothing is lost: the counters wait for the next write
                    self._pending[:0] = [c for c in batch if c is not change]
                raise
            self.writes += 1
            with self._lock:
                fresh = written.copy()
                for pending in self._pending:  # counted meanwhile by other threads
                    pending(fresh)
                self._state = fresh
                self._signature = None  # read again next time: another writer may follow
                return fresh.copy()

    def _start_thread(self) -> None:
        if self._thread is None and not self._stopping.is_set():
            self._thread = threading.Thread(
                target=self._run, name="mailrelay-state-flush", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.flush_interval):
            try:
                self.flush()
            except Exception as exc:  # a busy or broken file: the counters wait, mail goes on
                self.warn(f"{exc}; counters kept for the next write")

    # --- reading -------------------------------------------------------------------------

    def _view(self) -> State:
        """The file's state (read again when it changed) plus the pending counters (lock held)."""
        signature = self._stat()
        if self._state is None or signature is None or signature != self._signature:
            state = self.inner.load()
            for pending in self._pending:
                pending(state)
            self._state, self._signature = state, signature
        return self._state

    def _stat(self) -> Signature | None:
        try:
            st = os.stat(self.inner.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)
