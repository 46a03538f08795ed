"""`mailrelay serve` seen from outside: schemathesis against its /openapi.json, and its
pages in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
import requests

from tests.test_serve import TOKEN, Server, config, outbox

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    one = Server(tmp_path, config(tmp_path, [outbox(tmp_path)]))
    yield one
    one.stop()


def test_schemathesis_every_operation_as_documented(server: Server, tmp_path: Path) -> None:
    from mailrelay.serve.openapi import documented_routes

    # schemathesis leaves out the operation that served it the document (GET /openapi.json)
    # unless told to include it, so it reads the document from a file, as the service served
    # it, and tests every operation at --url
    served = requests.get(f"{server.url}/openapi.json", timeout=60)
    assert served.status_code == 200
    document = tmp_path / "openapi.json"
    document.write_bytes(served.content)
    st = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [str(st), "run", str(document), "--url", server.url,
         "-H", f"Authorization: Bearer {TOKEN}",
         "--max-examples", "10", "--checks", CHECKS, "--no-color", "--seed", "1",
         "--report", "junit", "--report-dir", str(tmp_path / "report")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks"},
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:]
    assert "passed" in result.stdout
    tested = set()
    for report in (tmp_path / "report").glob("*.xml"):
        for case in ElementTree.parse(report).iter("testcase"):
            method, _, path = case.get("name", "").partition(" ")
            if method != "Stateful":  # the links phase (send → GET /v1/messages/{message_id})
                tested.add((method, path))
    assert tested == documented_routes()  # every documented operation was exercised


def dump_dom(url: str, tmp: Path) -> str:
    if not os.path.exists(CHROMIUM):
        pytest.skip("no chromium here (apt-get install chromium): the pages are not checked")
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp / 'chromium'}", "--virtual-time-budget=5000",
         "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_status_page_in_a_browser(server: Server, tmp_path: Path) -> None:
    assert server.post().status_code == 200
    url = server.url.replace("http://", f"http://user:{TOKEN}@") + "/"
    dom = dump_dom(url, tmp_path)
    assert '<td class="name">box</td>' in dom
    assert 'class="health healthy"' in dom
    assert 'id="spool">0<' in dom


def test_api_page_lists_the_operations(server: Server, tmp_path: Path) -> None:
    dom = dump_dom(server.url + "/api", tmp_path)
    for op in ("sendMessage", "sendRawMessage", "listProviders", "probeProviders", "health"):
        assert f'data-operation="{op}"' in dom, op  # made by the page's script
    assert "/v1/messages/raw" in dom
