"""The JSON-lines audit log. PLACEHOLDER: the audit helper replaces this module."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailrelay.engine import Attempt, SendResult
    from mailrelay.message import Message


class AuditLog:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def attempt(self, message: Message, attempt: Attempt) -> None:
        raise NotImplementedError

    def result(self, message: Message, result: SendResult) -> None:
        raise NotImplementedError
