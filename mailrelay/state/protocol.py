"""What the state is and how a store is used: `State` and `ProviderState`, the changes the
engine makes to it as data (`StateDelta`, `ProviderChange`, `Changes`), and the `StateStore`
protocol every store (TOML file, Redis, the buffered store) follows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from mailrelay.datarecord import field, record

if TYPE_CHECKING:
    from mailrelay.result import Disposition


@record
class ProviderState:
    sent: int = 0
    failed: int = 0
    last_success: datetime | None = None  # timezone-aware UTC
    last_failure: datetime | None = None
    last_error: str | None = None  # e.g. "transient: HTTP 503 from api.postmarkapp.com"
    last_outcome: str | None = None  # an Outcome value, e.g. "transient"
    consecutive_failures: int = 0
    cooldown_until: datetime | None = None
    # attempts by outcome class ("accepted", "transient", ...): what metrics count
    outcomes: dict[str, int] = field(default_factory=dict)
    # the last hour's attempts by minute and outcome, "MINUTE:OUTCOME" (MINUTE: Unix time //
    # 60) -> count, for the status page's chart; minutes older than an hour are dropped
    minutes: dict[str, int] = field(default_factory=dict)

    def count_outcome(self, outcome: str, now: datetime | None = None) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if now is not None:
            minute = int(now.timestamp()) // 60
            key = f"{minute}:{outcome}"
            self.minutes[key] = self.minutes.get(key, 0) + 1
            self.minutes = recent_minutes(self.minutes, minute)


HOUR_MINUTES = 60


def recent_minutes(minutes: dict[str, int], minute: int) -> dict[str, int]:
    """The per-minute counts of the hour up to `minute` (a count older than that is dropped,
    so the table stays at most 60 minutes long)."""
    return {
        key: n for key, n in minutes.items() if int(key.partition(":")[0]) > minute - HOUR_MINUTES
    }


@record
class State:
    last_provider: str | None = None  # NAME of the provider that last accepted a message
    last_index: int | None = None  # its position then (informational)
    providers: dict[str, ProviderState] = field(default_factory=dict)
    # messages by final result ("sent", "queued", "failed", "rejected"): what metrics count
    messages: dict[str, int] = field(default_factory=dict)
    last_result: str | None = None  # the last such result other than "rejected" (alerts)

    def count_message(self, result: Disposition) -> None:
        self.messages[result] = self.messages.get(result, 0) + 1

    def copy(self) -> State:
        """A copy whose changes do not reach this one (the in-memory stores hand these out)."""
        # ProviderState holds ints, strings, immutable datetimes and two dicts of counters; a
        # record keeps its fields in __dict__, and copying that is a fifth of copy.copy's cost
        # (serve copies the state a few times per request)
        providers = {}
        for name, entry in self.providers.items():
            providers[name] = duplicate = object.__new__(ProviderState)
            duplicate.__dict__.update(entry.__dict__)
            duplicate.outcomes = dict(entry.outcomes)
            duplicate.minutes = dict(entry.minutes)
        return State(
            last_provider=self.last_provider,
            last_index=self.last_index,
            providers=providers,
            messages=dict(self.messages),
            last_result=self.last_result,
        )

    def provider(self, name: str) -> ProviderState:
        """The entry for `name`, created empty if there is none yet."""
        entry = self.providers.get(name)
        if entry is None:
            entry = self.providers[name] = ProviderState()
        return entry


# -- changes as data ----------------------------------------------------------------------
#
# A change to the state is a closure over a State for the file store, but a store on another
# machine (Redis) cannot run a closure: so the engine says what changes as a StateDelta, which
# every store can apply (the file store by calling it on its locked State, the Redis store in
# one server-side script), and the engine stays the one place that decides what changes.

_ZEROED = ("sent", "failed", "consecutive_failures")


@record
class ProviderChange:
    """What one attempt (or an operator's reset) changes in one provider's entry, applied in
    this order: counters added, an outcome counted, fields cleared, fields stamped with the
    time, texts set, then the cooldown."""

    provider: str
    add: dict[str, int] = field(default_factory=dict)  # e.g. {"sent": 1}
    count: str | None = None  # an outcome class to count in `outcomes`
    clear: tuple[str, ...] = ()  # counters to 0, times and texts to None
    stamp: tuple[str, ...] = ()  # times set to now, e.g. ("last_success",)
    texts: dict[str, str] = field(default_factory=dict)  # e.g. {"last_error": "..."}
    # seconds of cooldown after the Nth consecutive failure (the last one for any later N);
    # a list rather than a formula so that Policy.cooldown_for stays the only formula
    cooldowns: tuple[float, ...] = ()

    def apply(self, state: State, now: datetime) -> None:
        entry = state.provider(self.provider)
        self._add_counts(entry, now)
        for key in self.clear:
            setattr(entry, key, 0 if key in _ZEROED else None)
        for key in self.stamp:
            setattr(entry, key, now)
        for key, text in self.texts.items():
            setattr(entry, key, text)
        if self.cooldowns:
            step = min(max(entry.consecutive_failures, 1), len(self.cooldowns))
            entry.cooldown_until = now + timedelta(seconds=self.cooldowns[step - 1])

    def apply_counts(self, state: State, now: datetime) -> None:
        """The counting part only, safe to replay after other writers changed the entry
        (serve's WorkerStore folds it in later): counters added, the outcome counted,
        stamps moved forward only, texts set when this attempt is the newest seen; nothing
        cleared, no cooldown."""
        entry = state.provider(self.provider)
        newest = all(
            stamp is None or stamp <= now for stamp in (entry.last_success, entry.last_failure)
        )
        self._add_counts(entry, now)
        for key in self.stamp:
            current = getattr(entry, key)
            if current is None or current < now:
                setattr(entry, key, now)
        if newest:
            for key, text in self.texts.items():
                setattr(entry, key, text)

    def _add_counts(self, entry: ProviderState, now: datetime) -> None:
        for key, n in self.add.items():
            setattr(entry, key, getattr(entry, key) + n)
        if self.count is not None:
            entry.count_outcome(self.count, now)


@record
class StateDelta:
    """The changes of one send (or one operator command), at one moment. Callable, so any
    store that takes a closure takes a delta too."""

    now: datetime  # the file store's clock; the Redis store uses the server's instead
    changes: list[ProviderChange] = field(default_factory=list)
    last_provider: str | None = None  # set (with last_index) when a provider accepted
    last_index: int | None = None
    message: Disposition | None = None  # what to count for the message
    # sees the state before and after the change, inside the update (alerts.Transitions)
    observer: Observer | None = None

    def __call__(self, state: State) -> None:
        if self.observer is not None:
            self.observer.begin(state)  # afresh each run: a store may retry the change
        if self.message is not None:
            state.count_message(self.message)
            if self.message != "rejected":
                state.last_result = self.message
        for change in self.changes:
            change.apply(state, self.now)
        if self.last_provider is not None:
            state.last_provider = self.last_provider
            state.last_index = self.last_index
        if self.observer is not None:
            self.observer.detect(state)


class Observer(Protocol):
    """Told the state before a delta is applied and after, inside the same update."""

    def begin(self, before: State) -> None: ...

    def detect(self, after: State) -> object: ...


class Changes:
    """Several changes applied in order as one update (a batch's or a queue flush's fold)."""

    def __init__(self, changes: Sequence[Callable[[State], None]]) -> None:
        self.changes = list(changes)

    def __call__(self, state: State) -> None:
        for change in self.changes:
            change(state)

    def deltas(self) -> list[StateDelta] | None:
        """Every change as a StateDelta, in order; None if one of them is a plain closure."""
        out: list[StateDelta] = []
        for change in self.changes:
            if isinstance(change, StateDelta):
                out.append(change)
            elif isinstance(change, Changes) and (inner := change.deltas()) is not None:
                out.extend(inner)
            else:
                return None
        return out


def reset_delta(names: Sequence[str], now: datetime) -> StateDelta:
    """An operator's "it is fixed": no cooldown and no consecutive failures for these."""
    clear = ("consecutive_failures", "cooldown_until")
    return StateDelta(now, [ProviderChange(name, clear=clear) for name in names])


class StateStore(Protocol):
    """Where the state lives. The TOML file is the default; another store can plug in."""

    location: str  # for messages and `mailrelay providers`, e.g. the file's path

    def load(self) -> State:
        """The current state, read without writing; never raises for a bad store."""
        ...

    def update(self, change: Callable[[State], None]) -> State:
        """Apply `change` to the current state atomically and return the new state.

        `change` must see the current state of the store (not a cached copy) and what it
        leaves is what is stored: counters add up, and the engine finds alert transitions by
        comparing the state `change` was given with what it made of it (alerts.Transitions).
        A store may run `change` again on a fresher state (an optimistic retry); the run
        whose result was stored is the one that counts."""
        ...
