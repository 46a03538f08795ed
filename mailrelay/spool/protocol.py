"""What every spool does, wherever it keeps its messages: `Spool` (a folder, one file per
message) and `RedisSpool` (Redis Streams, shared by a fleet). The front ends (`queue`,
mailrelay.delivery, serve's flusher) use only these names, so they never ask which one.

Held messages are named by a key only the spool that listed them reads (a path, an id).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mailrelay.clock import Now
    from mailrelay.message import Message
    from mailrelay.metrics import SpoolStats
    from mailrelay.result import Attempt
    from mailrelay.spool.entry import HeldMessage, QueuedMessage
    from mailrelay.spool.flush import FlushItem, FlushReport, Sender


class QueueStore(Protocol):
    where: str  # the spool, for a person: a folder, or a Redis URL without its password
    failed_where: str
    now: Now

    def add(
        self, message: Message, attempts: list[Attempt], *, retry: float, max_retry: float
    ) -> QueuedMessage: ...

    def hold(
        self, raw: bytes, *, reason: str, options: dict[str, Any], message_id: str | None
    ) -> HeldMessage: ...

    def entries(self, *, failed: bool = False) -> list[QueuedMessage]: ...

    def held(self) -> list[HeldMessage]: ...

    def find(self, ident: str) -> QueuedMessage: ...

    def find_any(self, ident: str) -> QueuedMessage | HeldMessage: ...

    def drop(self, ident: str) -> QueuedMessage: ...

    def depth(self) -> int: ...

    def pending(self) -> bool: ...

    def place(self, entry: QueuedMessage) -> str: ...

    def held_keys(self) -> list[Any]: ...

    def held_exists(self, key: Any) -> bool: ...

    def take_held(self, key: Any) -> AbstractContextManager[HeldMessage | None]: ...

    def release(self, entry: HeldMessage) -> None: ...

    def rehold(self, entry: HeldMessage, reason: str) -> None: ...

    def move_corrupt(self, key: Any) -> Path | None: ...

    def fail(self, entry: QueuedMessage, reason: str) -> Path | None: ...

    def close(self) -> None: ...

    def durability_warning(self) -> str | None: ...

    def stats(self) -> SpoolStats: ...

    def deferred_durability(self) -> AbstractContextManager[None]: ...

    def flush(
        self,
        send: Sender,
        *,
        retry: float,
        max_retry: float,
        max_age: float,
        ignore_backoff: bool = False,
        max_size: int | None = None,
        progress: Callable[[FlushItem | None], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> FlushReport: ...
