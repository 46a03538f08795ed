"""The status page of `mailrelay serve` (`/`): the CLI's words and colours, the last error with
its time (none once a success is newer), a probe on load for a provider with no history, the
queue in the words of `queue list`, and a chart of each provider's last hour. A real serve on
loopback; the pages in a real browser are in tests/test_serve_pages.py."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

from mailrelay.serve.chart import chart_svg, per_minute
from mailrelay.serve.pages import health_of, last_error
from tests.smtpserver import shared_server
from tests.test_e2e import mailrelay
from tests.test_serve import AUTH, Server, config, dead_smtp, outbox, smtp

NOW = datetime(2026, 12, 4, 20, 30, 10, tzinfo=timezone.utc)


def row(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "cooling": False,
        "sent": 0,
        "failed": 0,
        "consecutive_failures": 0,
        "last_success": None,
        "last_failure": None,
        "last_error": None,
    }
    return {**base, **kw}


def test_health_words_and_colours_are_the_clis() -> None:
    assert health_of(row(cooling=True, failed=1)) == ("cooling", "cooling")
    failing = row(failed=2, consecutive_failures=2, last_outcome="provider")
    assert health_of(failing) == ("failing", "FAILING (provider)")
    assert health_of(row(sent=3)) == ("healthy", "healthy")
    assert health_of(row()) == ("unknown", "unknown")
    assert health_of(row(), {"healthy": False, "outcome": "transient"})[1] == "FAILING (transient)"


def test_the_last_error_has_its_time_and_goes_once_a_success_is_newer() -> None:
    old = NOW - timedelta(minutes=5)
    failed = row(last_error="transient: 127.0.0.1:25: connection refused", last_failure=old)
    assert "connection refused" in last_error(failed)
    assert "2026-12-04 20:25:10Z" in last_error(failed)
    assert last_error({**failed, "last_success": NOW}) == "-"
    assert "connection refused" in last_error({**failed, "last_success": old - timedelta(1)})


def test_the_chart_has_the_hour_by_minute_and_outcome() -> None:
    minute = int(NOW.timestamp()) // 60
    minutes = {
        f"{minute}:accepted": 3,
        f"{minute - 2}:transient": 1,
        f"{minute - 59}:accepted": 1,
        f"{minute - 60}:accepted": 9,  # an hour ago: not shown
    }
    hour = per_minute(minutes, NOW)
    assert len(hour) == 60
    assert (
        hour[-1] == {"accepted": 3} and hour[-3] == {"transient": 1} and hour[0] == {"accepted": 1}
    )
    svg = chart_svg("relay", minutes, NOW)
    assert "last hour: 4 accepted, 1 transient" in svg
    assert svg.count("<rect x=") == 3


def page(server: Server) -> str:
    r = requests.get(server.url + "/", headers=AUTH, timeout=60)
    assert r.status_code == 200
    return r.text


def provider_row(html: str, name: str) -> str:
    match = re.search(rf"<tr><td>\d+</td><td class=name>{name}</td>.*?</tr>", html, re.S)
    assert match, html
    return match.group(0)


def test_a_failover_on_the_page(tmp_path: Path) -> None:
    server = Server(tmp_path, config(tmp_path, [dead_smtp(), outbox(tmp_path)]))
    try:
        assert server.post().status_code == 200
        html = page(server)
    finally:
        server.stop()
    dead, box = provider_row(html, "dead"), provider_row(html, "box")
    assert 'class="health cooling">cooling<' in dead  # yellow, as the CLI's cooldown
    assert "connection refused" in dead and re.search(r"\(\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\)", dead)
    assert 'class="health healthy">healthy<' in box and "<td class=error>-</td>" in box
    assert "last hour: 1 transient" in dead and "last hour: 1 accepted" in box


def test_a_provider_with_no_history_is_probed_on_load_once(tmp_path: Path) -> None:
    with shared_server() as relay:
        cfg = config(tmp_path, [smtp(relay), dead_smtp()])
        server = Server(tmp_path, cfg)
        try:
            html = page(server)
            assert 'class="health healthy">healthy<' in provider_row(html, "relay")
            assert 'class="health failing">FAILING (transient)<' in provider_row(html, "dead")
            probes = sorted((server.state.parent / "page-probes").glob("*.json"))
            assert len(probes) == 2
            stamps = [p.stat().st_mtime_ns for p in probes]
            assert "unknown" not in provider_row(page(server), "relay")
            assert [p.stat().st_mtime_ns for p in probes] == stamps  # not probed again
        finally:
            server.stop()


def test_the_queue_in_the_words_of_queue_list(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    cfg = config(tmp_path, [dead_smtp()], on_failure="queue", spool_dir=str(spool))
    server = Server(tmp_path, cfg)
    try:
        assert server.post().status_code == 202
        html = page(server)
    finally:
        server.stop()
    listing = mailrelay("--config", str(cfg), "queue", "list", input=None).stdout.splitlines()
    ident = listing[1].split()[0]
    assert "<strong id=queued>1</strong> queued" in html and "<strong id=held>0</strong>" in html
    cells = re.findall(r"<td>(.*?)</td>", re.search(r"<table id=queue>.*?</table>", html).group(0))
    assert cells[0] == ident
    same = [c.replace("&#x27;", "'") for i, c in enumerate(cells) if i != 2]  # 2: the age
    assert all(cell in listing[1] for cell in same), (
        cells,
        listing,
    )
    header = re.findall(r"<th>(.*?)</th>", re.search(r"<table id=queue>.*?</table>", html).group(0))
    assert " ".join(header) == " ".join(listing[0].split())
