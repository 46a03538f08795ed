"""Rate limits: budgets configured and learned, shared by processes and hosts, a rate 429
that is no outage and a spent quota that rests the provider (issue 23).

Real parts: the installed `mailrelay` in subprocesses, a threaded loopback fake that
enforces N requests/s across all its clients (tests/ratefake.py), valkey-server for the
fleet. Counts are asserted, never timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from http.client import HTTPMessage
from pathlib import Path
from typing import Any

import pytest

from mailrelay.message import Address, Message
from mailrelay.providers import registry
from mailrelay.providers.options import ProviderSpec
from mailrelay.ratelimit import observe, parse_limit
from mailrelay.ratelimit.bucket import FileBudgets
from mailrelay.ratelimit.pacer import Pacer
from tests.ratefake import RateFake
from tests.redisserver import RedisServer, flush, server_binary
from tests.servehost import host_env
from tests.test_e2e import mailrelay, mailrelay_command

BINARY = server_binary()


class Host:
    """One machine: its own HOME and config, a fake-backed provider and an outbox fallback."""

    def __init__(self, root: Path, name: str, fake: RateFake, **keys: Any) -> None:
        self.home = root / name
        self.home.mkdir()
        self.outbox = self.home / "outbox"
        self.config = self.home / "config.toml"
        self.config.write_text(
            '[defaults]\nfrom = "ops@example.com"\n'  # the default policy: sticky
            + fake.table(**keys)
            + f'[[providers]]\nname = "fallback"\ntype = "outbox"\npath = "{self.outbox}"\n'
        )
        self.config.chmod(0o600)
        self.env = host_env(self.home)

    def argv(self, state: str | None, *args: str) -> list[str]:
        extra = ["--state", state] if state else []
        return [mailrelay_command(), "--config", str(self.config), *extra, *args]

    def run(self, state: str | None, *args: str) -> Any:
        return mailrelay(*self.argv(state, *args)[1:], input=None, env=self.env)

    def batch(self, n: int, recipients: int = 1) -> Path:
        path = self.home / "batch.jsonl"
        lines = [
            json.dumps(
                {
                    "to": [f"u{i}.{r}@example.com" for r in range(recipients)],
                    "subject": "s",
                    "text": "t",
                }
            )
            for i in range(n)
        ]
        path.write_text("\n".join(lines) + "\n")
        return path

    def fallback_count(self) -> int:
        return len(list(self.outbox.glob("*.eml"))) if self.outbox.exists() else 0

    def providers(self, state: str | None) -> dict[str, Any]:
        r = self.run(state, "providers", "--json")
        assert r.returncode == 0, r.stderr
        return {p["name"]: p for p in json.loads(r.stdout)["providers"]}


@pytest.fixture
def fake() -> Iterator[RateFake]:
    with RateFake(20) as f:
        yield f


# --- the budget as configured ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [("10/s", 10, 1.0), ("600/min", 600, 60.0), ("5000/day", 5000, 86400.0), ("3/5min", 3, 300)],
)
def test_a_limit_is_a_count_per_period(text: str, count: int, period: float) -> None:
    limit = parse_limit(text)
    assert (limit.count, limit.period) == (count, period)


@pytest.mark.parametrize("value", ['"10/fortnight"', '"ten/s"', '"0/s"', "10", '["10/s", 5]'])
def test_a_bad_rate_limit_is_a_configuration_error_naming_the_key(
    tmp_path: Path, fake: RateFake, value: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[defaults]\nfrom = "ops@example.com"\n' + fake.table() + f"rate_limit = {value}\n"
    )
    r = mailrelay("--config", str(config), "send", "--dry-run", "-s", "s", "x@example.com")
    assert r.returncode == 78, r.stderr
    assert "rate_limit" in r.stderr and "limited" in r.stderr
    errors = [line for line in r.stderr.splitlines() if "warning:" not in line]
    assert len(errors) == 1 and "Traceback" not in r.stderr


def test_a_bad_unit_is_a_configuration_error(tmp_path: Path, fake: RateFake) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[defaults]\nfrom = "ops@example.com"\n' + fake.table(unit="bytes"))
    r = mailrelay("--config", str(config), "send", "--dry-run", "-s", "s", "x@example.com")
    assert r.returncode == 78 and "unit" in r.stderr, r.stderr


def _build(type_: str, **values: Any) -> Any:
    return registry.build(ProviderSpec(type_, type_, values, "test"))


def test_published_limits_are_the_defaults_and_a_list_or_none_replaces_them() -> None:
    resend = _build("resend", api_key="k")
    assert [x.text for x in resend.budget.limits] == ["2/s"]
    assert resend.budget.unit == "recipients"
    assert [x.text for x in _build("mailersend", api_token="k").budget.limits] == ["120/min"]
    assert _build("postmark", server_token="k").budget.limits == ()
    both = _build("resend", api_key="k", rate_limit=["10/s", "100000/day"], unit="requests")
    assert [x.text for x in both.budget.limits] == ["10/s", "100000/day"]
    assert both.budget.unit == "requests"
    assert _build("resend", api_key="k", rate_limit=[]).budget.limits == ()
    ses = _build("ses", access_key_id="AKIA", secret_access_key="s", region="us-east-1")
    assert ses.budget.unit == "recipients" and ses.budget.limits == ()


def _message(recipients: int) -> Message:
    return Message(
        sender=Address("ops@example.com"),
        to=[Address(f"u{i}@example.com") for i in range(recipients)],
        subject="s",
        text="t",
    )


def test_a_message_to_five_recipients_takes_five_tokens_of_a_recipient_budget(
    tmp_path: Path,
) -> None:
    ses = _build(
        "ses",
        access_key_id="AKIA",
        secret_access_key="s",
        region="us-east-1",
        rate_limit="100/day",
    )
    store = FileBudgets(tmp_path / "ratelimit.json")
    pacer = Pacer(store)
    assert pacer.turn(ses, _message(5), remaining=60.0) is None
    assert round(store.peek("ses", ses.budget.limits).tokens["100/day"]) == 95
    assert pacer.turn(ses, _message(1), remaining=60.0) is None
    assert round(store.peek("ses", ses.budget.limits).tokens["100/day"]) == 94
    counted = _build(
        "ses",
        access_key_id="AKIA",
        secret_access_key="s",
        region="us-east-1",
        rate_limit="100/day",
        unit="requests",
    )
    assert pacer.turn(counted, _message(5), remaining=60.0) is None
    assert round(store.peek("ses", ses.budget.limits).tokens["100/day"]) == 93


def test_a_send_whose_wait_does_not_fit_its_deadline_passes_the_provider_over(
    tmp_path: Path,
) -> None:
    provider = _build("resend", api_key="k", rate_limit="1/h", unit="requests")
    pacer = Pacer(FileBudgets(tmp_path / "ratelimit.json"), sleep=lambda s: None)
    assert pacer.turn(provider, _message(1), remaining=60.0) is None  # the hour's one token
    held = pacer.turn(provider, _message(1), remaining=60.0)
    assert held is not None and not held.tried and held.limited == "rate"
    assert held.retry_after is not None and held.retry_after > 3000


# --- what answers tell ------------------------------------------------------------------


def _fields(pairs: dict[str, str]) -> HTTPMessage:
    """Header fields as the HTTP client hands them over (names matched without case)."""
    message = HTTPMessage()
    for name, value in pairs.items():
        message[name] = value
    return message


def test_header_fields_of_each_family_are_read() -> None:
    ietf = observe(
        _fields({"RateLimit-Policy": '"burst";q=20;w=1', "RateLimit": '"burst";r=7;t=1'})
    )
    assert ietf is not None and (ietf.limit, ietf.remaining, ietf.window) == (20, 7, 1.0)
    draft = observe(
        _fields({"ratelimit-limit": "2", "ratelimit-remaining": "1", "ratelimit-reset": "1"})
    )
    assert draft is not None and (draft.limit, draft.remaining, draft.reset) == (2, 1, 1.0)
    now = 1_800_000_000.0
    sendgrid = observe(
        _fields(
            {
                "X-RateLimit-Limit": "600",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(now) + 30),
            }
        ),
        now=now,
    )
    assert sendgrid is not None and sendgrid.remaining == 0 and sendgrid.reset == 30.0
    brevo = observe(
        _fields(
            {
                "x-sib-ratelimit-limit": "10",
                "x-sib-ratelimit-remaining": "9",
                "x-sib-ratelimit-reset": "1",
            }
        )
    )
    assert brevo is not None and (brevo.limit, brevo.remaining) == (10, 9)
    quota = observe(
        _fields({"x-apiquota-remaining": "5", "x-apiquota-reset": "2027-01-15T00:00:00Z"}), now=now
    )
    assert quota is not None and quota.remaining == 5 and quota.reset is not None
    assert observe(_fields({"Content-Type": "application/json"})) is None
    # a pace from what the answer told: the policy's window, else the longest reset seen
    assert ietf.interval() == pytest.approx(1.03 / 20)
    assert draft.interval(window=1.0) == pytest.approx(1.03 / 2)


# --- real sends through the fake ----------------------------------------------------------


def _spawn(
    host: Host, state: str | None, batch: Path, concurrency: int = 8
) -> subprocess.Popen[str]:
    argv = host.argv(state, "send", "--batch", str(batch), "--concurrency", str(concurrency))
    return subprocess.Popen(
        argv,
        env={**os.environ, **host.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err


@pytest.mark.skipif(BINARY is None, reason="no redis-server or valkey-server")
def test_three_hosts_on_one_redis_spend_one_budget(tmp_path: Path, fake: RateFake) -> None:
    assert BINARY is not None
    with RedisServer(BINARY) as server:
        flush(server)
        hosts = [Host(tmp_path, n, fake, rate_limit="20/s", unit="requests") for n in "abc"]
        _wait([_spawn(h, server.url, h.batch(30)) for h in hosts])
        page = hosts[1].run(server.url, "metrics").stdout
        assert 'mailrelay_provider_budget_remaining{provider="limited",limit="20/s"}' in page
        fallback = sum(h.fallback_count() for h in hosts)
        assert fake.accepted + fallback == 90
        # (almost) never too fast: a loaded machine may delay a paced send into the next
        # send's window now and then (unpaced, about two thirds of the 90 get a 429)
        assert fake.limited <= 5, (fake.limited, fake.accepted)
        assert fake.accepted >= 85  # all (but those) through the limited provider
        seen = hosts[0].providers(server.url)["limited"]
        assert seen["budget"]["limits"] == ["20/s"] and not seen["cooling"]


def test_processes_of_one_host_spend_one_budget(tmp_path: Path, fake: RateFake) -> None:
    host = Host(tmp_path, "a", fake, rate_limit="20/s", unit="requests")
    _wait([_spawn(host, None, host.batch(20)) for _ in range(3)])
    assert fake.accepted + host.fallback_count() == 60
    assert fake.limited <= 4 and fake.accepted >= 56


def test_without_a_configured_limit_a_batch_learns_it_from_the_answers(
    tmp_path: Path, fake: RateFake
) -> None:
    host = Host(tmp_path, "a", fake, rate_limit=[])
    _wait([_spawn(host, None, host.batch(60))])
    assert fake.accepted + host.fallback_count() == 60
    # nearly all through it: the first answers teach the pace, but the batch's first sends
    # go before any answer is back (7 of 60 refused were seen on a loaded machine)
    assert fake.accepted >= 48, (fake.accepted, fake.limited)
    seen = host.providers(None)["limited"]
    assert not seen["cooling"] and seen["consecutive_failures"] == 0
    assert seen["failed"] == 0  # a rate 429 is no failure


def test_a_rate_429_does_not_rest_the_provider(tmp_path: Path) -> None:
    with RateFake(None, headers=False) as fake:  # nothing to learn from: the 429 is the news
        host = Host(tmp_path, "a", fake, rate_limit=[])
        first = host.run(None, "send", "--json", "-s", "s", "--text", "t", "x@example.com")
        fake.refuse = 1
        second = host.run(None, "send", "--json", "-s", "s", "--text", "t", "x@example.com")
        assert json.loads(first.stdout)["provider"] == "limited"
        attempts = json.loads(second.stdout)["attempts"]
        assert [(a["provider"], a["rate_limited"]) for a in attempts] == [
            ("limited", "rate"),
            ("fallback", None),
        ]
        seen = host.providers(None)["limited"]
        assert not seen["cooling"] and seen["consecutive_failures"] == 0 and seen["failed"] == 0
        assert seen["outcomes"].get("rate_limited") == 1
        time.sleep(1.2)  # the Retry-After (1 s) is over: the provider is first again
        third = host.run(None, "send", "--json", "-s", "s", "--text", "t", "x@example.com")
        assert json.loads(third.stdout)["provider"] == "limited"
        assert fake.limited == 1


def test_a_spent_quota_rests_the_provider_until_it_resets(tmp_path: Path) -> None:
    with RateFake(20) as fake:
        fake.quota_spent = True
        host = Host(tmp_path, "a", fake, rate_limit=[])
        for _ in range(3):
            r = host.run(None, "send", "--json", "-s", "s", "--text", "t", "x@example.com")
            assert r.returncode == 0 and json.loads(r.stdout)["provider"] == "fallback"
        assert fake.quota == 1  # asked once; then passed over until the quota is back
        last = json.loads(r.stdout)["attempts"][0]
        assert not last["tried"] and last["rate_limited"] == "quota"
        assert "quota spent until 00:00 UTC" in last["detail"]
        seen = host.providers(None)["limited"]
        assert seen["budget"]["held"]["text"] == "quota spent until 00:00 UTC"
        assert seen["consecutive_failures"] == 0 and seen["outcomes"].get("quota_spent") == 1
        page = host.run(None, "metrics").stdout
        assert 'mailrelay_provider_rate_limited_total{provider="limited",kind="quota"} 1' in page
        assert 'mailrelay_send_attempts_total{provider="limited",outcome="quota_spent"}' not in page


# --- the three stores keep one arithmetic ---------------------------------------------------


@pytest.fixture(params=["memory", "file", "redis"])
def budgets(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    from mailrelay.ratelimit.bucket import MemoryBudgets

    if request.param == "memory":
        yield MemoryBudgets()
    elif request.param == "file":
        yield FileBudgets(tmp_path / "ratelimit.json")
    else:
        if BINARY is None:
            pytest.skip("no redis-server or valkey-server")
        from mailrelay.ratelimit.redisbucket import connect

        with RedisServer(BINARY) as server:
            yield connect(server.url + "?prefix=t", None)


def test_each_store_paces_blocks_and_tells_alike(budgets: Any) -> None:
    ten = [parse_limit("10/s")]
    first = budgets.reserve("p", ten, 1.0, 5.0)
    assert first.go and first.wait == 0.0
    second = budgets.reserve("p", ten, 1.0, 5.0)  # reserved: its turn is one token later
    assert second.go and 0.05 < second.wait <= 0.103 and second.kind == "rate"
    refused = budgets.reserve("p", ten, 1.0, 0.01)  # does not fit: nothing is reserved
    assert not refused.go and 0.1 < refused.wait <= 0.206
    assert budgets.reserve("p", ten, 1.0, 5.0).wait <= 0.206  # the refusal spent nothing

    day = [parse_limit("100/day")]
    assert budgets.reserve("q", day, 5.0, 1.0).go  # five recipients, at once (a day bursts)
    assert round(budgets.peek("q", day).tokens["100/day"]) == 95

    budgets.block("q", 50.0, "quota")
    budgets.block("q", 1.0, "rate")  # a rate 429 while the quota is spent changes nothing
    held = budgets.reserve("q", day, 1.0, 10.0)
    assert not held.go and held.kind == "quota" and 45 < held.wait <= 50
    left = budgets.peek("q", day)
    assert left.kind == "quota" and 45 < left.blocked <= 50

    budgets.learn("r", 0.5, 10.0)  # a pace learned from the answers, no limit configured
    assert budgets.reserve("r", [], 1.0, 5.0).wait == 0.0
    paced = budgets.reserve("r", [], 1.0, 5.0)
    assert paced.go and 0.4 < paced.wait <= 0.5
    budgets.learn("r", None, 0.0)  # forgotten: free again
    assert budgets.reserve("r", [], 1.0, 0.0).go


def test_a_queue_flush_paces_through_the_budget(tmp_path: Path, dead_port: int) -> None:
    with RateFake(5) as fake:
        host = Host(tmp_path, "a", fake, rate_limit="5/s", unit="requests")
        down = host.home / "down.toml"  # the same host while its only provider is down
        down.write_text(
            '[defaults]\nfrom = "ops@example.com"\n[[providers]]\nname = "relay"\n'
            f'type = "smtp"\nhost = "127.0.0.1"\nport = {dead_port}\nsecurity = "none"\n'
        )
        argv = ["--config", str(down), "send", "--queue", "--batch", str(host.batch(12))]
        queued = mailrelay(*argv, input=None, env=host.env)
        assert queued.returncode == 0, queued.stderr
        flushed = host.run(None, "queue", "flush", "--now")
        assert flushed.returncode == 0, flushed.stderr
        assert fake.accepted == 12 and fake.limited == 0  # one queue, paced at 5/s
        assert host.fallback_count() == 0


def test_serve_paces_through_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailrelay.config import load_settings
    from mailrelay.providers import httpapi
    from mailrelay.serve.app import create_app

    monkeypatch.setattr(httpapi, "_pool", None)  # a pool of its own, closed below
    with RateFake(5) as fake:
        host = Host(tmp_path, "a", fake, rate_limit="5/s", unit="requests")
        settings = load_settings(str(host.config))
        app = create_app(settings, state=str(host.home / "state.toml"), tokens=[], log=False)
        client = app.test_client()
        message = {"from": "ops@example.com", "to": ["x@example.com"], "subject": "s", "text": "t"}
        for _ in range(12):
            answer = client.post("/v1/messages", json=message)
            assert answer.status_code == 200, answer.get_data(as_text=True)
            assert answer.get_json()["provider"] == "limited"
        assert fake.accepted == 12 and fake.limited == 0
        page = client.get("/metrics").get_data(as_text=True)
        assert 'mailrelay_provider_rate_limited_total{provider="limited",kind="rate"} 0' in page
        assert 'mailrelay_provider_budget_remaining{provider="limited",limit="5/s"}' in page
        httpapi.shared_pool().close()  # its keep-alive connections to the fake


def test_a_quota_reset_reads_as_the_minute_it_comes_back() -> None:
    from datetime import datetime, timezone

    from mailrelay.ratelimit.quota import to_midnight, to_month_end, until_text

    for hour in (1, 12, 23):
        now = datetime(2026, 12, 4, hour, 0, 5, tzinfo=timezone.utc)
        assert until_text(to_midnight(now) - 0.01, now) == "00:00 UTC"  # stored a bit early
        assert until_text(to_month_end(now), now) == "2027-01-01 00:00 UTC"
