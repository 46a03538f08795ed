"""A state store that folds many updates into a few locked writes (for `send --batch`).

Each message a batch sends changes the state (counters, last provider, cooldowns). Writing
the TOML file under its lock for each one would cost an fsync per message; `BufferedStore`
applies every change to an in-memory copy at once, so the engine's next plan sees it, and
hands the pending changes to the inner store as ONE update every `max_pending` changes or
`max_delay` seconds, and at `flush()`/`close()`. The inner store applies them in order to
its freshly locked state, so the counters of other processes writing meanwhile still add up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

from mailrelay.state.protocol import Changes, State, StateStore

Change = Callable[[State], None]


class BufferedStore:
    """A StateStore in front of another one, writing to it in batches. Thread-safe."""

    def __init__(
        self,
        inner: StateStore,
        *,
        max_pending: int = 200,
        max_delay: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.inner = inner
        self.location = inner.location
        self.shared: bool = getattr(inner, "shared", False)  # other hosts read the inner store
        self.max_pending = max_pending
        self.max_delay = max_delay
        self.clock = clock
        self.writes = 0  # updates handed to the inner store (for tests and -v)
        self._lock = threading.Lock()  # guards _state and _pending
        self._flush_lock = threading.Lock()  # one fold at a time, in order
        self._state: State | None = None
        self._pending: list[Change] = []
        self._oldest: float | None = None  # clock() when the oldest pending change came
        self._retry_at = 0.0  # after a failed write, automatic tries wait until then

    def __repr__(self) -> str:
        return f"BufferedStore({self.inner!r})"

    # --- the StateStore protocol ---------------------------------------------------------

    def load(self) -> State:
        """The state as this process knows it: the inner state plus every change since."""
        with self._lock:
            return self._current().copy()

    def update(self, change: Change) -> State:
        """Apply `change` in memory now; write it with others later. Raises StateError only
        when a due write fails (the changes stay pending for the next try)."""
        with self._lock:
            state = self._current()
            change(state)
            self._pending.append(change)
            if self._oldest is None:
                self._oldest = self.clock()
            due = self._due()
            view = state.copy()
        if due and self._flush_lock.acquire(blocking=False):
            # a worker that finds a fold under way goes on: that fold or the next takes its change
            try:
                with self._lock:
                    due = self._due()  # another thread may have written them meanwhile
                if due:
                    self._fold()
            finally:
                self._flush_lock.release()
        return view

    # --- writing -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> None:
        """Fold every pending change into the inner store in one locked update."""
        with self._flush_lock:
            self._fold()

    def _due(self) -> bool:
        """Whether the pending changes should be written now (lock held)."""
        if not self._pending or self.clock() < self._retry_at:
            return False
        return (
            len(self._pending) >= self.max_pending
            or self._oldest is None
            or self.clock() - self._oldest >= self.max_delay
        )

    def _fold(self) -> None:
        """Write the pending changes as one update (flush lock held)."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._oldest = None
        if not batch:
            return

        try:  # as data, so that a store which cannot run closures (Redis) can apply it
            written = self.inner.update(Changes(batch))
        except BaseException:
            with self._lock:  # nothing is lost: try these again at the next flush
                self._pending[:0] = batch
                if self._oldest is None:
                    self._oldest = self.clock()
                self._retry_at = self.clock() + self.max_delay  # not once per message
            raise
        self.writes += 1
        with self._lock:
            # what is on disk now (other processes included), plus what is still pending
            fresh = written.copy()
            for change in self._pending:
                change(fresh)
            self._state = fresh

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> BufferedStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _current(self) -> State:
        """The in-memory state, read from the inner store the first time (lock held)."""
        if self._state is None:
            self._state = self.inner.load()
        return self._state
