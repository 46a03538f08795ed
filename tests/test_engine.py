"""The failover engine against scripted providers and a real state file.

The scripted provider implements the Provider contract directly (it stands in for an adapter,
not for requests or smtplib); transport behaviour is tested per adapter against real servers.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from mailrelay.engine import Engine
from mailrelay.errors import ConfigError, ExitCode
from mailrelay.message import build_message
from mailrelay.policy import Policy as JitteredPolicy
from mailrelay.providers.base import (
    Capability,
    Health,
    Outcome,
    Provider,
    ProviderError,
    Receipt,
)
from mailrelay.providers.options import ProviderConfig
from mailrelay.secrets import remember
from mailrelay.state import ProviderState, TomlStateStore

T0 = datetime(2026, 11, 22, 9, 0, 0, tzinfo=timezone.utc)


def Policy(**options: Any) -> JitteredPolicy:
    """The policy without jitter, so every cooldown here is exactly its step."""
    return JitteredPolicy(**{"jitter": 0.0, **options})


class Clock:
    """Monotonic and wall clocks that only move when told to."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = T0

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


class Scripted(Provider):
    """Answers each send with the next scripted outcome (the last one repeats)."""

    type = "scripted"
    capabilities = frozenset(Capability)  # carries anything: the engine is under test

    def __init__(
        self,
        name: str,
        script: Iterable[Any],
        *,
        clock: Clock | None = None,
        cost: float = 0.0,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(name, timeout=timeout)
        self.script = list(script)
        self.calls = 0
        self.timeouts: list[float] = []
        self.clock = clock
        self.cost = cost

    @classmethod
    def from_config(cls, cfg: ProviderConfig) -> Provider:  # pragma: no cover - not configured
        raise NotImplementedError

    def _deliver(self, message: Any, *, timeout: float) -> Receipt:
        self.calls += 1
        self.timeouts.append(timeout)
        if self.clock is not None:
            self.clock.advance(self.cost)
        step = self.script[min(self.calls, len(self.script)) - 1]
        if isinstance(step, BaseException):
            raise step
        if step is Outcome.ACCEPTED:
            return Receipt(self.name, f"{self.name}-id-{self.calls}", "queued")
        retry_after = None
        if isinstance(step, tuple):
            step, retry_after = step
        raise ProviderError(
            step, f"{self.name} said no ({step})", status=503, retry_after=retry_after
        )

    def check(self, *, timeout: float) -> Health:
        return Health(True, "fine")


OK, TR, PV, RJ, PM, AM = (
    Outcome.ACCEPTED,
    Outcome.TRANSIENT,
    Outcome.PROVIDER,
    Outcome.REJECTED,
    Outcome.PERMANENT,
    Outcome.AMBIGUOUS,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> TomlStateStore:
    return TomlStateStore(tmp_path / "state" / "state.toml")


@pytest.fixture
def message() -> Any:
    return build_message(sender="ops@example.com", to=["a@example.com"], subject="s", text="b")


def make(providers: list[Provider], store: TomlStateStore, clock: Clock, **policy: Any) -> Engine:
    return Engine(providers, store, Policy(**policy), clock=clock.monotonic, now=clock.now)


def test_sticky_starts_where_the_last_message_was_accepted(store, clock, message) -> None:
    p1, p2 = Scripted("p1", [TR]), Scripted("p2", [OK])
    engine = make([p1, p2], store, clock)
    first = engine.send(message)
    assert first.delivered and first.winner and first.winner.provider == "p2"
    assert [a.provider for a in first.attempts] == ["p1", "p2"]
    assert store.load().last_provider == "p2"
    # long after p1's cooldown, sticky still starts at p2 and p1 is not touched
    clock.advance(10 * 3600)
    second = engine.send(message)
    assert [a.provider for a in second.attempts] == ["p2"]
    assert p1.calls == 1


def test_sticky_is_kept_by_name_when_the_config_is_reordered(store, clock, message) -> None:
    p1, p2 = Scripted("p1", [TR]), Scripted("p2", [OK])
    make([p1, p2], store, clock).send(message)
    reordered = make([Scripted("p3", [OK]), p2, p1], store, clock)
    # p2 first; then cyclically on from p2, with the cooling p1 at the back
    assert [p.name for p in reordered.plan(store.load())] == ["p2", "p3", "p1"]


def test_priority_returns_to_the_first_provider_after_its_cooldown(store, clock, message) -> None:
    p1, p2 = Scripted("p1", [TR, OK]), Scripted("p2", [OK])
    engine = make([p1, p2], store, clock, order="priority", cooldown=60)
    engine.send(message)
    cooling = store.load().providers["p1"].cooldown_until
    assert cooling == T0 + timedelta(seconds=60)
    # inside the cooldown p1 is moved to the back, not skipped
    assert [p.name for p in engine.plan(store.load())] == ["p2", "p1"]
    clock.advance(61)
    assert [p.name for p in engine.plan(store.load())] == ["p1", "p2"]
    result = engine.send(message)
    assert result.winner and result.winner.provider == "p1"
    assert store.load().providers["p1"].cooldown_until is None


def test_round_robin_spreads(store, clock, message) -> None:
    ps = [Scripted(f"p{i}", [OK]) for i in range(1, 4)]
    engine = make(ps, store, clock, order="round-robin")
    winners = []
    for _ in range(6):
        result = engine.send(message)
        assert result.winner is not None
        winners.append(result.winner.provider)
    assert winners == ["p1", "p2", "p3", "p1", "p2", "p3"]


def test_cooldown_never_skips_a_provider(store, clock, message) -> None:
    p1, p2 = Scripted("p1", [TR, TR, OK]), Scripted("p2", [TR])
    engine = make([p1, p2], store, clock)
    assert engine.send(message).exit_code == ExitCode.TEMPFAIL
    # both cooling now: they are still tried, soonest to recover first
    result = engine.send(message)
    assert [a.provider for a in result.attempts] == ["p1", "p2"]
    result = engine.send(message)
    assert result.delivered


def test_permanent_stops_at_once_and_changes_no_cooldown(store, clock, message) -> None:
    p1, p2 = Scripted("p1", [PM]), Scripted("p2", [OK])
    engine = make([p1, p2], store, clock)
    before = store.load()
    result = engine.send(message)
    assert result.exit_code == ExitCode.DATAERR
    assert p2.calls == 0
    after = store.load()
    assert before.providers.get("p1") is None
    # the attempt is counted by its class, and nothing else about p1's health changes
    assert after.providers["p1"].outcomes == {"permanent": 1}
    assert list(after.providers["p1"].minutes.values()) == [1]  # and in its minute
    after.providers["p1"].outcomes.clear()
    after.providers["p1"].minutes.clear()
    assert after.providers["p1"] == ProviderState()
    assert after.last_provider is None


def test_rejected_fails_over_without_cooldown(store, clock, message) -> None:
    p1, p2 = Scripted("p1", [RJ]), Scripted("p2", [OK])
    result = make([p1, p2], store, clock).send(message)
    assert result.delivered
    entry = store.load().providers["p1"]
    assert entry.cooldown_until is None and entry.failed == 1
    assert entry.consecutive_failures == 0
    assert entry.last_error == "rejected: p1 said no (rejected)"


def test_provider_failure_rests_longer_and_cooldowns_double(store, clock, message) -> None:
    p1 = Scripted("p1", [PV])
    engine = make([p1], store, clock, cooldown=60, provider_cooldown=600, max_cooldown=1500)
    waits = []
    for _ in range(4):
        engine.send(message)
        entry = store.load().providers["p1"]
        assert entry.cooldown_until is not None
        waits.append((entry.cooldown_until - clock.now()).total_seconds())
    assert waits == [600, 1200, 1500, 1500]
    assert store.load().providers["p1"].consecutive_failures == 4


def test_retry_after_is_honoured(store, clock, message) -> None:
    p1, p2 = Scripted("p1", [(TR, 300.0)]), Scripted("p2", [OK])
    result = make([p1, p2], store, clock, cooldown=60).send(message)
    assert result.attempts[0].retry_after == 300.0
    assert store.load().providers["p1"].cooldown_until == T0 + timedelta(seconds=300)


def test_ambiguous_fails_over_by_default(store, clock, message) -> None:
    p1, p2 = Scripted("p1", [AM]), Scripted("p2", [OK])
    result = make([p1, p2], store, clock).send(message)
    assert result.delivered and result.attempts[0].outcome is AM


def test_ambiguous_can_stop(store, clock, message) -> None:
    p1, p2 = Scripted("p1", [AM]), Scripted("p2", [OK])
    result = make([p1, p2], store, clock, on_ambiguous="stop").send(message)
    assert not result.delivered and p2.calls == 0
    assert result.exit_code == ExitCode.TEMPFAIL


def test_deadline_bounds_the_whole_send(store, clock, message) -> None:
    p1 = Scripted("p1", [TR], clock=clock, cost=4.0, timeout=30)
    p2 = Scripted("p2", [TR], clock=clock, cost=4.0, timeout=30)
    p3 = Scripted("p3", [OK], clock=clock)
    result = make([p1, p2, p3], store, clock, timeout=6).send(message)
    assert p1.timeouts == [6.0]  # each attempt gets what is left, at most its own timeout
    assert p2.timeouts == [2.0]
    assert p3.calls == 0
    assert result.attempts[-1].tried is False and "deadline" in result.attempts[-1].detail
    assert result.exit_code == ExitCode.TEMPFAIL
    # a provider that was never tried gets no failure recorded
    assert "p3" not in store.load().providers


@pytest.mark.parametrize(
    ("outcomes", "code"),
    [
        ([TR, PV], ExitCode.TEMPFAIL),
        ([PV, RJ], ExitCode.UNAVAILABLE),
        ([RJ, AM], ExitCode.TEMPFAIL),
    ],
)
def test_exit_code_when_all_fail(store, clock, message, outcomes, code) -> None:
    ps: list[Provider] = [Scripted(f"p{i}", [o]) for i, o in enumerate(outcomes)]
    result = make(ps, store, clock).send(message)
    assert result.exit_code == code
    assert len(result.attempts) == len(outcomes)


def test_config_error_at_send_fails_over(store, clock, message) -> None:
    p1 = Scripted("p1", [ConfigError("environment variable X is not set", provider="p1")])
    p2 = Scripted("p2", [OK])
    result = make([p1, p2], store, clock).send(message)
    assert result.delivered
    assert result.attempts[0].outcome is PV and "X is not set" in result.attempts[0].detail


def test_all_misconfigured_exits_as_config_error(store, clock, message) -> None:
    p1 = Scripted("p1", [ConfigError("environment variable X is not set")])
    assert make([p1], store, clock).send(message).exit_code == ExitCode.CONFIG


def test_an_adapter_bug_costs_no_mail(store, clock, message) -> None:
    p1, p2 = Scripted("p1", [RuntimeError("boom")]), Scripted("p2", [OK])
    result = make([p1, p2], store, clock).send(message)
    assert result.delivered and "RuntimeError: boom" in result.attempts[0].detail
    engine = Engine([Scripted("p1", [RuntimeError("boom")])], store, raise_bugs=True)
    with pytest.raises(RuntimeError):
        engine.send(message)


def test_secrets_are_scrubbed_from_attempts(store, clock, message) -> None:
    remember("hunter2-secret")
    p1 = Scripted("p1", [ProviderError(TR, "auth hunter2-secret refused")])
    result = make([p1, Scripted("p2", [OK])], store, clock).send(message)
    assert "hunter2-secret" not in result.attempts[0].detail
    assert "hunter2-secret" not in (store.path.read_text())


def test_state_write_failure_keeps_the_delivery(tmp_path: Path, clock, message) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = TomlStateStore(blocker / "state.toml", lock_timeout=0.2)
    warnings: list[str] = []
    engine = Engine([Scripted("p1", [OK])], store, warn=warnings.append)
    result = engine.send(message)
    assert result.delivered and result.exit_code == ExitCode.OK
    assert warnings and "not updated" in warnings[0]


def test_counters_add_up_in_the_state(store, clock, message) -> None:
    p1, p2 = Scripted("p1", [TR, TR, OK]), Scripted("p2", [OK])
    engine = make([p1, p2], store, clock, order="priority", cooldown=1)
    for _ in range(3):
        engine.send(message)
        clock.advance(5)
    state = store.load()
    assert state.providers["p1"].failed == 2 and state.providers["p1"].sent == 1
    assert state.providers["p2"].sent == 2
    assert state.last_provider == "p1"
    assert state.providers["p1"].outcomes == {"transient": 2, "accepted": 1}
    assert state.providers["p2"].outcomes == {"accepted": 2}


def test_cooldown_saturates_at_max_cooldown_whatever_the_failure_count() -> None:
    policy = Policy(cooldown=60, provider_cooldown=600, max_cooldown=3600)
    for failures in (1, 10, 1023, 1024, 1100, 10**6):
        wait = policy.cooldown_for(TR, failures, None)
        assert wait is not None and 0 < wait <= 3600
    assert policy.cooldown_for(TR, 10**6, None) == 3600
    assert Policy(max_cooldown=1e300).cooldown_for(PV, 5000, None) == 3650 * 86400.0


def test_a_provider_failing_past_1024_times_still_fails_over(store, clock, message) -> None:
    def change(state: Any) -> None:
        state.provider("p1").consecutive_failures = 1500

    store.update(change)
    engine = make([Scripted("p1", [TR]), Scripted("p2", [OK])], store, clock)
    result = engine.send(message)
    assert result.delivered and result.exit_code == ExitCode.OK
    assert store.load().providers["p1"].consecutive_failures == 1501


def test_a_cooldown_in_the_state_beyond_max_cooldown_is_clamped_with_a_warning(
    store, clock, message
) -> None:
    def change(state: Any) -> None:
        state.provider("p1").cooldown_until = datetime(9999, 1, 1, tzinfo=timezone.utc)

    store.update(change)
    warnings: list[str] = []
    engine = Engine(
        [Scripted("p1", [OK])],
        store,
        Policy(max_cooldown=3600),
        clock=clock.monotonic,
        now=clock.now,
        warn=warnings.append,
    )
    assert engine.cooling_until(store.load(), engine.providers[0]) == clock.now() + timedelta(
        seconds=3600
    )
    assert len(warnings) == 1 and "max_cooldown" in warnings[0]


class BrokenStore(TomlStateStore):
    """A state store whose writes fail with an arbitrary error after the provider answered."""

    def update(self, change: Any) -> Any:
        raise OverflowError("date value out of range")


def test_nothing_after_acceptance_turns_the_exit_into_a_failure(tmp_path, clock, message) -> None:
    engine = make([Scripted("p1", [OK])], BrokenStore(tmp_path / "s.toml"), clock)
    result = engine.send(message)
    assert result.delivered and result.exit_code == ExitCode.OK
    assert any("date value out of range" in w for w in result.warnings)


def test_a_capability_mismatch_moves_on_without_counting_against_the_provider(
    store, clock, message
) -> None:
    from mailrelay.providers.base import CapabilityError

    lacking = Scripted("api", [CapabilityError("api cannot carry metadata")])
    engine = make([lacking, Scripted("smtp", [OK])], store, clock)
    result = engine.send(message)
    assert result.delivered and result.attempts[0].outcome is RJ
    assert "api" not in store.load().providers  # no failed count, no last_error, no cooldown


def test_skip_cooling_passes_over_resting_providers_the_cli_does_not(
    store: TomlStateStore, clock: Clock, message: Any
) -> None:
    a, b = Scripted("a", [TR, OK], clock=clock), Scripted("b", [TR, OK], clock=clock)

    def engine(skip: bool) -> Engine:
        return Engine([a, b], store, Policy(cooldown=60, skip_cooling=skip),
                      clock=clock.monotonic, now=clock.now)  # fmt: skip

    service = engine(True)
    first = service.send(message)  # both fail: both rest 60 s
    assert first.exit_code == ExitCode.TEMPFAIL and (a.calls, b.calls) == (1, 1)
    clock.advance(10)
    fast = service.send(message)  # the failed send was the period's one request
    assert (a.calls, b.calls) == (1, 1)
    assert [x.tried for x in fast.attempts] == [False, False]
    assert fast.exit_code == ExitCode.TEMPFAIL
    assert all(x.retry_after == pytest.approx(50) for x in fast.attempts)
    assert service.first_recovery(store.load()) == pytest.approx(50)
    cli = engine(False).send(message)  # the command line tries the resting ones
    assert cli.delivered and a.calls == 2


def test_skip_cooling_lets_one_probe_through_per_cooldown_period(
    store: TomlStateStore, clock: Clock, message: Any
) -> None:
    a = Scripted("a", [TR, TR, OK], clock=clock)
    other = Engine([a], store, Policy(cooldown=60), clock=clock.monotonic, now=clock.now)
    other.send(message)  # another process put `a` to rest: this engine never probed it
    service = Engine([a], store, Policy(cooldown=60, skip_cooling=True),
                     clock=clock.monotonic, now=clock.now)  # fmt: skip
    probe = service.send(message)
    assert probe.attempts[0].tried and a.calls == 2  # the half-open probe (it fails again)
    assert not service.send(message).attempts[0].tried  # no second probe this period
    clock.advance(121)  # the doubled cooldown is over: tried as usual
    assert service.send(message).delivered and a.calls == 3


def test_resting_says_when_a_send_would_try_no_provider(
    store: TomlStateStore, clock: Clock, message: Any
) -> None:
    a, b = Scripted("a", [TR, TR, OK], clock=clock), Scripted("b", [TR, OK], clock=clock)
    service = Engine([a, b], store, Policy(cooldown=60, skip_cooling=True),
                     clock=clock.monotonic, now=clock.now)  # fmt: skip
    cli = Engine([a, b], store, Policy(cooldown=60), clock=clock.monotonic, now=clock.now)
    assert service.resting(store.load()) is None  # nobody rests: a send tries them
    service.send(message)  # both fail; each failure was its period's one probe
    clock.advance(10)
    assert service.resting(store.load()) == pytest.approx(50)
    assert cli.resting(store.load()) is None  # the command line tries resting providers
    # the rule is the send loop's: a send now tries nobody
    assert not any(x.tried for x in service.send(message).attempts)
    assert (a.calls, b.calls) == (1, 1)
    clock.advance(51)  # the cooldowns are over: a send would try again
    assert service.resting(store.load()) is None
    assert service.send(message).delivered


def test_resting_is_none_while_a_provider_s_probe_is_due(
    store: TomlStateStore, clock: Clock, message: Any
) -> None:
    a = Scripted("a", [TR, OK], clock=clock)
    other = Engine([a], store, Policy(cooldown=60), clock=clock.monotonic, now=clock.now)
    other.send(message)  # another process put `a` to rest: nobody here probed it yet
    service = Engine([a], store, Policy(cooldown=60, skip_cooling=True),
                     clock=clock.monotonic, now=clock.now)  # fmt: skip
    assert service.resting(store.load()) is None  # the next send is the probe
    assert service.send(message).delivered and a.calls == 2  # which finds it recovered
