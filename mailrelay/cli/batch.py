"""`mailrelay send --batch`. PLACEHOLDER: the batch helper replaces this module."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailrelay.cli import App


def run_batch(
    app: App,
    path: str,
    *,
    concurrency: int,
    queue: bool,
    policy: str | None,
    timeout: float | None,
    default_sender: str | None,
) -> int:
    raise NotImplementedError
