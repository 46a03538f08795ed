"""A provider's budget as `providers`, `status` and `/metrics` show it: the limits, what
each has left, and what holds the provider back now (a rate 429's wait, a spent quota)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailrelay.ratelimit.quota import until_text

if TYPE_CHECKING:
    from mailrelay.providers.base import Provider
    from mailrelay.ratelimit.bucket import BudgetStore, Remaining


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
