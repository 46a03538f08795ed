"""Both front ends end a flush alike (mailrelay.flushing): `queue flush` (the installed
command) and serve's flusher (`Flusher.flush_once`, in this process) flush the same spool
through the same refusing relay, each from a copy of the same state, and leave the same
state behind: the message counted once, as queued, however often it is retried, and the
provider's counters alike. The folder spool and the Redis one (tests/redisserver.py)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import free_port
from tests.redisserver import started_server
from tests.test_e2e import mailrelay

FLUSHES = 3
PAUSE = 0.001  # every cooldown and backoff, in seconds (the config refuses 0)


def refusing_relay() -> dict[str, Any]:
    """An SMTP relay on a port nothing listens on: connect refused, failed for now."""
    port = free_port()
    return {"name": "relay", "type": "smtp", "host": "127.0.0.1", "port": port,
            "security": "none", "timeout": 3}  # fmt: skip


def write_config(folder: Path, spool: str, provider: dict[str, Any], **more: Any) -> Path:
    """The config of one front end: its cooldowns and the queue's backoff over in a
    millisecond, so each flush of either front end tries a queued message again (serve's
    flusher waits while every provider cools down)."""
    defaults = {"from": "cron@example.com", "spool_dir": spool, "cooldown": PAUSE,
                "max_cooldown": PAUSE, "queue_retry": PAUSE, "queue_max_retry": PAUSE}  # fmt: skip
    defaults.update(more.pop("defaults", {}))
    path = folder / "config.toml"
    path.write_text(tomli_w.dumps({"defaults": defaults, "providers": [provider], **more}))
    path.chmod(0o600)
    return path


def counted(state: Path) -> dict[str, Any]:
    """What a flush must leave alike: the messages and the provider's counters."""
    from mailrelay.state import TomlStateStore

    loaded = TomlStateStore(state).load()
    providers = {
        name: (p.sent, p.failed, p.consecutive_failures, dict(p.outcomes))
        for name, p in loaded.providers.items()
    }
    return {"messages": dict(loaded.messages), "providers": providers}


def cli_flushes(cfg: Path, state: Path) -> list[list[str]]:
    statuses = []
    for _ in range(FLUSHES):
        time.sleep(10 * PAUSE)  # the backoff of the last try is over: due without --now
        r = mailrelay("--config", str(cfg), "--state", str(state), "queue", "flush",
                      "--json", input=None)  # fmt: skip
        assert r.returncode == 75, r.stderr
        statuses.append([m["outcome"] for m in json.loads(r.stdout)["messages"]])
    return statuses


def serve_flushes(cfg: Path, state: Path, flushes: int = FLUSHES) -> list[list[str]]:
    from mailrelay.app import App
    from mailrelay.serve.server import Flusher

    warnings: list[str] = []
    app = App(config=str(cfg), state=str(state), providers=(), debug=False, warn=warnings.append)
    statuses = []
    try:
        flusher = Flusher(app, 3600)
        for _ in range(flushes):
            time.sleep(10 * PAUSE)  # the cooldown and the backoff of the last try are over
            report = flusher.flush_once()
            assert report is not None, "the flusher did not flush"
            statuses.append([item.status for item in report.items])
    finally:
        app.close()
    assert warnings == []
    return statuses


def both_front_ends(tmp_path: Path, spool: str) -> None:
    cfg = write_config(tmp_path, spool, refusing_relay())
    queued = tmp_path / "queued.toml"
    r = mailrelay("--config", str(cfg), "--state", str(queued), "send", "--queue",
                  "-s", "disk full", "ops@example.com")  # fmt: skip
    assert r.returncode == 0 and "queued" in r.stderr, r.stderr
    assert counted(queued)["messages"] == {"queued": 1}
    by_cli, by_serve = tmp_path / "cli.toml", tmp_path / "serve.toml"
    shutil.copy(queued, by_cli)
    shutil.copy(queued, by_serve)
    cli = cli_flushes(cfg, by_cli)
    serve = serve_flushes(cfg, by_serve)  # the same spool, the message still in it
    assert cli == serve
    assert all(statuses.count("queued") == 1 for statuses in serve), serve
    assert counted(by_cli) == counted(by_serve)
    assert counted(by_serve)["messages"] == {"queued": 1}  # retries are not counted again
    assert counted(by_serve)["providers"]["relay"][1] == 1 + FLUSHES  # each try failed


def test_cli_and_serve_flush_a_folder_spool_alike(tmp_path: Path) -> None:
    both_front_ends(tmp_path, str(tmp_path / "spool"))


@pytest.fixture
def redis_url() -> Iterator[str]:
    for server in started_server():
        yield server.url


def test_cli_and_serve_flush_a_redis_spool_alike(tmp_path: Path, redis_url: str) -> None:
    both_front_ends(tmp_path, redis_url)


# --- what serve's flusher skipped before: held/ and the expired alert ------------------------

HELD = b"To: root\nSubject: disk full\n\nweb1: /var at 91%\n"


def side(tmp_path: Path, name: str, provider: dict[str, Any] | None = None, **more: Any
         ) -> tuple[Path, Path]:  # fmt: skip
    """One front end's folder: its config (the outbox by default), spool and state."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    outbox = {"name": "box", "type": "outbox", "path": str(folder / "outbox")}
    cfg = write_config(folder, str(folder / "spool"), provider or outbox, **more)
    return cfg, folder / "state.toml"


def test_cli_and_serve_both_send_a_held_message_once_the_config_allows(tmp_path: Path) -> None:
    import subprocess

    from tests.test_e2e import mailrelay_command

    sides = {name: side(tmp_path, name) for name in ("cli", "serve")}
    for cfg, state in sides.values():  # no alias for root yet: sendmail mode holds it
        argv = [mailrelay_command(), "--config", str(cfg), "--state", str(state), "sendmail", "-t"]
        r = subprocess.run(argv, input=HELD, capture_output=True, timeout=60)
        assert r.returncode == 78, r.stderr
    for name in sides:  # the config now names root's address
        side(tmp_path, name, aliases={"root": "ops@example.com"})
    cli_cfg, cli_state = sides["cli"]
    r = mailrelay("--config", str(cli_cfg), "--state", str(cli_state), "queue", "flush",
                  "--json", input=None)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert [m["outcome"] for m in json.loads(r.stdout)["messages"]] == ["sent"]
    assert serve_flushes(*sides["serve"], flushes=1) == [["sent"]]
    for name in sides:
        assert len(list((tmp_path / name / "outbox").glob("*.eml"))) == 1, name
        assert list((tmp_path / name / "spool").rglob("*.json")) == [], name
    assert counted(cli_state) == counted(sides["serve"][1])


def test_cli_and_serve_both_alert_for_the_messages_they_move_to_failed(tmp_path: Path) -> None:
    relay = refusing_relay()
    events, sides = {}, {}
    for name in ("cli", "serve"):
        events[name] = tmp_path / f"{name}-alerts.jsonl"
        record = f"import sys; open({str(events[name])!r}, 'a').write(sys.stdin.read() + '\\n')"
        alerts = {"command": [sys.executable, "-c", record]}
        cfg, state = side(tmp_path, name, relay, alerts=alerts, defaults={"queue_max_age": PAUSE})
        r = mailrelay("--config", str(cfg), "--state", str(state), "send", "--queue",
                      "-s", "disk full", "ops@example.com")  # fmt: skip
        assert r.returncode == 0, r.stderr
        sides[name] = cfg, state
    cli_cfg, cli_state = sides["cli"]
    time.sleep(10 * PAUSE)  # older than queue_max_age
    r = mailrelay("--config", str(cli_cfg), "--state", str(cli_state), "queue", "flush",
                  "--json", input=None)  # fmt: skip
    assert r.returncode == 69, r.stderr
    assert serve_flushes(*sides["serve"], flushes=1) == [["failed"]]
    for name in sides:
        found = [json.loads(line) for line in events[name].read_text().splitlines() if line]
        expired = [e for e in found if e["event"] == "expired"]
        assert len(expired) == 1, (name, found)
        assert expired[0]["detail"].startswith("1 message(s) moved to failed/"), name
    assert counted(cli_state) == counted(sides["serve"][1])
