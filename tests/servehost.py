"""What the tests' hosts (a mailrelay home of their own, often a `mailrelay serve`) share:
the environment that gives a host its own home, and the wait for a started serve."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import requests


def host_env(home: Path) -> dict[str, str]:
    """The variables that give a host `home` as its home, its config and its data folder."""
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
    }


def wait_until_healthy(
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    stop: Callable[[], object],
    wait: float = 30.0,
) -> None:
    """Return once `url`/healthz answers 200; if the process ends first or `wait` seconds
    pass, call `stop` and fail with what the server wrote to `log`."""
    deadline = time.monotonic() + wait
    while True:
        try:
            if requests.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop()
            raise AssertionError(f"serve did not start:\n{log.read_text()}")
        time.sleep(0.1)
