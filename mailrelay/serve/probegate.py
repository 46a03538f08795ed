"""The probe gate in files: Policy.skip_cooling's one probe per provider and cooldown
period, claimed by one worker of the host (serve/fleet.py's `RedisProbeGate` is the same
for the fleet)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from datetime import datetime
from pathlib import Path

from mailrelay.fsutil import make_private_dirs


class FileProbeGate:
    """Policy.skip_cooling's probe claims shared by every worker of a host: one O_EXCL file
    per provider and cooldown end; files older than `keep` seconds are removed."""

    def __init__(self, path: Path, *, keep: float) -> None:
        self.path = Path(path)
        self.keep = keep
        # claims this process has seen made: a claim stays made, so while every provider
        # rests a request asks no file (a set's add and lookup are atomic under the GIL)
        self._made: set[tuple[str, datetime]] = set()

    def claim(self, provider: str, until: datetime) -> bool:
        if (provider, until) in self._made:
            return False
        make_private_dirs(self.path)
        try:
            os.close(
                os.open(
                    self._file(provider, until),
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                    0o600,
                )
            )
        except FileExistsError:
            self._remember(provider, until)
            return False
        self._remember(provider, until)
        self._sweep()
        return True

    def taken(self, provider: str, until: datetime) -> bool:
        if (provider, until) in self._made:
            return True
        if not os.path.lexists(self._file(provider, until)):
            return False
        self._remember(provider, until)  # another worker's claim: no file asked again
        return True

    def _file(self, provider: str, until: datetime) -> Path:
        return self.path / hashlib.sha256(f"{provider}\0{until.isoformat()}".encode()).hexdigest()

    def _remember(self, provider: str, until: datetime) -> None:
        if len(self._made) >= 1024:  # old cooldowns: their periods are over
            self._made.clear()
        self._made.add((provider, until))

    def _sweep(self) -> None:
        limit = time.time() - self.keep
        for entry in os.scandir(self.path):
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < limit:
                    os.unlink(entry.path)
