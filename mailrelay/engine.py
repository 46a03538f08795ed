"""The failover engine: which provider to try first, what each outcome means, what to remember.

The engine knows no provider by name. It walks the configured providers from a start point
chosen by the policy, moves providers in cooldown to the back (never skips them), stops on
acceptance or on a permanent message error, bounds the whole send by one deadline, and
records per-provider counters and cooldowns in the state store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from mailrelay.datarecord import field, record
from mailrelay.errors import ConfigError, ExitCode, MailrelayError, StateError
from mailrelay.providers.base import (
    CapabilityError,
    Health,
    Outcome,
    Provider,
    ProviderError,
)
from mailrelay.secrets import scrub

if TYPE_CHECKING:
    from mailrelay.alerts import Event
    from mailrelay.message import Message
    from mailrelay.state import State, StateStore

Clock = Callable[[], float]
_COOLDOWN_CEILING = 3650 * 86400.0  # whatever the policy says: datetime arithmetic stays in range
Now = Callable[[], datetime]
# what became of a message no provider took, decided before the state is written: "queued"
# (kept in the spool), "failed", or None (not counted: a queue flush's retry stays queued)
Keep = Callable[["SendResult"], "str | None"]
AlertSink = Callable[[Sequence["Event"]], None]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@record
class Policy:
    """How the engine walks providers and how long failing ones rest."""

    order: str = "sticky"  # sticky | priority | round-robin
    timeout: float = 60.0  # total deadline of one send, across all attempts
    on_ambiguous: str = "failover"  # failover | stop
    cooldown: float = 60.0  # first cooldown after a transient failure; doubles per failure
    provider_cooldown: float = 600.0  # first cooldown after an account/config failure
    max_cooldown: float = 6 * 3600.0
    # The service's rule (`mailrelay serve`): a provider in cooldown is passed over, except
    # for one request per provider per cooldown period (a half-open probe), so a service
    # under load never hammers resting providers. The CLI (False) tries every provider.
    skip_cooling: bool = False

    def cooldown_for(
        self, outcome: Outcome, consecutive: int, retry_after: float | None
    ) -> float | None:
        """Seconds a provider rests after this failure, or None for no cooldown."""
        if outcome in (Outcome.TRANSIENT, Outcome.AMBIGUOUS):
            base = self.cooldown
        elif outcome is Outcome.PROVIDER:
            base = self.provider_cooldown
        else:
            return None
        # 2**60 s is past any cap: saturate instead of overflowing float (at 2**1024)
        wait = base * float(2 ** min(max(consecutive - 1, 0), 60))
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.max_cooldown, _COOLDOWN_CEILING)

    def cooldown_steps(self, outcome: Outcome, retry_after: float | None) -> tuple[float, ...]:
        """cooldown_for after the 1st, 2nd, ... consecutive failure, up to max_cooldown
        (the last step holds for every later failure); empty for no cooldown. A store
        that counts failures elsewhere (Redis) picks the step by its own count."""
        steps: list[float] = []
        for consecutive in range(1, 65):
            wait = self.cooldown_for(outcome, consecutive, retry_after)
            if wait is None:
                return ()
            steps.append(wait)
            if wait >= self.max_cooldown:
                break
        while len(steps) > 1 and steps[-1] == steps[-2]:
            steps.pop()  # the last step repeats anyway
        return tuple(steps)


@record
class Attempt:
    """One provider tried once (or passed over because the deadline had run out)."""

    provider: str
    type: str
    outcome: Outcome
    detail: str
    latency: float = 0.0
    status: int | None = None
    message_id: str | None = None
    retry_after: float | None = None
    config_error: bool = False
    tried: bool = True
    capability: bool = False  # refused for what the provider cannot carry: not its failure

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "type": self.type,
            "outcome": self.outcome.value,
            "status": self.status,
            "message_id": self.message_id,
            "detail": self.detail,
            "latency_ms": round(self.latency * 1000, 1),
            "retry_after": self.retry_after,
            "tried": self.tried,
        }


@record
class SendResult:
    message_id: str  # our RFC 5322 Message-ID
    attempts: list[Attempt] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # the message's result as counted in the state: sent | queued | failed | rejected
    disposition: str | None = None
    events: list[Event] = field(default_factory=list)  # alert transitions this send made

    @property
    def winner(self) -> Attempt | None:
        last = self.attempts[-1] if self.attempts else None
        return last if last is not None and last.outcome is Outcome.ACCEPTED else None

    @property
    def delivered(self) -> bool:
        return self.winner is not None

    @property
    def retryable(self) -> bool:
        """Not delivered, and not because a provider refused the message itself: the same
        message may succeed later (so it may be queued)."""
        return not self.delivered and self.exit_code != ExitCode.DATAERR

    @property
    def exit_code(self) -> ExitCode:
        if self.delivered:
            return ExitCode.OK
        outcomes = {a.outcome for a in self.attempts}
        if self.attempts and self.attempts[-1].outcome is Outcome.PERMANENT:
            return ExitCode.DATAERR
        if outcomes & {Outcome.TRANSIENT, Outcome.AMBIGUOUS}:
            return ExitCode.TEMPFAIL
        if self.attempts and all(a.config_error for a in self.attempts):
            return ExitCode.CONFIG
        return ExitCode.UNAVAILABLE

    def to_dict(self) -> dict[str, Any]:
        winner = self.winner
        return {
            "delivered": self.delivered,
            "message_id": self.message_id,
            "provider": winner.provider if winner else None,
            "provider_message_id": winner.message_id if winner else None,
            "exit_code": int(self.exit_code),
            "attempts": [a.to_dict() for a in self.attempts],
            "warnings": list(self.warnings),
        }


class Listener(Protocol):
    """Told of every attempt and every final result (the audit log is one)."""

    def attempt(self, message: Message, attempt: Attempt) -> None: ...

    def result(self, message: Message, result: SendResult) -> None: ...


def _tell_attempt(listener: Listener, *, message: Message, attempt: Attempt) -> None:
    listener.attempt(message, attempt)


class ProbeGate(Protocol):
    """Who lets the one probe of a cooldown period through (Policy.skip_cooling)."""

    def claim(self, provider: str, until: datetime) -> bool:
        """True for the first caller for this provider and cooldown end, False after."""
        ...


class LocalProbeGate:
    """Claims kept in this process (threads of one worker)."""

    def __init__(self) -> None:
        self._claimed: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def claim(self, provider: str, until: datetime) -> bool:
        with self._lock:
            if self._claimed.get(provider) == until:
                return False
            self._claimed[provider] = until
            return True


class Engine:
    def __init__(
        self,
        providers: Sequence[Provider],
        store: StateStore,
        policy: Policy | None = None,
        *,
        clock: Clock = time.monotonic,
        now: Now = utcnow,
        warn: Callable[[str], None] | None = None,
        raise_bugs: bool = False,
        listeners: Sequence[Listener] = (),
        alert: AlertSink | None = None,
        probe_gate: ProbeGate | None = None,
    ) -> None:
        self.providers = list(providers)
        self.alert = alert  # told of the transitions each state update made
        self.listeners = list(listeners)
        self.store = store
        self.policy = policy or Policy()
        self.clock = clock
        self.now = now
        self.warn = warn or (lambda _msg: None)
        self.raise_bugs = raise_bugs  # --debug: let an adapter's bug surface as a traceback
        self._clamped: set[str] = set()  # providers whose state cooldown was clamped
        self.probe_gate = probe_gate or LocalProbeGate()  # skip_cooling's bookkeeping

    # --- order ---------------------------------------------------------------------------

    def start_index(self, state: State) -> int:
        names = [p.name for p in self.providers]
        last = state.last_provider
        if self.policy.order == "priority" or last not in names:
            return 0
        index = names.index(last)
        if self.policy.order == "round-robin":
            return (index + 1) % len(names)
        return index  # sticky: where the last message was accepted

    def cooling_until(self, state: State, provider: Provider) -> datetime | None:
        entry = state.providers.get(provider.name)
        until = entry.cooldown_until if entry else None
        now = self.now()
        if until is None or until <= now:
            return None
        latest = now + timedelta(seconds=min(self.policy.max_cooldown, _COOLDOWN_CEILING))
        if until > latest:  # a state value no policy could have written: clamp it
            if provider.name not in self._clamped:
                self._clamped.add(provider.name)
                self.warn(
                    f"state: {provider.name}: cooldown_until {until.isoformat()} is past "
                    f"max_cooldown; treated as {latest.isoformat()}"
                )
            return latest
        return until

    def plan(self, state: State) -> list[Provider]:
        """The order this send would walk: ready providers cyclically from the start point,
        then those in cooldown, the soonest to recover first. Nobody is left out."""
        if not self.providers:
            return []
        start = self.start_index(state)
        cyclic = self.providers[start:] + self.providers[:start]
        ready = [p for p in cyclic if self.cooling_until(state, p) is None]
        cooling = [p for p in cyclic if self.cooling_until(state, p) is not None]
        cooling.sort(key=lambda p: self.cooling_until(state, p) or self.now())
        return ready + cooling

    def claim_probe(self, state: State, provider: Provider) -> bool:
        """With skip_cooling: may this send try `provider`? Yes when it is not cooling, or
        when no other send of this engine has probed it in its current cooldown period."""
        until = self.cooling_until(state, provider)
        return until is None or self.probe_gate.claim(provider.name, until)

    def first_recovery(self, state: State) -> float | None:
        """Seconds until the first provider's cooldown ends; None when none is cooling."""
        now = self.now()
        ends = [u for p in self.providers if (u := self.cooling_until(state, p)) is not None]
        return (min(ends) - now).total_seconds() if ends else None

    # --- sending -------------------------------------------------------------------------

    def send(self, message: Message, *, keep: Keep | None = None) -> SendResult:
        """Walk the providers; when none took the message (and it was not refused for its
        own fault), `keep` may queue it and says what became of it. The state is written
        once, after that, with the attempts and the message's result."""
        result = SendResult(message.message_id)
        state = self.store.load()
        deadline = self.clock() + self.policy.timeout
        for provider in self.plan(state):
            if self.policy.skip_cooling and not self.claim_probe(state, provider):
                until = self.cooling_until(state, provider)
                wait = (until - self.now()).total_seconds() if until is not None else 0.0
                result.attempts.append(
                    Attempt(
                        provider.name,
                        provider.type,
                        Outcome.TRANSIENT,
                        f"not tried: resting for {max(wait, 0):.0f} s more (cooldown)",
                        retry_after=max(wait, 0.0),
                        tried=False,
                    )
                )
                continue
            remaining = deadline - self.clock()
            if remaining <= 0:
                result.attempts.append(
                    Attempt(
                        provider.name,
                        provider.type,
                        Outcome.TRANSIENT,
                        f"not tried: the {self.policy.timeout:g} s deadline (--timeout) ran out",
                        tried=False,
                    )
                )
                continue
            attempt = self.attempt(provider, message, min(provider.timeout, remaining))
            result.attempts.append(attempt)
            self._tell(result, partial(_tell_attempt, message=message, attempt=attempt))
            if attempt.outcome in (Outcome.ACCEPTED, Outcome.PERMANENT):
                break
            if attempt.outcome is Outcome.AMBIGUOUS and self.policy.on_ambiguous == "stop":
                break
        if result.delivered:
            result.disposition = "sent"
        elif result.exit_code == ExitCode.DATAERR:
            result.disposition = "rejected"
        else:
            result.disposition = "failed"
            if keep is not None:
                try:
                    result.disposition = keep(result)
                except BaseException:
                    self._finish(message, result)  # the attempts are still worth keeping
                    raise
        self._finish(message, result)
        return result

    def _finish(self, message: Message, result: SendResult) -> None:
        self.record(result)
        self._tell(result, lambda listener: listener.result(message, result))
        if result.events and self.alert is not None:
            try:
                self.alert(result.events)
            except Exception as exc:  # an alert never costs the mail
                if self.raise_bugs:
                    raise
                note = scrub(f"alert: {type(exc).__name__}: {exc}")
                result.warnings.append(note)
                self.warn(note)

    def _tell(self, result: SendResult, call: Callable[[Listener], None]) -> None:
        for listener in self.listeners:
            try:
                call(listener)
            except Exception as exc:  # a broken log must not cost the mail
                if self.raise_bugs:
                    raise
                known = isinstance(exc, MailrelayError)  # says what and where itself
                note = scrub(str(exc) if known else f"{type(listener).__name__}: {exc}")
                if note not in result.warnings:
                    result.warnings.append(note)
                    self.warn(note)

    def attempt(self, provider: Provider, message: Message, timeout: float) -> Attempt:
        started = self.clock()
        try:
            receipt = provider.send(message, timeout=timeout)
        except ProviderError as exc:
            return Attempt(
                provider.name,
                provider.type,
                exc.outcome,
                scrub(exc.message),
                self.clock() - started,
                status=exc.status,
                retry_after=exc.retry_after,
                capability=isinstance(exc, CapabilityError),
            )
        except ConfigError as exc:  # e.g. a secret's env var is unset: fail over, show it
            return Attempt(
                provider.name,
                provider.type,
                Outcome.PROVIDER,
                scrub(str(exc)),
                self.clock() - started,
                config_error=True,
            )
        except Exception as exc:  # a bug in an adapter must not cost the mail
            if self.raise_bugs:
                raise
            return Attempt(
                provider.name,
                provider.type,
                Outcome.REJECTED,
                scrub(
                    f"internal error in the {provider.type} adapter: {type(exc).__name__}: {exc}"
                ),
                self.clock() - started,
            )
        return Attempt(
            provider.name,
            provider.type,
            Outcome.ACCEPTED,
            scrub(receipt.detail),
            self.clock() - started,
            message_id=receipt.message_id,
        )

    def record(self, result: SendResult) -> None:
        """Fold the attempts into the state: counters add up across concurrent processes."""
        tried = [a for a in result.attempts if a.tried]
        counted = result.disposition
        if not tried and counted is None:
            return
        from mailrelay.state import ProviderChange, StateDelta

        index = {p.name: i for i, p in enumerate(self.providers)}
        delta = StateDelta(self.now(), message=counted)
        transitions = None
        if self.alert is not None:  # nobody to tell: spare the import and the comparison
            from mailrelay.alerts import Transitions

            transitions = delta.observer = Transitions(tried, counted, delta.now)
        for a in tried:
            if a.capability:
                continue  # needs what this provider lacks: not the provider's failure
            change = ProviderChange(a.provider, count=a.outcome.value)
            delta.changes.append(change)
            if a.outcome is Outcome.PERMANENT:
                continue  # the message was bad, not the provider
            change.texts["last_outcome"] = a.outcome.value
            if a.outcome is Outcome.ACCEPTED:
                change.add["sent"] = 1
                change.stamp = ("last_success",)
                change.clear = ("consecutive_failures", "cooldown_until")
                delta.last_provider = a.provider
                delta.last_index = index.get(a.provider)
                continue
            change.add["failed"] = 1
            change.stamp = ("last_failure",)
            change.texts["last_error"] = f"{a.outcome.value}: {a.detail}"
            if a.outcome is not Outcome.REJECTED:
                change.add["consecutive_failures"] = 1
                change.cooldowns = self.policy.cooldown_steps(a.outcome, a.retry_after)

        try:
            state = self.store.update(delta)
            if transitions is not None:
                result.events = list(transitions.events)
        except Exception as exc:
            # the mail is already out (or not): never turn a state problem into a lost message
            if self.raise_bugs and not isinstance(exc, StateError):
                raise
            known = isinstance(exc, MailrelayError)
            note = f"{exc if known else f'{type(exc).__name__}: {exc}'}; provider state not updated"
            result.warnings.append(scrub(note))
            self.warn(scrub(note))
            return
        if self.policy.skip_cooling:  # a failed try is its cooldown period's one request
            for a in tried:
                entry = state.providers.get(a.provider)
                if entry is not None and entry.cooldown_until is not None:
                    self.probe_gate.claim(a.provider, entry.cooldown_until)


# --- probing (mailrelay status) ----------------------------------------------------------


@record
class Probe:
    provider: str
    type: str
    health: Health
    latency: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "type": self.type,
            "healthy": self.health.ok,
            "detail": self.health.detail,
            "outcome": self.health.outcome.value if self.health.outcome else None,
            "latency_ms": round(self.latency * 1000, 1),
        }


def probe(
    providers: Sequence[Provider], timeout: float, clock: Clock = time.monotonic
) -> list[Probe]:
    """Check every provider at once, without sending; results in the configured order."""

    def one(provider: Provider) -> Probe:
        started = clock()
        try:
            health = provider.check(timeout=timeout)
        except ProviderError as exc:
            health = Health(False, scrub(exc.message), exc.outcome)
        except ConfigError as exc:
            health = Health(False, scrub(str(exc)), Outcome.PROVIDER)
        except Exception as exc:  # a bug in a probe must not hide the other results
            health = Health(False, scrub(f"internal error: {type(exc).__name__}: {exc}"), None)
        return Probe(
            provider.name,
            provider.type,
            Health(health.ok, scrub(health.detail), health.outcome),
            clock() - started,
        )

    if not providers:
        return []
    from concurrent.futures import ThreadPoolExecutor  # only `status` probes at once

    with ThreadPoolExecutor(max_workers=min(16, len(providers))) as pool:
        return list(pool.map(one, providers))
