"""SparkPost specifics the contract test does not cover: regions, the cc/bcc recipe, the
200-with-every-recipient-rejected reply, 420 and 7001, the account health check.
Its URL forms are checked in test_contract.py."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from mailrelay.errors import ConfigError
from mailrelay.message import Address, Attachment
from mailrelay.providers.base import Outcome, ProviderError
from mailrelay.providers.sparkpost import SparkpostProvider
from tests.esp.conftest import build_provider, message_factory
from tests.esp.fake_sparkpost import API_KEY, FakeSparkpost
from tests.esp.fakebase import json_response, server_base_url


def build(values: dict[str, Any]) -> SparkpostProvider:
    return build_provider(SparkpostProvider, values, name="sp")


def provider(fake: FakeSparkpost, server: HTTPServer, **extra: Any) -> SparkpostProvider:
    return build({**fake.config(server_base_url(server)), **extra})


message = message_factory(subject="s", text="t\n")


def test_regions_pick_the_documented_hosts() -> None:
    assert build({"api_key": "k"}).base_url == "https://api.sparkpost.com/api/v1"
    eu = build({"api_key": "k", "region": "eu"})
    assert eu.base_url == "https://api.eu.sparkpost.com/api/v1"
    assert eu.describe()["region"] == "eu"
    # base_url replaces scheme and host and keeps the documented /api/v1 root
    proxied = build({"api_key": "k", "region": "eu", "base_url": "http://127.0.0.1:9"})
    assert proxied.base_url == "http://127.0.0.1:9/api/v1"
    with pytest.raises(ConfigError, match="region"):
        build({"api_key": "k", "region": "ap"})


def test_request_shape_auth_cc_bcc_and_sandbox(fake: FakeSparkpost, httpserver: HTTPServer) -> None:
    p = provider(fake, httpserver, sandbox=True)
    msg = message(
        to=[Address("a@example.com", "Ann"), Address("b@example.com", "Smith, Bob")],
        cc=[Address("c@example.com", "Cy")],
        bcc=[Address("d@example.com")],
        reply_to=[Address("r@example.com"), Address("s@example.com", "Sue")],
        headers=[("X-Ticket", "42")],
        attachments=[
            Attachment("r.csv", "text/csv", b"x" * 200),
            Attachment("logo.png", "image/png", b"\x89PNG", inline=True, content_id="logo"),
        ],
        tags=["deploy", "web1"],
        metadata={"run": "7"},
    )
    receipt = p.send(msg, timeout=5)
    assert receipt.message_id == fake.last_message_id
    request = fake.requests[-1]
    assert request.headers["Authorization"] == API_KEY  # the raw key, no scheme
    body = fake.sent[-1]
    to_header = 'Ann <a@example.com>, "Smith, Bob" <b@example.com>'
    assert [r["address"]["email"] for r in body["recipients"]] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    ]
    assert {r["address"]["header_to"] for r in body["recipients"]} == {to_header}
    assert body["content"]["headers"] == {"X-Ticket": "42", "CC": "Cy <c@example.com>"}
    assert body["content"]["reply_to"] == "r@example.com, Sue <s@example.com>"
    assert body["content"]["from"] == {"email": "ops@example.com", "name": "Ops"}
    assert all(r["tags"] == ["deploy", "web1"] for r in body["recipients"])
    assert body["metadata"] == {"run": "7"}
    assert body["options"] == {"sandbox": True}
    (att,) = body["content"]["attachments"]
    assert "\n" not in att["data"] and base64.b64decode(att["data"]) == b"x" * 200
    assert body["content"]["inline_images"][0]["name"] == "logo"  # the Content-ID
    got = fake.normalize(body)
    assert got["bcc"] == ["d@example.com"] and got["cc"] == ["Cy <c@example.com>"]


def test_no_sandbox_option_unless_configured(fake: FakeSparkpost, httpserver: HTTPServer) -> None:
    provider(fake, httpserver).send(message(), timeout=5)
    assert "options" not in fake.sent[-1]


def test_every_recipient_rejected_in_a_200_is_not_success(
    fake: FakeSparkpost, httpserver: HTTPServer
) -> None:
    p = provider(fake, httpserver)
    with pytest.raises(ProviderError) as info:
        p.send(message(to=[Address("not-an-address")]), timeout=5)
    err = info.value
    assert err.outcome is Outcome.PERMANENT and err.status == 200
    assert "all 1 recipient(s) rejected" in err.message
    assert "Invalid email address: not-an-address (code 1300)" in err.message
    assert fake.sent == []


def test_some_recipients_rejected_is_accepted_with_detail(
    fake: FakeSparkpost, httpserver: HTTPServer
) -> None:
    fake.fail_next(
        json_response(
            200,
            {
                "results": {
                    "total_rejected_recipients": 1,
                    "total_accepted_recipients": 1,
                    "id": "9",
                }
            },
        )
    )
    receipt = provider(fake, httpserver).send(message(), timeout=5)
    assert receipt.message_id == "9" and "1 recipient(s) rejected" in receipt.detail


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (420, "2101", Outcome.PROVIDER),  # sending limit: nothing is sent
        (400, "7001", Outcome.PROVIDER),  # unverified sending domain, whatever the status
        (422, "1400", Outcome.PERMANENT),
        (400, "1300", Outcome.PERMANENT),
        (413, "", Outcome.REJECTED),  # 20 MB here; another provider may take it
        (415, "", Outcome.REJECTED),
        (503, "", Outcome.TRANSIENT),
    ],
)
def test_classification_by_status_and_code(
    fake: FakeSparkpost, httpserver: HTTPServer, status: int, code: str, outcome: Outcome
) -> None:
    error = {"message": "words", "description": "more words"}
    if code:
        error["code"] = code
    fake.fail_next(json_response(status, {"errors": [error]}))
    with pytest.raises(ProviderError) as info:
        provider(fake, httpserver).send(message(), timeout=5)
    assert info.value.outcome is outcome
    expected = "words: more words" + (f" (code {code})" if code else "")
    assert (
        info.value.message == f"HTTP {status} from {httpserver.host}:{httpserver.port}: {expected}"
    )


def test_the_fake_refuses_what_sparkpost_refuses(
    fake: FakeSparkpost, httpserver: HTTPServer
) -> None:
    bad = provider(fake, httpserver, api_key="wrong-key")
    with pytest.raises(ProviderError) as info:
        bad.send(message(), timeout=5)
    assert info.value.outcome is Outcome.PROVIDER and "Unauthorized." in info.value.message
    assert "wrong-key" not in str(info.value)
    # a header SparkPost builds itself may not be set by hand
    with pytest.raises(ProviderError) as info:
        provider(fake, httpserver).send(message(headers=[("From", "x@y.z")]), timeout=5)
    assert info.value.outcome is Outcome.PERMANENT and "From" in info.value.message


def test_health_check_reads_the_account(fake: FakeSparkpost, httpserver: HTTPServer) -> None:
    p = provider(fake, httpserver)
    health = p.check(timeout=5)
    assert health.ok and "active" in health.detail
    assert fake.requests[-1].method == "GET" and fake.requests[-1].path == "/api/v1/account"
    fake.account_status = "suspended"
    health = p.check(timeout=5)
    assert not health.ok and health.outcome is Outcome.PROVIDER and "suspended" in health.detail
    # 403 = the key authenticates but may not read the account (401 is the bad key)
    fake.fail_next(json_response(403, {"errors": [{"message": "Forbidden."}]}))
    assert p.check(timeout=5).ok
    assert fake.sent == []
