"""`mailrelay metrics`: what the installed command did, read back through prometheus_client's
own parser of the text exposition format."""

from __future__ import annotations

import os
import re
import stat
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mailrelay.metrics import SpoolStats, render
from mailrelay.state import ProviderState, State
from tests.smtpserver import SmtpServer, shared_server
from tests.test_e2e import mailrelay, write_config
from tests.test_queue import SECRET

ROOT = Path(__file__).resolve().parent.parent

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, sorted labels), and every family's type by its name."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def smtp(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "timeout": 3,
        **extra,
    }


def metrics(cfg: Path, *args: str) -> str:
    r = mailrelay("--config", str(cfg), "metrics", *args, input=None)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return r.stdout


def test_counts_after_failover_rejection_and_queueing_match_what_was_done(
    tmp_path: Path, dead_port: int
) -> None:
    spool = tmp_path / "spool"
    with SmtpServer() as live, SmtpServer(fail={"rcpt": "550 5.1.1 no such user"}) as refusing:
        dead = smtp("dead", dead_port, username="ops", password=SECRET)
        cfg = write_config(
            tmp_path / "config.toml",
            [dead, smtp("live", live.port)],
            policy="priority",
            spool_dir=str(spool),
        )
        cfg.chmod(0o600)
        before = time.time()
        for i in range(3):  # the first fails over; then "dead" rests and "live" goes first
            r = mailrelay("--config", str(cfg), "send", "-s", f"m{i}", "ops@example.com")
            assert r.returncode == 0, r.stderr
        assert len(live.messages) == 3
        refusing_cfg = write_config(
            tmp_path / "refusing.toml",
            [smtp("refusing", refusing.port)],
            spool_dir=str(spool),
        )
        r = mailrelay("--config", str(refusing_cfg), "send", "-s", "bad", "nobody@example.com")
        assert r.returncode == 65, r.stderr
    dead_only = write_config(tmp_path / "dead.toml", [dead], spool_dir=str(spool))
    dead_only.chmod(0o600)
    for i in range(2):
        r = mailrelay("--config", str(dead_only), "send", "--queue", "-s", f"q{i}", "a@example.com")
        assert r.returncode == 0, r.stderr
    r = mailrelay("--config", str(dead_only), "send", "-s", "lost", "a@example.com")
    assert r.returncode == 75, r.stderr

    text = metrics(cfg)
    samples, types = parse(text)
    assert types["mailrelay_send_attempts"] == "counter"
    assert types["mailrelay_messages"] == "counter"
    attempts = "mailrelay_send_attempts_total"
    # dead: once in the failover, then twice more when it was the only provider
    assert value(samples, attempts, provider="dead", outcome="transient") == 1 + 3
    assert value(samples, attempts, provider="dead", outcome="accepted") == 0
    assert value(samples, attempts, provider="live", outcome="accepted") == 3
    assert value(samples, attempts, provider="live", outcome="transient") == 0
    assert value(samples, attempts, provider="refusing", outcome="permanent") == 1
    messages = "mailrelay_messages_total"
    assert value(samples, messages, result="sent") == 3
    assert value(samples, messages, result="rejected") == 1
    assert value(samples, messages, result="queued") == 2
    assert value(samples, messages, result="failed") == 1
    cooldown = value(samples, "mailrelay_provider_cooldown_seconds", provider="dead")
    assert 0 < cooldown <= 8 * 60  # 60 s doubling: the fourth failure rests 8 min
    assert value(samples, "mailrelay_provider_cooldown_seconds", provider="live") == 0
    assert value(samples, "mailrelay_provider_consecutive_failures", provider="dead") == 4
    assert value(samples, "mailrelay_provider_consecutive_failures", provider="live") == 0
    last = value(samples, "mailrelay_provider_last_success_timestamp_seconds", provider="live")
    assert before - 1 <= last <= time.time() + 1
    assert ("mailrelay_provider_last_success_timestamp_seconds", (("provider", "dead"),)) not in (
        samples
    )
    assert value(samples, "mailrelay_spool_messages", folder="queued") == 2
    for folder in ("held", "failed", "corrupt"):
        assert value(samples, "mailrelay_spool_messages", folder=folder) == 0
    assert value(samples, "mailrelay_spool_oldest_age_seconds") >= 0
    from mailrelay import __version__

    assert value(samples, "mailrelay_build_info", version=__version__) == 1
    assert SECRET not in text
    for address in ("ops@example.com", "nobody@example.com", "example.com", "m0", "bad"):
        assert address not in text  # no recipient, domain or subject anywhere


def test_a_flush_counts_a_delivered_message_as_sent_and_a_retry_not_at_all(
    tmp_path: Path, dead_port: int
) -> None:
    spool = tmp_path / "spool"
    dead = write_config(tmp_path / "dead.toml", [smtp("relay", dead_port)], spool_dir=str(spool))
    for i in range(2):
        r = mailrelay("--config", str(dead), "send", "--queue", "-s", f"q{i}", "a@example.com")
        assert r.returncode == 0, r.stderr
    r = mailrelay("--config", str(dead), "queue", "flush", "--now", input=None)
    assert r.returncode == 75, r.stderr  # both tried again, both still queued
    samples, _ = parse(metrics(dead))
    assert value(samples, "mailrelay_messages_total", result="queued") == 2
    assert (
        value(samples, "mailrelay_send_attempts_total", provider="relay", outcome="transient") == 4
    )
    with shared_server() as server:
        live = write_config(
            tmp_path / "live.toml", [smtp("relay", server.port)], spool_dir=str(spool)
        )
        r = mailrelay("--config", str(live), "queue", "flush", "--now", input=None)
        assert r.returncode == 0, r.stderr
        assert len(server.messages) == 2
    samples, _ = parse(metrics(live))
    assert value(samples, "mailrelay_messages_total", result="queued") == 2
    assert value(samples, "mailrelay_messages_total", result="sent") == 2
    assert value(samples, "mailrelay_messages_total", result="failed") == 0
    assert value(samples, "mailrelay_spool_messages", folder="queued") == 0


def test_output_is_written_atomically_0644_and_leaves_no_temp_file(
    tmp_path: Path, dead_port: int
) -> None:
    spool = tmp_path / "spool"
    cfg = write_config(tmp_path / "config.toml", [smtp("relay", dead_port)], spool_dir=str(spool))
    r = mailrelay("--config", str(cfg), "send", "--queue", "-s", "x", "a@example.com")
    assert r.returncode == 0, r.stderr
    failed = spool / "failed"
    failed.mkdir()
    (failed / "20261122T091403.123456Z-0123456789.json").write_text("{}")
    held = spool / "held"  # sendmail keeps what it could not read the config for here
    held.mkdir()
    (held / "20261122T091403.123456Z-0123456789.eml").write_text("From: a\n\nx\n")
    (spool / ".tmp-half-written").write_text("")  # a temp file is no message
    collector = tmp_path / "textfile"
    collector.mkdir()
    target = collector / "mailrelay.prom"
    target.write_text("old\n")
    os.chmod(target, 0o600)
    out = metrics(cfg, "--output", str(target))
    assert out == ""
    assert sorted(p.name for p in collector.iterdir()) == ["mailrelay.prom"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    samples, _ = parse(target.read_text())
    assert value(samples, "mailrelay_spool_messages", folder="queued") == 1
    assert value(samples, "mailrelay_spool_messages", folder="failed") == 1
    assert value(samples, "mailrelay_spool_messages", folder="held") == 1
    assert value(samples, "mailrelay_messages_total", result="queued") == 1


def test_output_into_a_missing_folder_is_one_line_and_exit_73(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "config.toml", [])
    r = mailrelay(
        "--config", str(cfg), "metrics", "--output", str(tmp_path / "no" / "m.prom"), input=None
    )
    assert r.returncode == 73
    assert r.stderr.count("\n") == 1 and "cannot write" in r.stderr
    assert "Traceback" not in r.stderr


def test_oldest_queued_age_and_cooldown_are_measured_from_now() -> None:
    now = datetime(2026, 11, 22, 9, 0, tzinfo=timezone.utc)
    state = State(
        providers={
            "a": ProviderState(cooldown_until=now + timedelta(seconds=90), consecutive_failures=2),
            "b": ProviderState(cooldown_until=now - timedelta(seconds=5)),  # rested already
        }
    )
    spool = SpoolStats(counts={"queued": 3}, oldest=now - timedelta(minutes=30))
    samples, _ = parse(render(state, spool, now=now))
    assert value(samples, "mailrelay_provider_cooldown_seconds", provider="a") == 90
    assert value(samples, "mailrelay_provider_cooldown_seconds", provider="b") == 0
    assert value(samples, "mailrelay_spool_oldest_age_seconds") == 1800
    assert value(samples, "mailrelay_spool_messages", folder="queued") == 3


def test_label_values_are_escaped() -> None:
    odd = 'we"ird\\name\nx'
    state = State(providers={odd: ProviderState(outcomes={"accepted": 2})})
    samples, _ = parse(render(state, None, providers=["configured"]))
    assert value(samples, "mailrelay_send_attempts_total", provider=odd, outcome="accepted") == 2
    # a configured provider that never sent still has its series, at 0
    assert (
        value(samples, "mailrelay_send_attempts_total", provider="configured", outcome="accepted")
        == 0
    )


def test_every_metric_named_in_the_monitoring_docs_is_exposed(tmp_path: Path) -> None:
    # a budget (rate_limit) so mailrelay_provider_budget_remaining has a series
    cfg = write_config(tmp_path / "config.toml", [{**smtp("relay", 2525), "rate_limit": "10/s"}])
    state = tmp_path / "state.toml"
    state.write_text("schema = 1\n[providers.relay]\nlast_success = 2026-11-22T09:00:00Z\n")
    r = mailrelay("--config", str(cfg), "--state", str(state), "metrics", input=None)
    assert r.returncode == 0, r.stderr
    exposed = {name for (name, _labels) in parse(r.stdout)[0]}
    docs = (ROOT / "docs" / "monitoring.md").read_text()
    # serve's own families have their section (checked by tests/test_serve_metrics.py)
    before, serve, after = docs.partition("\n## mailrelay serve\n")
    assert serve, "docs/monitoring.md has no 'mailrelay serve' section"
    docs = before + "\n" + after.partition("\n## ")[2]
    named = set(re.findall(r"\bmailrelay_[a-z_]+[a-z]", docs))
    assert named, "docs/monitoring.md names no metric"
    assert named - exposed == set()


def test_a_batch_counts_each_message_once(tmp_path: Path, dead_port: int) -> None:
    import json

    lines = [
        json.dumps({"from": "a@example.com", "to": f"u{i}@example.com", "subject": f"b{i}"})
        for i in range(5)
    ]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    with shared_server() as server:
        cfg = write_config(
            tmp_path / "config.toml",
            [smtp("dead", dead_port), smtp("live", server.port)],
            policy="priority",
            spool_dir=str(tmp_path / "spool"),
        )
        r = mailrelay("--config", str(cfg), "send", "--batch", str(batch), input=None)
        assert r.returncode == 0, r.stderr
        assert len(server.messages) == 5
    samples, _ = parse(metrics(cfg))
    assert value(samples, "mailrelay_messages_total", result="sent") == 5
    accepted = value(samples, "mailrelay_send_attempts_total", provider="live", outcome="accepted")
    assert accepted == 5
    # the dead relay rests after its first failure, but 8 workers may all have planned first
    transient = value(
        samples, "mailrelay_send_attempts_total", provider="dead", outcome="transient"
    )
    assert 1 <= transient <= 5
