"""The spool: messages every provider refused for now, kept until one accepts them.

PLACEHOLDER (session 2 plumbing): the spool helper replaces this module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def default_spool_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("mailrelay")) / "spool"


class Spool:
    def __init__(self, path: Path, *, warn: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.warn = warn
