"""The failover engine: which provider to try first, what each outcome means, what to remember.

The engine knows no provider by name. It walks the configured providers from a start point
chosen by the policy (policy.py), moves providers in cooldown to the back (never skips them),
waits for each provider's rate budget or passes it over for now (a Pacer, ratelimit/),
stops on acceptance or on a permanent message error, bounds the whole send by one deadline,
and records per-provider counters and cooldowns in the state store. What a send produced
(`Attempt`, `SendResult`) lives in result.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from mailrelay.clock import Clock, Now, utcnow
from mailrelay.errors import ConfigError, MailrelayError, StateError
from mailrelay.policy import COOLDOWN_CEILING, LocalProbeGate, Policy, ProbeGate
from mailrelay.providers.base import CapabilityError, Outcome, Provider, ProviderError
from mailrelay.ratelimit.spec import LIMITED_COUNTS
from mailrelay.result import Attempt, Disposition, Listener, SendResult
from mailrelay.secrets import scrub

if TYPE_CHECKING:
    from mailrelay.message import Message
    from mailrelay.ratelimit.pacer import Pacer
    from mailrelay.state import State, StateStore
    from mailrelay.state.transitions import Event

# what became of a message no provider took, decided before the state is written: "queued"
# (kept in the spool), "failed", or None (not counted: a queue flush's retry stays queued)
Keep = Callable[[SendResult], "Disposition | None"]  # None: not counted again
AlertSink = Callable[[Sequence["Event"]], None]


def _tell_attempt(listener: Listener, *, message: Message, attempt: Attempt) -> None:
    listener.attempt(message, attempt)


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
        pacer: Pacer | None = None,
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
        self.pacer = pacer  # rate limits: waits for a provider's budget, learns its answers

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
        latest = now + timedelta(seconds=min(self.policy.max_cooldown, COOLDOWN_CEILING))
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

    def resting(self, state: State) -> float | None:
        """With skip_cooling: the seconds until the first provider recovers when a send now
        would try none (every provider cooling, each one's probe of this period claimed);
        None when a send would try one. The send loop's own rule, asked before a message
        exists, so a caller can answer without building one."""
        if not self.policy.skip_cooling or not self.providers:
            return None
        ends = []
        for provider in self.providers:
            until = self.cooling_until(state, provider)
            if until is None or not self.probe_gate.taken(provider.name, until):
                return None
            ends.append(until)
        return max(0.0, (min(ends) - self.now()).total_seconds())

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
            if self.pacer is not None:  # its turn in the budget, or passed over for now
                held = self.pacer.turn(provider, message, remaining)
                if held is not None:
                    result.attempts.append(held)
                    continue
                remaining = max(deadline - self.clock(), 0.001)
            attempt = self.attempt(provider, message, min(provider.timeout, remaining))
            if self.pacer is not None:
                self.pacer.observe(provider, attempt)
            result.attempts.append(attempt)
            self._tell(result, partial(_tell_attempt, message=message, attempt=attempt))
            if attempt.outcome in (Outcome.ACCEPTED, Outcome.PERMANENT):
                break
            if attempt.outcome is Outcome.AMBIGUOUS and self.policy.on_ambiguous == "stop":
                break
        fate = result.fate
        if fate == "sent":
            result.disposition = "sent"
        elif fate == "refused":
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
        events = self.record(result)
        self._tell(result, lambda listener: listener.result(message, result))
        if events and self.alert is not None:
            try:
                self.alert(events)
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
                local=exc.local,
                limited=exc.limited,
                rate=exc.rate,
            )
        except ConfigError as exc:  # e.g. a secret's env var is unset: fail over, show it
            return Attempt(
                provider.name,
                provider.type,
                Outcome.PROVIDER,
                scrub(str(exc)),
                self.clock() - started,
                config_error=True,
                local=True,
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
            refused=receipt.refused,
            rate=receipt.rate,
        )

    def record(self, result: SendResult) -> list[Event]:
        """Fold the attempts into the state: counters add up across concurrent processes.
        Returns the alert transitions the update made (none when nobody is told of them)."""
        tried = [a for a in result.attempts if a.tried]
        counted = result.disposition
        if not tried and counted is None:
            return []
        from mailrelay.state import ProviderChange, StateDelta

        index = {p.name: i for i, p in enumerate(self.providers)}
        delta = StateDelta(self.now(), message=counted)
        transitions = None
        if self.alert is not None:  # nobody to tell: spare the import and the comparison
            from mailrelay.state.transitions import Transitions

            transitions = delta.observer = Transitions(tried, counted, delta.now)
        shared = getattr(self.store, "shared", False)
        for a in tried:
            if a.capability:
                continue  # needs what this provider lacks: not the provider's failure
            if a.local and shared:
                continue  # this host's problem: it must not rest the provider for the fleet
            change = ProviderChange(a.provider, count=a.outcome.value)
            delta.changes.append(change)
            if a.outcome is Outcome.PERMANENT:
                continue  # the message was bad, not the provider
            if a.limited is not None:  # a limit, not an outage: no failure, cooldown or alert
                # (the budget holds the provider back: ratelimit/); counted for the metrics
                delta.changes.append(ProviderChange(a.provider, count=LIMITED_COUNTS[a.limited]))
                change.texts["last_error"] = f"{a.outcome.value}: {a.detail}"
                continue
            change.texts["last_outcome"] = a.outcome.value
            if a.outcome is Outcome.ACCEPTED:
                change.add["sent"] = 1
                change.stamp = ("last_success",)
                change.clear = ("consecutive_failures", "cooldown_until")
                if not any(x.limited for x in result.attempts):  # a limit is no reason to
                    delta.last_provider = a.provider  # stick elsewhere: sticky stays put
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
        except Exception as exc:
            # the mail is already out (or not): never turn a state problem into a lost message
            if self.raise_bugs and not isinstance(exc, StateError):
                raise
            known = isinstance(exc, MailrelayError)
            note = f"{exc if known else f'{type(exc).__name__}: {exc}'}; provider state not updated"
            result.warnings.append(scrub(note))
            self.warn(scrub(note))
            return []
        if self.policy.skip_cooling:  # a failed try is its cooldown period's one request
            for a in tried:
                entry = state.providers.get(a.provider)
                if entry is not None and entry.cooldown_until is not None:
                    self.probe_gate.claim(a.provider, entry.cooldown_until)
        return list(transitions.events) if transitions is not None else []
