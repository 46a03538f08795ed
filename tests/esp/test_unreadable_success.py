"""A 2xx whose body is not the provider's JSON (a captive proxy's HTML page, say) is not a
success: it is `ambiguous`, reported, and handled by on_ambiguous. Through the installed
command, against the fakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from tests.esp.fake_mailgun import FakeMailgun
from tests.esp.fake_postmark import FakePostmark
from tests.esp.fake_sendgrid import FakeSendgrid
from tests.esp.fakebase import FakeESP, server_base_url
from tests.smtpserver import SmtpServer, shared_server
from tests.test_e2e import mailrelay, write_config

PORTAL = "<html><body><h1>Welcome to Hotel Wi-Fi</h1>Please log in.</body></html>"
FAKES = [FakePostmark, FakeMailgun, FakeSendgrid]


def portal_page() -> Response:
    return Response(PORTAL, status=200, content_type="text/html")


def behind_a_portal(
    fake: FakeESP, httpserver: HTTPServer, relay: SmtpServer, path: Path, **defaults: str
) -> Path:
    """A config: the fake (whose next answer is the portal page), then an SMTP relay."""
    fake.install(httpserver)
    fake.fail_next(portal_page())
    smtp = {"type": "smtp", "host": "127.0.0.1", "port": relay.port, "security": "none"}
    return write_config(path, [fake.config(server_base_url(httpserver)), smtp], **defaults)


@pytest.mark.parametrize("fake_class", FAKES, ids=lambda c: c.__name__)
def test_a_200_with_an_html_body_is_ambiguous_and_fails_over(
    tmp_path: Path, httpserver: HTTPServer, fake_class: type[FakeESP]
) -> None:
    with shared_server() as relay:
        cfg = behind_a_portal(fake_class(), httpserver, relay, tmp_path / "c.toml")
        r = mailrelay("--config", str(cfg), "send", "--json", "-s", "s", "a@example.com")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        first = doc["attempts"][0]
        assert first["outcome"] == "ambiguous" and first["status"] == 200
        assert "not" in first["detail"] and "text/html" in first["detail"]
        assert doc["provider"] == "smtp" and len(relay.messages) == 1  # on_ambiguous = failover


def test_on_ambiguous_stop_reports_it_and_sends_no_copy(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    with shared_server() as relay:
        cfg = behind_a_portal(
            FakePostmark(), httpserver, relay, tmp_path / "c.toml", on_ambiguous="stop"
        )
        r = mailrelay("--config", str(cfg), "send", "-s", "s", "a@example.com")
        assert r.returncode == 75
        assert "ambiguous" in r.stderr and "text/html" in r.stderr
        assert relay.messages == []
