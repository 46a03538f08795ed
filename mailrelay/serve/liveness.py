"""Process liveness: who holds a claim (host, boot, pid and the process's start time), and
whether that process may still finish it. The key store (keys.py), the Redis key store
(fleet.py) and the metrics folders of serve/server.py name their owners so."""

from __future__ import annotations

import os
import socket


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a Linux process; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return (fields[0].decode(), fields[19].decode()) if len(fields) > 19 else None


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def owner() -> dict[str, object]:
    """Who holds a claim: this process, in words another process of the host can check."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return {
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "pid": pid,
        "start": stat[1] if stat else None,
    }


def owner_alive(who: object) -> bool:
    """Whether the process that made a claim may still finish it (True when unsure)."""
    if not isinstance(who, dict) or who.get("host") != socket.gethostname():
        return True  # another host's, or an older claim: only its age can tell
    if who.get("boot") and who.get("boot") != _boot_id():
        return False  # the host has restarted since
    pid = who.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process with that pid: the start time below tells
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, start = stat
    return state not in ("Z", "X") and (who.get("start") in (None, start))
