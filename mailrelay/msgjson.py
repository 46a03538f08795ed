"""A message given as JSON (send --message). PLACEHOLDER: the JSON helper replaces this."""

from __future__ import annotations

from mailrelay.message import DEFAULT_MAX_SIZE, Message


def load_message(
    data: bytes,
    *,
    where: str,
    base_dir: str | None,
    default_sender: str | None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Message:
    raise NotImplementedError
