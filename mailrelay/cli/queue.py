"""`mailrelay queue`. PLACEHOLDER: the spool helper replaces this module."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailrelay.cli import App
    from mailrelay.engine import SendResult
    from mailrelay.message import Message


def enqueue_failed(app: App, message: Message, result: SendResult) -> int:
    raise NotImplementedError
