"""`/metrics` of `mailrelay serve` under gunicorn with two workers: the families of
`mailrelay metrics` once, and serve's own (requests, attempt durations) summed over both
workers; the private multiprocess folder; metric writes that never cost a request."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from mailrelay.serve.liveness import owner
from tests.smtpserver import SmtpServer
from tests.test_e2e import mailrelay_command
from tests.test_import_cost import loaded_after
from tests.test_serve import Server, config, dead_smtp, outbox, outbox_messages, smtp

FOLDER_GLOB = "mailrelay-serve-metrics-*"
POST_LINE = re.compile(r'^mailrelay\[(\d+)\]: \S+ "POST /v1/messages" (\d{3}) ', re.M)
MAX_POSTS = 120  # two workers on one listening socket: both answer long before this
BUCKETS = ["0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "20.0", "30.0", "60.0"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[Samples, list[str]]:
    samples: Samples = {}
    names = []
    for family in text_string_to_metric_families(text):
        names.append(family.name)
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, names


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The TMPDIR the server inherits, so its metrics folder can be found (and seen gone);
    this process's own tempfile.tempdir is already fixed by pytest's tmp_path."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


def queue_one(tmp: Path, cfg: Path) -> None:
    """One message waiting in the spool (not due for an hour), as `send --queue` leaves it."""
    from mailrelay.app import App
    from mailrelay.config import load_settings
    from mailrelay.message import build_message

    app = App(config=None, state=str(tmp / "data" / "state.toml"), providers=(), debug=False,
              warn=lambda _: None, settings=load_settings(cfg))  # fmt: skip
    queue = app.queueing()
    message = build_message(sender="cron@example.com", to=["q@example.com"], subject="q")
    queue.spool.add(message, [], retry=queue.retry, max_retry=queue.max_retry)


def post(server: Server, _: object = None) -> requests.Response:
    return server.post()  # requests.post: a new connection each time


def test_metrics_sum_both_workers(tmp_path: Path, private_tmp: Path) -> None:
    cfg = config(
        tmp_path,
        [dead_smtp(), outbox(tmp_path)],
        spool_dir=str(tmp_path / "spool"),
        queue_retry=3600,
    )
    queue_one(tmp_path, cfg)
    server = Server(tmp_path, cfg, "--workers", "2")
    try:
        (folder,) = private_tmp.glob(FOLDER_GLOB)
        assert folder.stat().st_mode & 0o777 == 0o700
        answers: list[requests.Response] = []
        with ThreadPoolExecutor(4) as pool:
            while len(answers) < MAX_POSTS:
                answers += pool.map(lambda _: post(server), range(4))
                pids = {pid for pid, _code in POST_LINE.findall(server.log.read_text())}
                if len(pids) == 2:
                    break
        lines = POST_LINE.findall(server.log.read_text())
        assert len({pid for pid, _ in lines}) == 2, "one worker answered every request"
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert len(lines) == len(answers)  # one log line per request
        made = len(answers)
        tried = Counter(a["provider"] for r in answers for a in r.json()["attempts"] if a["tried"])
        assert tried["box"] == made and tried["dead"] >= 1

        page = server.get("/metrics")
        assert page.status_code == 200
        assert page.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        samples, names = parse(page.text)
        assert len(names) == len(set(names))  # the state's families once, not per worker

        # serve's own, summed over both workers
        requests_total = {
            dict(labels)["code"]: v
            for (name, labels), v in samples.items()
            if name == "mailrelay_http_requests_total" and dict(labels)["route"] == "/v1/messages"
        }
        assert requests_total == {"200": made}
        for provider in ("dead", "box"):
            count = value(samples, "mailrelay_send_duration_seconds_count", provider=provider)
            assert count == tried[provider]
            buckets = [
                dict(labels)["le"]
                for (name, labels), _v in samples.items()
                if name == "mailrelay_send_duration_seconds_bucket"
                and dict(labels)["provider"] == provider
            ]
            assert sorted(buckets, key=float) == [*BUCKETS, "+Inf"]
            inf = value(
                samples, "mailrelay_send_duration_seconds_bucket", provider=provider, le="+Inf"
            )
            assert inf == count
            assert value(samples, "mailrelay_send_duration_seconds_sum", provider=provider) > 0

        # the state's and the spool's, as `mailrelay metrics` has them: read from the state
        # file, where each worker folds its counters every second (cooldowns at once)
        attempts = "mailrelay_send_attempts_total"
        deadline = time.monotonic() + 20
        sent_key = ("mailrelay_messages_total", frozenset({("result", "sent")}))
        while samples.get(sent_key, 0) < made:
            assert time.monotonic() < deadline, "the workers' counters never reached the state"
            time.sleep(0.2)
            samples, _ = parse(server.get("/metrics").text)
        assert value(samples, attempts, provider="box", outcome="accepted") == made
        assert value(samples, attempts, provider="dead", outcome="transient") == tried["dead"]
        assert value(samples, attempts, provider="dead", outcome="accepted") == 0
        assert value(samples, "mailrelay_messages_total", result="sent") == made
        assert value(samples, "mailrelay_provider_consecutive_failures", provider="dead") >= 1
        assert value(samples, "mailrelay_provider_cooldown_seconds", provider="dead") > 0
        assert value(samples, "mailrelay_spool_messages", folder="queued") == 1
        assert value(samples, "mailrelay_spool_messages", folder="failed") == 0
        assert value(samples, "mailrelay_spool_oldest_age_seconds") > 0
        assert ("mailrelay_build_info", frozenset({("version", _version())})) in samples

        # each worker wrote its own files in the private folder
        assert len(list(folder.glob("counter_*.db"))) == 2
    finally:
        assert server.stop() == 0
    assert list(private_tmp.glob(FOLDER_GLOB)) == []
    assert len(outbox_messages(tmp_path)) == made
    assert "metrics failed" not in server.log.read_text()


def _version() -> str:
    from mailrelay import __version__

    return __version__


def test_sigterm_with_a_send_in_flight_answers_200_and_removes_the_folder(
    tmp_path: Path, private_tmp: Path
) -> None:
    with SmtpServer(data_delay=2.0) as relay:
        server = Server(tmp_path, config(tmp_path, [smtp(relay)]), "--workers", "2")
        (folder,) = private_tmp.glob(FOLDER_GLOB)
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(server.post)
            deadline = time.monotonic() + 20
            while relay.mail_commands == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert relay.mail_commands == 1  # the send is in flight
            assert folder.is_dir()
            server.proc.send_signal(signal.SIGTERM)
            answer = future.result(timeout=60)
        assert answer.status_code == 200, answer.text
        assert server.stop() == 0
    assert not folder.exists()
    log = server.log.read_text()
    assert '"POST /v1/messages" 200' in log
    assert "metrics failed" not in log and "Traceback" not in log


def test_a_start_removes_the_folder_a_killed_master_left(tmp_path: Path, private_tmp: Path) -> None:
    first = Server(tmp_path, config(tmp_path, [outbox(tmp_path)]))
    (left,) = private_tmp.glob(FOLDER_GLOB)
    assert first.post().status_code == 200  # its worker wrote files there
    for pid in worker_pids(first.proc.pid):
        os.kill(pid, signal.SIGKILL)
    first.proc.kill()  # SIGKILL: no arbiter left to remove the folder
    first.proc.wait(timeout=30)
    assert left.is_dir() and (left / "owner.json").stat().st_mode & 0o777 == 0o600
    # a folder whose owner still runs (this test) and a stranger's file are kept
    alive = private_tmp / "mailrelay-serve-metrics-alive"
    alive.mkdir(mode=0o700)
    (alive / "owner.json").write_text(json.dumps(owner()))
    making = private_tmp / "mailrelay-serve-metrics-making"  # no owner file yet
    making.mkdir(mode=0o700)
    second = Server(tmp_path, config(tmp_path, [outbox(tmp_path)]))
    try:
        assert not left.exists()
        assert alive.is_dir() and making.is_dir()
        assert len(list(private_tmp.glob(FOLDER_GLOB))) == 3  # the two kept, its own
    finally:
        assert second.stop() == 0


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


GUARD = """
import os, shutil, sys
folder = sys.argv[1]
os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
from mailrelay.engine import Attempt, Outcome
from mailrelay.serve.metrics import ServeMetrics
metrics = ServeMetrics(["pm"])
metrics.attempt(None, Attempt("pm", "postmark", Outcome.ACCEPTED, "ok", latency=0.2))
shutil.rmtree(folder)  # what the master does at a stop
metrics.count_request("/v1/messages", 200)  # a new file: cannot be made any more
metrics.attempt(None, Attempt("pm", "postmark", Outcome.ACCEPTED, "ok", latency=0.3))
metrics.attempt(None, Attempt("other", "smtp", Outcome.TRANSIENT, "no", latency=0.1))
print(repr(metrics.render()))
"""


def test_metric_writes_without_their_folder_cost_nothing_but_one_warning(tmp_path: Path) -> None:
    folder = tmp_path / "mp"
    folder.mkdir(mode=0o700)
    run = subprocess.run(
        [sys.executable, "-c", GUARD, str(folder)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "''"  # nothing to read: serve's half of the page is empty
    warnings = run.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("mailrelay: warning: serve's metrics")


def test_without_the_folder_a_worker_counts_its_own() -> None:
    """An app made outside `mailrelay serve` (no folder named): this process's counts."""
    from mailrelay.engine import Attempt, Outcome
    from mailrelay.serve.metrics import ServeMetrics

    metrics = ServeMetrics(["pm"])
    metrics.count_request("/v1/messages", 200)
    metrics.count_request("/v1/messages", 200)
    metrics.count_request("unmatched", 404)
    attempt = Attempt("pm", "postmark", Outcome.ACCEPTED, "ok", latency=0.07)
    metrics.attempt(None, attempt)
    skipped = Attempt("pm", "postmark", Outcome.TRANSIENT, "not tried", tried=False)
    metrics.attempt(None, skipped)
    samples, _ = parse(metrics.render())
    total = "mailrelay_http_requests_total"
    assert value(samples, total, route="/v1/messages", code="200") == 2
    assert value(samples, total, route="unmatched", code="404") == 1
    assert value(samples, "mailrelay_send_duration_seconds_count", provider="pm") == 1
    assert value(samples, "mailrelay_send_duration_seconds_bucket", provider="pm", le="0.05") == 0
    assert value(samples, "mailrelay_send_duration_seconds_bucket", provider="pm", le="0.1") == 1


def test_the_master_does_not_import_prometheus_client() -> None:
    """It must first be imported in a worker, after the folder is named: it picks its
    storage then. `send` never imports it (tests/test_import_cost.py)."""
    code = "import mailrelay.cli.serve, mailrelay.serve.app, mailrelay.serve.server"
    assert loaded_after(code, ("prometheus_client",)) == []


def test_docs_name_the_serve_families_and_only_metrics_it_has() -> None:
    from mailrelay.engine import Attempt, Outcome
    from mailrelay.metrics import SpoolStats
    from mailrelay.serve.metrics import ServeMetrics
    from mailrelay.state import State

    root = Path(__file__).resolve().parents[1]
    docs = (root / "docs" / "monitoring.md").read_text()
    section = docs.split("\n## mailrelay serve\n", 1)[1].split("\n## ", 1)[0]
    metrics = ServeMetrics(["pm"])
    metrics.count_request("/v1/messages", 200)
    metrics.attempt(None, Attempt("pm", "postmark", Outcome.ACCEPTED, "ok", latency=0.1))
    metrics.count_event("pm", "bounced")
    metrics.count_refused("pm", "forged")
    page = metrics.page(State(), SpoolStats(), ["pm"])
    own = {family.name for family in text_string_to_metric_families(metrics.render())}
    assert own == {
        "mailrelay_http_requests",
        "mailrelay_send_duration_seconds",
        "mailrelay_events",
        "mailrelay_webhooks_refused",
    }
    for name in (
        "mailrelay_http_requests_total",
        "mailrelay_send_duration_seconds",
        "mailrelay_events_total",
        "mailrelay_webhooks_refused_total",
    ):
        assert f"| `{name}` |" in section, name  # a row of the section's table
    families = list(text_string_to_metric_families(page))
    exposed = {f.name for f in families} | {s.name for f in families for s in f.samples}
    named = set(re.findall(r"\bmailrelay_[a-z_]+[a-z]", section))
    assert named - exposed == set()


def test_serve_without_prometheus_client_says_what_to_install(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()  # an interpreter on which `import prometheus_client` fails
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['prometheus_client'] = None\n")
    cfg = config(tmp_path, [outbox(tmp_path)])
    env = {**os.environ, "PYTHONPATH": str(hide)}
    run = subprocess.run(
        [mailrelay_command(), "--config", str(cfg), "serve", "--bind", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 78, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "not installed: prometheus-client" in run.stderr
    assert "pip install 'mailrelay[serve]'" in run.stderr


FORK_IN_BLOCK = """
import os, sys
from pathlib import Path
from mailrelay.serve.server import metrics_folder
with metrics_folder() as folder:
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # the worker's way out: SystemExit through the master's frames
    os.waitpid(pid, 0)
    print("kept" if Path(folder).is_dir() else "removed")
print("gone" if not Path(folder).exists() else "left")
"""


def test_a_worker_leaving_the_folder_block_does_not_remove_it(tmp_path: Path) -> None:
    """gunicorn forks its workers inside `metrics_folder` and a worker ends by SystemExit
    through the same frames: the first worker to stop must not take the folder from one
    still answering (only the process that made it removes it, after the arbiter)."""
    private = tmp_path / "tmp"
    private.mkdir()
    env = {**os.environ, "TMPDIR": str(private)}
    done = subprocess.run(
        [sys.executable, "-c", FORK_IN_BLOCK], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["kept", "gone"]
    assert list(private.iterdir()) == []
