"""[alerts]: events through the installed command to a real alert command and to an apprise
json:// target on loopback; one event per transition, exit codes untouched."""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from mailrelay.engine import Engine
from mailrelay.message import build_message
from mailrelay.policy import Policy
from mailrelay.providers.base import Outcome, Receipt
from mailrelay.result import Attempt
from mailrelay.state import TomlStateStore
from mailrelay.state.transitions import Event, Transitions
from tests.smtpserver import SmtpServer, shared_server
from tests.test_e2e import mailrelay, write_config
from tests.test_engine import Clock, Scripted
from tests.test_metrics import smtp

HOOK_PASSWORD = "hook-Pa55-never-shown"

RECORDER = """\
import sys
with open(sys.argv[1], "a", encoding="utf-8") as f:
    f.write(sys.stdin.read())
"""


def configure(path: Path, providers: list[dict[str, Any]], alerts: str, **defaults: Any) -> Path:
    defaults.setdefault("spool_dir", str(path.parent / "spool"))
    cfg = write_config(path, providers, policy="priority", cooldown=0.001, **defaults)
    cfg.write_text(cfg.read_text() + "\n[alerts]\n" + alerts)
    cfg.chmod(0o600)
    return cfg


def recorder(tmp_path: Path) -> tuple[str, Path]:
    script = tmp_path / "record_alert.py"
    script.write_text(RECORDER)
    events = tmp_path / "events.jsonl"
    return f"command = [{json.dumps(sys.executable)}, {json.dumps(str(script))}, " + (
        f"{json.dumps(str(events))}]\n"
    ), events


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def kinds(events: list[dict[str, Any]]) -> Counter[tuple[str, str | None]]:
    return Counter((e["event"], e["provider"]) for e in events)


def posted(httpserver: HTTPServer) -> list[dict[str, Any]]:
    return [json.loads(request.get_data()) for request, _ in httpserver.log]


def send(cfg: Path, *args: str) -> int:
    r = mailrelay("--config", str(cfg), "send", *args, "-s", "s", "ops@example.com")
    assert "Traceback" not in r.stderr
    assert "warning" not in r.stderr, r.stderr  # every alert went out
    assert HOOK_PASSWORD not in r.stderr + r.stdout
    return r.returncode


def test_one_event_per_transition_to_a_command_and_an_apprise_url(
    tmp_path: Path, httpserver: HTTPServer, dead_port: int
) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    command, events_file = recorder(tmp_path)
    url = f"json://ops:{HOOK_PASSWORD}@127.0.0.1:{httpserver.port}/hook"
    alerts = command + f"urls = [{json.dumps(url)}]\ntimeout = 20\n"
    with SmtpServer() as b_server, SmtpServer() as a_server:
        # a is down and fails every send (a tiny cooldown keeps it first); b takes the mail
        cfg = configure(
            tmp_path / "c1.toml", [smtp("a", dead_port), smtp("b", b_server.port)], alerts
        )
        assert [send(cfg) for _ in range(4)] == [0, 0, 0, 0]
        assert len(b_server.messages) == 4
        assert kinds(read_events(events_file)) == {("provider_down", "a"): 1}
        # a is back: one provider_up
        cfg = configure(
            tmp_path / "c2.toml", [smtp("a", a_server.port), smtp("b", b_server.port)], alerts
        )
        assert [send(cfg) for _ in range(2)] == [0, 0]
        assert len(a_server.messages) == 2
    assert kinds(read_events(events_file)) == {("provider_down", "a"): 1, ("provider_up", "a"): 1}
    # a total outage: each provider goes down once, and one all_failed (with queued)
    cfg = configure(tmp_path / "c3.toml", [smtp("a", dead_port), smtp("b", dead_port)], alerts)
    assert [send(cfg, "--queue"), send(cfg, "--queue"), send(cfg), send(cfg)] == [0, 0, 75, 75]
    got = read_events(events_file)
    assert kinds(got) == {
        ("provider_down", "a"): 2,
        ("provider_down", "b"): 1,
        ("provider_up", "a"): 1,
        ("all_failed", None): 1,
        ("queued", None): 1,
    }
    for event in got:
        assert set(event) == {"event", "time", "provider", "outcome", "detail", "host"}
        assert event["time"].endswith("Z") and event["host"]
        assert "ops@example.com" not in json.dumps(event)
    down = next(e for e in got if e["event"] == "provider_down")
    assert down["outcome"] == "transient" and "resting until" in down["detail"]
    # the apprise target heard the same events, with basic auth from the URL
    bodies = posted(httpserver)
    assert len(bodies) == len(got)
    titles = Counter(b["title"].split()[1] for b in bodies)
    assert titles == Counter(e["event"] for e in got)
    assert all(b["message"].startswith("event: ") for b in bodies)
    request = httpserver.log[0][0]
    assert request.authorization is not None and request.authorization.password == HOOK_PASSWORD


def test_a_hanging_alert_command_is_cut_at_the_bound(tmp_path: Path, dead_port: int) -> None:
    hang = f'command = [{json.dumps(sys.executable)}, "-c", "import time; time.sleep(120)"]\n'
    with shared_server() as server:
        cfg = configure(
            tmp_path / "c.toml",
            [smtp("a", dead_port), smtp("b", server.port)],
            hang + "timeout = 0.5\n",
        )
        r = mailrelay("--config", str(cfg), "send", "-s", "s", "ops@example.com", timeout=60)
        assert r.returncode == 0, r.stderr
        assert len(server.messages) == 1
    warnings = [line for line in r.stderr.splitlines() if "alert" in line]
    assert len(warnings) == 1, r.stderr
    assert "did not finish within 0.5 s; killed" in warnings[0]


def test_a_failing_alert_command_is_one_warning_and_no_change_of_exit_code(
    tmp_path: Path, dead_port: int
) -> None:
    fail = (
        f'command = [{json.dumps(sys.executable)}, "-c", '
        "\"import sys; sys.stderr.write('pager is down'); sys.exit(3)\"]\n"
    )
    cfg = configure(tmp_path / "c.toml", [smtp("a", dead_port), smtp("b", dead_port)], fail)
    r = mailrelay("--config", str(cfg), "send", "-s", "s", "ops@example.com")
    assert r.returncode == 75
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    # three events (a down, b down, all_failed), one warning
    assert len(warnings) == 1, r.stderr
    assert "exit status 3: pager is down (and 2 more)" in warnings[0]
    r = mailrelay("--config", str(cfg), "send", "--queue", "-s", "s", "ops@example.com")
    assert r.returncode == 0 and "warning" not in r.stderr  # no new transition, no alert


def test_urls_without_apprise_installed_is_one_clear_warning(
    tmp_path: Path, dead_port: int
) -> None:
    blocker = tmp_path / "no-apprise" / "apprise"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('apprise is not installed')\n")
    cfg = configure(
        tmp_path / "c.toml",
        [smtp("a", dead_port)],
        f'urls = ["json://127.0.0.1:{dead_port}/"]\n',
    )
    r = mailrelay(
        "--config",
        str(cfg),
        "send",
        "-s",
        "s",
        "ops@example.com",
        env={"PYTHONPATH": str(blocker.parent)},
    )
    assert r.returncode == 75
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert warnings == [
        "mailrelay: warning: alert: [alerts] urls need apprise, which is not installed "
        "(pip install 'mailrelay[alerts]')"
    ]


def test_expired_messages_are_one_event_per_flush(tmp_path: Path, dead_port: int) -> None:
    command, events_file = recorder(tmp_path)
    cfg = configure(tmp_path / "c.toml", [smtp("a", dead_port)], command)
    for _ in range(3):
        assert send(cfg, "--queue") == 0
    cfg = configure(tmp_path / "c.toml", [smtp("a", dead_port)], command, queue_max_age=0.001)
    r = mailrelay("--config", str(cfg), "queue", "flush", "--now", input=None)
    assert r.returncode == 69, r.stderr
    expired = [e for e in read_events(events_file) if e["event"] == "expired"]
    assert len(expired) == 1
    assert expired[0]["detail"].startswith("3 message(s) moved to failed/")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('command = "page-oncall"\n', "key 'alerts.command': must be a list of non-empty strings"),
        ("timeout = 0\n", "key 'alerts.timeout': must be greater than 0"),
        ("colour = 1\n", "key 'alerts.colour': unknown key; known: command, urls, timeout"),
        ("urls = 3\n", "key 'alerts.urls': must be a list of notification URLs"),
    ],
)
def test_a_bad_alerts_table_is_a_config_error(tmp_path: Path, table: str, message: str) -> None:
    cfg = configure(tmp_path / "c.toml", [smtp("a", 2525)], table)
    r = mailrelay("--config", str(cfg), "providers", input=None)
    assert r.returncode == 78
    assert message in r.stderr and r.stderr.count("\n") == 1


class Meeting(Scripted):
    """Fails only once every engine is inside its send: all planned with "a" healthy."""

    def __init__(self, barrier: threading.Barrier) -> None:
        super().__init__("a", [Outcome.TRANSIENT])
        self.barrier = barrier

    def _deliver(self, message: Any, *, timeout: float) -> Receipt:
        self.barrier.wait(timeout=30)
        return super()._deliver(message, timeout=timeout)


def test_engines_failing_a_provider_at_once_alert_its_transition_once(tmp_path: Path) -> None:
    store = TomlStateStore(tmp_path / "state.toml")
    clock = Clock()
    seen: list[str] = []
    lock = threading.Lock()

    def alert(events: Sequence[Event]) -> None:
        with lock:
            seen.extend(e.event for e in events)

    barrier = threading.Barrier(3)
    engines = [
        Engine(
            [Meeting(barrier), Scripted("b", [Outcome.ACCEPTED])],
            store,
            Policy(order="priority"),
            clock=clock.monotonic,
            now=clock.now,
            alert=alert,
        )
        for _ in range(3)
    ]
    message = build_message(sender="a@example.com", to=["b@example.com"], subject="s", text="t")
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda engine: engine.send(message), engines))
    assert [r.delivered for r in results] == [True, True, True]
    assert store.load().providers["a"].consecutive_failures == 3
    assert seen == ["provider_down"]


def test_a_retried_change_starts_its_transitions_afresh() -> None:
    from mailrelay.state import ProviderState, State

    attempt = Attempt("a", "smtp", Outcome.TRANSIENT, "down")
    t = Transitions([attempt], "failed", Clock().now())
    for _ in range(2):  # an optimistic store may run the change twice; one run is kept
        state = State(providers={"a": ProviderState()})
        t.begin(state)
        state.providers["a"].consecutive_failures = 1
        t.detect(state)
    assert [e.event for e in t.events] == ["provider_down", "all_failed"]


GATED = """\
import os, sys, time
gate, out = sys.argv[1], sys.argv[2]
while not os.path.exists(gate):  # bounded by the dispatcher's timeout, which kills it
    time.sleep(0.01)
with open(out, "a", encoding="utf-8") as f:
    f.write(sys.stdin.read())
"""


def test_the_background_dispatcher_does_not_wait_for_the_alert(tmp_path: Path) -> None:
    from mailrelay.alerts import AlertSettings, BackgroundDispatcher, Dispatcher

    script = tmp_path / "gated.py"
    script.write_text(GATED)
    gate, out = tmp_path / "gate", tmp_path / "out.jsonl"
    warnings: list[str] = []
    settings = AlertSettings(command=[sys.executable, str(script), str(gate), str(out)], timeout=60)
    background = BackgroundDispatcher(Dispatcher(settings, warn=warnings.append))
    event = Event("provider_down", Clock().now(), "a", "transient", "down", "web1")
    background.dispatch([event])  # returns while the command still waits for the gate
    gate.touch()
    background.close(wait=60)
    assert [json.loads(line)["event"] for line in out.read_text().splitlines()] == ["provider_down"]
    assert warnings == []


def test_a_literal_alert_url_in_a_readable_config_draws_the_secret_warning(
    tmp_path: Path,
) -> None:
    cfg = configure(
        tmp_path / "c.toml",
        [smtp("a", 2525)],
        f'urls = ["json://ops:{HOOK_PASSWORD}@127.0.0.1/"]\n',
    )
    cfg.chmod(0o644)
    r = mailrelay("--config", str(cfg), "providers", input=None)
    assert r.returncode == 0, r.stderr
    assert "holds a literal secret and is readable by others" in r.stderr
    assert HOOK_PASSWORD not in r.stdout + r.stderr
