"""Shared fixtures: every test runs with its own home, config, data and state directories."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from mailrelay.secrets import forget_all
from tests.esp.fakebase import FAKE_MODULES, FakeESP, serve
from tests.redisserver import redis_server, redis_url
from tests.smtpserver import smtp_server, stop_shared_server

# fixtures every test module may ask for
__all__ = ["redis_server", "redis_url", "smtp_server"]


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point HOME and the XDG directories at a temporary folder; drop MAILRELAY_* variables."""
    home = tmp_path / "home"
    home.mkdir()
    for var in list(os.environ):
        if var.startswith("MAILRELAY_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    # the system-wide config (/etc/mailrelay/config.toml) is never the host's
    monkeypatch.setenv("MAILRELAY_SYSTEM_CONFIG", str(tmp_path / "etc" / "mailrelay.toml"))
    # keep requests away from any proxy the machine may name: tests talk to loopback only
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
    yield home
    forget_all()  # secrets remembered by one test must not redact another's output


def free_port() -> int:
    """A loopback TCP port that nothing listens on (refused connections)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dead_port() -> int:
    return free_port()


@pytest.fixture
def fake(request: pytest.FixtureRequest, httpserver: HTTPServer) -> FakeESP:
    """A provider's loopback fake (tests/esp/fake_<type>.py), installed on the httpserver.

    Which fake: the parameter when a module runs its tests over every fake (a module-level
    `EVERY_FAKE = True`, see pytest_generate_tests), else the module's `FAKE_TYPE`, else the
    type in its name (tests/esp/test_<type>.py)."""
    param = getattr(request, "param", None)
    if param is not None:
        type_ = str(param).removeprefix("fake_")
    else:
        type_ = (
            getattr(request.module, "FAKE_TYPE", None)
            or (request.module.__name__.rpartition(".test_")[2])
        )
    return serve(type_, httpserver)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """In a module with `EVERY_FAKE = True`, a test taking `fake` runs once per provider fake."""
    if "fake" in metafunc.fixturenames and getattr(metafunc.module, "EVERY_FAKE", False):
        metafunc.parametrize("fake", FAKE_MODULES, indirect=True)


@pytest.fixture(scope="session", autouse=True)
def _stop_the_shared_smtp_server() -> Iterator[None]:
    """The shared SMTP server (tests/smtpserver.py) stops with the session, thread and all."""
    yield
    stop_shared_server()
