"""Prometheus text for `/metrics` (exposition format 0.0.4): one function per family, so
more families (the state store's per-provider counters) are one more function."""

from __future__ import annotations

import threading
from collections.abc import Callable


class RequestCounter:
    """HTTP requests of this worker process by route and status code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}

    def add(self, route: str, code: int) -> None:
        with self._lock:
            self._counts[(route, code)] = self._counts.get((route, code), 0) + 1

    def snapshot(self) -> dict[tuple[str, int], int]:
        with self._lock:
            return dict(self._counts)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def http_requests(counter: RequestCounter) -> list[str]:
    lines = [
        "# HELP mailrelay_http_requests_total HTTP requests answered, by route and status code.",
        "# TYPE mailrelay_http_requests_total counter",
    ]
    for (route, code), n in sorted(counter.snapshot().items()):
        lines.append(f'mailrelay_http_requests_total{{route="{_label(route)}",code="{code}"}} {n}')
    return lines


FAMILIES: list[Callable[[RequestCounter], list[str]]] = [http_requests]


def render_metrics(counter: RequestCounter) -> str:
    return "\n".join(line for family in FAMILIES for line in family(counter)) + "\n"
