"""`mailrelay serve` seen from outside: schemathesis against its /openapi.json, and its
pages in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import os
import re
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


def dump_dom(url: str, tmp: Path, budget_ms: int = 5000) -> str:
    """The page's DOM after its scripts ran, in a chromium that can reach loopback only: no
    name resolves but 127.0.0.1's, and everything else goes to a proxy that is not there.
    The budget of virtual time stays under the status page's refresh (10 s): a reload in
    the middle would leave nothing to dump."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("no chromium here (apt-get install chromium): the pages are not checked")
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp / 'chromium'}",
         f"--virtual-time-budget={budget_ms}",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         "--proxy-server=http://127.0.0.1:9",  # loopback itself bypasses a proxy
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


def test_api_page_is_swagger_ui_with_one_block_per_operation(
    server: Server, tmp_path: Path
) -> None:
    from mailrelay.serve.openapi import openapi_document

    dom = dump_dom(server.url + "/api", tmp_path, budget_ms=8000)
    assert 'class="swagger-ui"' in dom  # Swagger UI itself rendered, not a fallback
    operations = [
        op["operationId"] for item in openapi_document()["paths"].values() for op in item.values()
    ]
    blocks = re.findall(r'<div class="opblock [^"]*" id="operations-\w+-(\w+)"', dom)
    assert sorted(blocks) == sorted(operations)  # one block per operation, none missing
    assert "/v1/messages/raw" in dom
    assert "Authorize" in dom  # the bearer token can be given for "Try it out"


def test_api_assets_are_served_by_the_service(server: Server) -> None:
    from mailrelay.serve.apipage import ASSETS

    page = requests.get(server.url + "/api", timeout=30).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert all(a.startswith(ASSETS + "/") or a == "/openapi.json" for a in assets), assets
    for asset in assets:
        got = requests.get(server.url + asset, timeout=30)  # public: no token, like /api
        assert got.status_code == 200, asset
        if asset.endswith(".css"):  # a style that fetched a font or image elsewhere
            assert not re.search(r"url\(\s*['\"]?(https?:)?//", got.text), asset
            assert "@import" not in got.text, asset
    bundle = requests.get(f"{server.url}{ASSETS}/swagger-ui-bundle.js", timeout=30)
    assert bundle.headers["Content-Type"].startswith(("text/javascript", "application/javascript"))
