"""The status page's chart of one provider: its last hour of attempts, one bar per minute,
stacked by outcome (ProviderState.minutes), as inline SVG: nothing fetched, no script."""

from __future__ import annotations

from datetime import datetime
from html import escape

from mailrelay.state.protocol import HOUR_MINUTES, recent_minutes

# bottom to top; the CLI's colours: accepted green, for-now failures yellow, the others red
ORDER = ("accepted", "transient", "ambiguous", "rejected", "provider", "permanent")
COLOURS = {
    "accepted": "#2e7d32",
    "transient": "#f9a825",
    "ambiguous": "#f9a825",
    "rejected": "#c62828",
    "provider": "#c62828",
    "permanent": "#6a1b9a",
}
BAR, GAP, HEIGHT = 3, 1, 32


def per_minute(minutes: dict[str, int], now: datetime) -> list[dict[str, int]]:
    """The hour up to `now`, oldest minute first: each minute's counts by outcome."""
    last = int(now.timestamp()) // 60
    hour: list[dict[str, int]] = [{} for _ in range(HOUR_MINUTES)]
    for key, n in recent_minutes(minutes, last).items():
        minute, _, outcome = key.partition(":")
        slot = HOUR_MINUTES - 1 - (last - int(minute))
        if 0 <= slot < HOUR_MINUTES:
            hour[slot][outcome] = hour[slot].get(outcome, 0) + n
    return hour


def chart_svg(name: str, minutes: dict[str, int], now: datetime) -> str:
    hour = per_minute(minutes, now)
    peak = max([sum(m.values()) for m in hour] + [1])
    totals: dict[str, int] = {}
    bars = []
    for i, counts in enumerate(hour):
        x, top = i * (BAR + GAP), HEIGHT
        for outcome in sorted(counts, key=lambda o: ORDER.index(o) if o in ORDER else 99):
            n = counts[outcome]
            totals[outcome] = totals.get(outcome, 0) + n
            h = max(1, round(n * HEIGHT / peak))
            top -= h
            colour = COLOURS.get(outcome, "#757575")
            bars.append(
                f'<rect x="{x}" y="{top}" width="{BAR}" height="{h}" fill="{colour}">'
                f"<title>{HOUR_MINUTES - 1 - i} min ago: {n} {outcome}</title></rect>"
            )
    summary = ", ".join(f"{n} {o}" for o, n in sorted(totals.items())) or "no attempts"
    width = HOUR_MINUTES * (BAR + GAP)
    return (
        f'<svg class=chart data-provider="{escape(name)}" width="{width}" height="{HEIGHT}" '
        f'viewBox="0 0 {width} {HEIGHT}" role="img" aria-label="last hour: {summary}">'
        f'<title>last hour: {summary}</title><rect width="{width}" height="{HEIGHT}" '
        f'fill="#f4f4f4"/>{"".join(bars)}</svg>'
    )
