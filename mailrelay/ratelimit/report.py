"""A provider's budget as `providers`, `status` and `/metrics` show it: the limits, what
each has left, and what holds the provider back now (a rate 429's wait, a spent quota)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mailrelay.ratelimit.quota import until_text
from mailrelay.ratelimit.spec import LIMITED_COUNTS

if TYPE_CHECKING:
    from mailrelay.engine import Engine
    from mailrelay.metrics import Family
    from mailrelay.providers.base import Provider
    from mailrelay.ratelimit.bucket import BudgetStore, Remaining
    from mailrelay.state import State


def held_text(kind: str, seconds: float) -> str:
    """ "quota spent until 00:00 UTC" or "rate limited for 1.0 s more"."""
    if kind == "quota":
        return f"quota spent until {until_text(seconds)}"
    return f"rate limited for {seconds:.1f} s more"


def peek(store: BudgetStore | None, provider: Provider) -> Remaining | None:
    """What the provider has left, or None (no budget to keep, or the store unreadable)."""
    if store is None or not (provider.budget.limits or provider.rate_headers):
        return None
    try:
        return store.peek(provider.name, provider.budget.limits)
    except Exception:  # a display never fails for a budget it cannot read
        return None


def budget_document(store: BudgetStore | None, provider: Provider) -> dict[str, Any]:
    """{"limits": ["20/s"], "unit": "requests", "remaining": {"20/s": 19.0}, "held": None |
    {"kind": "quota", "seconds": 3600.0, "text": "quota spent until 00:00 UTC"}}"""
    budget = provider.budget
    doc: dict[str, Any] = {
        "limits": [limit.text for limit in budget.limits],
        "unit": budget.unit,
        "remaining": {},
        "held": None,
    }
    left = peek(store, provider)
    if left is None:
        return doc
    doc["remaining"] = {text: round(tokens, 1) for text, tokens in left.tokens.items()}
    if left.blocked > 0:
        doc["held"] = {
            "kind": left.kind,
            "seconds": round(left.blocked, 1),
            "text": held_text(left.kind, left.blocked),
        }
    return doc


def metric_families(
    state: State, providers: Sequence[Provider], store: BudgetStore | None
) -> list[Family]:
    """mailrelay_provider_rate_limited_total (from the state's counts, so every process's
    429s add up) and mailrelay_provider_budget_remaining (from the shared budgets)."""
    from mailrelay.metrics import Family

    limited = Family(
        "mailrelay_provider_rate_limited_total",
        "counter",
        "Answers that said a provider's limit was reached: kind rate (a 429 of the pace; "
        "no failure) or quota (a spent daily/monthly quota; rests until it resets).",
    )
    remaining = Family(
        "mailrelay_provider_budget_remaining",
        "gauge",
        "What a provider's budget could still take within each configured limit's period "
        "(requests or recipients); 0 while a rate 429's wait or a spent quota holds it.",
    )
    for provider in providers:
        entry = state.providers.get(provider.name)
        outcomes = entry.outcomes if entry else {}
        for kind, name in LIMITED_COUNTS.items():
            limited.add(outcomes.get(name, 0), provider=provider.name, kind=kind)
        left = peek(store, provider)
        if left is None:
            continue
        for text, tokens in left.tokens.items():
            remaining.add(0.0 if left.blocked > 0 else tokens, provider=provider.name, limit=text)
    return [limited, remaining]


def engine_metrics(state: State, engine: Engine) -> str:
    """The rate-limit families of an engine's providers, formatted (serve's /metrics)."""
    from mailrelay.metrics import format_families

    store = engine.pacer.store if engine.pacer is not None else None
    return format_families(metric_families(state, engine.providers, store))
