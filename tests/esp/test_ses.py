"""Amazon SES v2 specifics: raw MIME mapping, SigV4, regions, error types, GetAccount."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from mailrelay.errors import ConfigError
from mailrelay.message import Address, Attachment, Message
from mailrelay.providers.base import Outcome
from mailrelay.providers.ses import SesProvider
from tests.esp.conftest import build_provider, message_factory, send_error_factory
from tests.esp.fake_ses import AKID, CONFIG_SET, SECRET, SESSION_TOKEN, FakeSes, ses_error
from tests.esp.fakebase import server_base_url

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))


base = server_base_url  # called as a function in this module


def build(cfg: dict[str, Any]) -> SesProvider:
    return build_provider(SesProvider, cfg, name=cfg.get("name", "ses"))


def provider_for(fake: FakeSes, httpserver: HTTPServer, **changes: Any) -> SesProvider:
    cfg = fake.config(base(httpserver))
    cfg.update(changes)
    return build({k: v for k, v in cfg.items() if v is not None})


simple = message_factory(
    sender=Address("ops@example.com", "Ops Team"),
    to=[Address("alice@example.org")],
    subject="Hello",
    text="Hi there\n",
)


def full() -> Message:
    return Message(
        sender=Address("ops@example.com", "Ops, Team"),
        to=[Address("alice@example.org", "Alice"), Address("bob@example.org")],
        cc=[Address("carol@example.org", "Carol")],
        bcc=[Address("dave@example.org", "Dave")],
        reply_to=[Address("help@example.com", "Help")],
        subject="Größe: report",
        text="Plain body\n",
        html='<p>HTML body <img src="cid:logo@x"></p>',
        headers=[("X-Campaign", "spring"), ("List-Unsubscribe", "<mailto:u@example.com>")],
        attachments=[
            Attachment("report.csv", "text/csv", b"a,b\n1,2\n"),
            Attachment("logo.png", "image/png", PNG, inline=True, content_id="logo@x"),
        ],
        tags=["welcome", "drip step 2"],
        metadata={"user_id": "42", "plan-tier": "pro_plus"},
    )


send_error = send_error_factory(simple)


# --- mapping -----------------------------------------------------------------------------


def test_full_message_travels_as_raw_mime(fake: FakeSes, httpserver: HTTPServer) -> None:
    receipt = provider_for(fake, httpserver).send(full(), timeout=5)
    assert receipt.message_id == fake.last_message_id
    payload = fake.sent[-1]
    assert set(payload) == {
        "FromEmailAddress",
        "Destination",
        "Content",
        "EmailTags",
        "ConfigurationSetName",
    }
    assert set(payload["Content"]) == {"Raw"}
    assert payload["FromEmailAddress"] == '"Ops, Team" <ops@example.com>'  # the name stays
    assert payload["Destination"] == {
        "ToAddresses": ["alice@example.org", "bob@example.org"],
        "CcAddresses": ["carol@example.org"],
        "BccAddresses": ["dave@example.org"],
    }
    assert payload["EmailTags"] == [
        {"Name": "user_id", "Value": "42"},
        {"Name": "plan-tier", "Value": "pro_plus"},
    ]
    assert payload["ConfigurationSetName"] == CONFIG_SET
    raw = base64.b64decode(payload["Content"]["Raw"]["Data"])
    assert b"\r\n" in raw and b"dave@example.org" not in raw  # Bcc only in the envelope
    got = fake.normalize(payload)
    assert got["from"] == '"Ops, Team" <ops@example.com>'
    assert got["to"] == ["Alice <alice@example.org>", "bob@example.org"]
    assert got["cc"] == ["Carol <carol@example.org>"]
    assert got["bcc"] == ["dave@example.org"]
    assert got["reply_to"] == ["Help <help@example.com>"]
    assert got["subject"] == "Größe: report"
    assert got["text"] == "Plain body\n"
    assert got["html"] == '<p>HTML body <img src="cid:logo@x"></p>'
    assert got["headers"] == {
        "X-Campaign": "spring",
        "List-Unsubscribe": "<mailto:u@example.com>",
    }
    assert got["attachments"] == [("report.csv", "text/csv", b"a,b\n1,2\n")]
    assert got["inline"] == [("logo@x", "image/png", PNG)]
    assert got["tags"] == ["welcome", "drip step 2"]  # X-Tag headers: any characters
    assert got["metadata"] == {"user_id": "42", "plan-tier": "pro_plus"}


def test_from_keeps_its_display_name_encoded_when_not_ascii(
    fake: FakeSes, httpserver: HTTPServer
) -> None:
    provider = provider_for(fake, httpserver)
    provider.send(simple(sender=Address("sender@example.com", "Sender")), timeout=5)
    assert fake.sent[-1]["FromEmailAddress"] == "Sender <sender@example.com>"
    provider.send(simple(sender=Address("sender@example.com", "Zoë Ops")), timeout=5)
    assert fake.sent[-1]["FromEmailAddress"] == "=?utf-8?q?Zo=C3=AB_Ops?= <sender@example.com>"


def test_recipient_listed_once_and_idn_domain_punycoded(
    fake: FakeSes, httpserver: HTTPServer
) -> None:
    msg = simple(
        to=[Address("alice@example.org"), Address("bob@bücher.example")],
        bcc=[Address("ALICE@example.org")],
    )
    provider_for(fake, httpserver, configuration_set=None).send(msg, timeout=5)
    payload = fake.sent[-1]
    assert payload["Destination"] == {
        "ToAddresses": ["alice@example.org", "bob@xn--bcher-kva.example"]
    }
    assert "ConfigurationSetName" not in payload and "EmailTags" not in payload


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (simple(metadata={"order id": "7"}), "metadata 'order id' has a key outside"),
        (simple(metadata={"order": "7 8"}), "metadata 'order' has a value outside"),
        (simple(metadata={"order": ""}), "metadata 'order' has a value outside"),
        (
            simple(to=[Address(f"u{i}@example.org") for i in range(51)]),
            "at most 50 recipients",
        ),
        (simple(to=[Address("jürgen@example.org")]), "only ASCII before the @"),
    ],
)
def test_what_ses_cannot_carry_is_rejected_before_any_request(
    fake: FakeSes, httpserver: HTTPServer, message: Message, words: str
) -> None:
    err = send_error(provider_for(fake, httpserver), message)
    assert err.outcome is Outcome.REJECTED
    assert words in err.message
    assert fake.requests == []


# --- SigV4 -------------------------------------------------------------------------------


def test_request_is_sigv4_signed_for_ses_in_the_region(
    fake: FakeSes, httpserver: HTTPServer
) -> None:
    provider_for(fake, httpserver).send(simple(), timeout=5)
    assert fake.auth_failures == []
    request = fake.requests[-1]
    auth = request.headers["Authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")
    scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
    assert scope[2:] == ["eu-west-1", "ses", "aws4_request"]
    assert scope[1] == request.headers["x-amz-date"][:8]
    signed = auth.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    assert {"host", "x-amz-date"} <= set(signed)
    assert "x-amz-security-token" not in request.headers
    assert request.headers["Content-Type"] == "application/json"


def test_session_token_is_sent_and_signed(httpserver: HTTPServer) -> None:
    fake = FakeSes(session_token=SESSION_TOKEN)
    fake.install(httpserver)
    provider_for(fake, httpserver).send(simple(), timeout=5)
    assert fake.auth_failures == []
    request = fake.requests[-1]
    assert request.headers["x-amz-security-token"] == SESSION_TOKEN
    assert "x-amz-security-token" in request.headers["Authorization"]
    assert provider_for(fake, httpserver).describe()["credentials"].startswith("temporary")
    # without the token the service does not know the credentials
    err = send_error(provider_for(fake, httpserver, session_token=None))
    assert err.outcome is Outcome.PROVIDER
    assert "UnrecognizedClientException" in err.message
    assert SESSION_TOKEN not in str(err)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"secret_access_key": "not-the-secret"}, "SignatureDoesNotMatch"),
        ({"access_key_id": "AKIAUNKNOWN000000000"}, "security token included in the request"),
        ({"region": "us-east-1"}, "scoped to a valid region"),
    ],
)
def test_wrong_credentials_or_region_are_provider_errors(
    fake: FakeSes, httpserver: HTTPServer, changes: dict[str, str], words: str
) -> None:
    err = send_error(provider_for(fake, httpserver, **changes))
    assert err.outcome is Outcome.PROVIDER and err.status == 403
    assert words in err.message
    assert fake.sent == []
    for secret in (SECRET, "not-the-secret"):
        assert secret not in str(err)


# --- config and regions --------------------------------------------------------------------


@pytest.mark.parametrize("region", ["eu-west-1", "ap-southeast-2", "us-gov-west-1"])
def test_region_picks_the_regional_host(region: str) -> None:
    provider = build(
        {"type": "ses", "access_key_id": AKID, "secret_access_key": SECRET, "region": region}
    )
    assert provider.base_url == f"https://email.{region}.amazonaws.com"
    assert provider.describe()["region"] == region


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"access_key_id": AKID, "secret_access_key": SECRET}, "region"),
        ({"access_key_id": AKID, "secret_access_key": SECRET, "region": "mars-1"}, "region"),
        ({"secret_access_key": SECRET, "region": "eu-west-1"}, "access_key_id"),
        ({"access_key_id": AKID, "region": "eu-west-1"}, "secret_access_key"),
        (
            {"access_key_id": AKID, "secret_access_key": SECRET, "region": "eu-west-1", "x": 1},
            "x",
        ),
    ],
)
def test_config_errors_name_the_key(values: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build({"type": "ses", **values})
    assert info.value.key == key
    assert SECRET not in str(info.value)


def test_sandbox_is_not_a_ses_key() -> None:
    with pytest.raises(ConfigError) as info:
        build(
            {
                "type": "ses",
                "access_key_id": AKID,
                "secret_access_key": SECRET,
                "region": "eu-west-1",
                "sandbox": True,
            }
        )
    assert info.value.key == "sandbox"


# --- classification ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (429, "TooManyRequestsException", Outcome.TRANSIENT),
        (400, "LimitExceededException", Outcome.TRANSIENT),
        (400, "Throttling", Outcome.TRANSIENT),
        (500, "InternalServiceErrorException", Outcome.TRANSIENT),
        (400, "MailFromDomainNotVerifiedException", Outcome.PROVIDER),
        (400, "AccountSuspendedException", Outcome.PROVIDER),
        (400, "SendingPausedException", Outcome.PROVIDER),
        (404, "NotFoundException", Outcome.PROVIDER),
        (403, "AccessDeniedException", Outcome.PROVIDER),
        (400, "ExpiredTokenException", Outcome.PROVIDER),
        (400, "MessageRejected", Outcome.PERMANENT),
        (400, "BadRequestException", Outcome.PERMANENT),
        (409, "SomethingNewException", Outcome.REJECTED),
    ],
)
def test_error_types(
    fake: FakeSes, httpserver: HTTPServer, status: int, code: str, outcome: Outcome
) -> None:
    fake.fail_next(ses_error(status, code, "the words"))
    err = send_error(provider_for(fake, httpserver))
    assert err.outcome is outcome
    assert err.status == status
    host = base(httpserver).split("//", 1)[1]
    assert err.message == f"HTTP {status} from {host}: {code}: the words"


def test_error_type_from_body_when_header_missing(fake: FakeSes, httpserver: HTTPServer) -> None:
    body = {"__type": "com.amazonaws.sesv2#TooManyRequestsException", "message": "slow down"}
    fake.fail_next(Response(json.dumps(body), status=400, content_type="application/json"))
    err = send_error(provider_for(fake, httpserver))
    assert err.outcome is Outcome.TRANSIENT
    assert "TooManyRequestsException: slow down" in err.message


def test_message_rejected_for_an_unverified_identity_is_the_account(
    fake: FakeSes, httpserver: HTTPServer
) -> None:
    fake.verified = {"example.net", "someone@example.com"}
    err = send_error(provider_for(fake, httpserver))
    assert err.outcome is Outcome.PROVIDER
    assert "Email address is not verified" in err.message
    assert "ops@example.com" in err.message
    # a verified domain identity covers every address at that domain
    ok = provider_for(fake, httpserver).send(simple(sender=Address("a@example.net")), timeout=5)
    assert ok.message_id == fake.last_message_id


def test_unknown_configuration_set_is_the_account(fake: FakeSes, httpserver: HTTPServer) -> None:
    err = send_error(provider_for(fake, httpserver, configuration_set="nope"))
    assert err.outcome is Outcome.PROVIDER and err.status == 404
    assert "Configuration set <nope> does not exist" in err.message


def test_retry_after_header_is_honoured(fake: FakeSes, httpserver: HTTPServer) -> None:
    fake.fail_next(
        ses_error(429, "TooManyRequestsException", "Maximum sending rate exceeded.",
                  {"Retry-After": "3"})
    )  # fmt: skip
    err = send_error(provider_for(fake, httpserver))
    assert err.outcome is Outcome.TRANSIENT and err.retry_after == 3


def test_success_without_message_id_is_ambiguous(fake: FakeSes, httpserver: HTTPServer) -> None:
    fake.fail_next(Response("{}", status=200, content_type="application/json"))
    err = send_error(provider_for(fake, httpserver))
    assert err.outcome is Outcome.AMBIGUOUS


# --- health --------------------------------------------------------------------------------


def test_check_reports_account_state(fake: FakeSes, httpserver: HTTPServer) -> None:
    health = provider_for(fake, httpserver).check(timeout=5)
    assert health.ok, health
    assert health.detail == (
        "eu-west-1: sending enabled, production access, 0/50000 in 24 h, max 14/s"
    )
    assert fake.sent == []
    assert fake.requests[-1].method == "GET"
    assert fake.requests[-1].path == "/v2/email/account"
    assert fake.auth_failures == []


def test_check_in_the_account_sandbox_is_healthy_but_says_so(
    fake: FakeSes, httpserver: HTTPServer
) -> None:
    fake.account.update(
        ProductionAccessEnabled=False,
        SendQuota={"Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 3.0},
    )
    health = provider_for(fake, httpserver).check(timeout=5)
    assert health.ok
    assert "sandbox: only verified recipients" in health.detail
    assert "3/200 in 24 h" in health.detail


def test_check_unlimited_quota(fake: FakeSes, httpserver: HTTPServer) -> None:
    fake.account["SendQuota"] = {"Max24HourSend": -1.0, "MaxSendRate": 500.0}
    assert provider_for(fake, httpserver).check(timeout=5).ok


@pytest.mark.parametrize(
    ("account", "words"),
    [
        ({"SendingEnabled": False, "EnforcementStatus": "SHUTDOWN"}, "enforcement status SHUTDOWN"),
        (
            {"SendQuota": {"Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 200.0}},
            "daily sending quota used up (200/200)",
        ),
    ],
)
def test_check_unhealthy_account(
    fake: FakeSes, httpserver: HTTPServer, account: dict[str, Any], words: str
) -> None:
    fake.account.update(account)
    health = provider_for(fake, httpserver).check(timeout=5)
    assert not health.ok
    assert health.outcome is Outcome.PROVIDER
    assert words in health.detail


def test_check_with_bad_secret_is_unhealthy(fake: FakeSes, httpserver: HTTPServer) -> None:
    health = provider_for(fake, httpserver, secret_access_key="wrong-secret").check(timeout=5)
    assert not health.ok and health.outcome is Outcome.PROVIDER
    assert "SignatureDoesNotMatch" in health.detail
    assert "wrong-secret" not in health.detail


def test_describe_shows_no_secret(fake: FakeSes, httpserver: HTTPServer) -> None:
    info = provider_for(fake, httpserver).describe()
    assert info["configuration_set"] == CONFIG_SET
    text = repr(info) + repr(provider_for(fake, httpserver).__dict__)
    for secret in (AKID, SECRET):
        assert secret not in text


# --- the fake itself refuses what SES refuses ------------------------------------------------


def test_fake_refuses_unsigned_and_tampered_requests(fake: FakeSes, httpserver: HTTPServer) -> None:
    import requests
    from requests_aws4auth import AWS4Auth

    url = base(httpserver) + "/v2/email/outbound-emails"
    unsigned = requests.post(url, json={"Content": {}}, timeout=5)
    assert unsigned.status_code == 403
    assert unsigned.headers["x-amzn-ErrorType"].startswith("MissingAuthenticationToken")

    auth = AWS4Auth(AKID, SECRET, "eu-west-1", "ses")
    prepared = requests.Request("POST", url, json={"Content": {}}, auth=auth).prepare()
    prepared.body = b'{"Content": {"Raw": {}}}'  # changed after signing
    prepared.headers["Content-Length"] = str(len(prepared.body))
    with requests.Session() as session:
        tampered = session.send(prepared, timeout=5)
    assert tampered.status_code == 403
    assert tampered.headers["x-amzn-ErrorType"].startswith("SignatureDoesNotMatch")
    assert fake.sent == []


def test_fake_validates_the_body_against_the_sesv2_model(
    fake: FakeSes, httpserver: HTTPServer
) -> None:
    import requests
    from requests_aws4auth import AWS4Auth

    url = base(httpserver) + "/v2/email/outbound-emails"
    auth = AWS4Auth(AKID, SECRET, "eu-west-1", "ses")
    resp = requests.post(url, json={"Content": {"Raw": {"Data": 5}}, "Colour": 1}, auth=auth,
                         timeout=5)  # fmt: skip
    assert resp.status_code == 400
    assert resp.headers["x-amzn-ErrorType"].startswith("BadRequestException")
    assert "unknown member 'Colour'" in resp.json()["message"]
    assert "Content.Raw.Data" in resp.json()["message"]


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"])
def test_a_connection_reset_after_the_request_is_ambiguous_as_elsewhere(answer: bytes) -> None:
    import socket
    import struct
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def reset_after_reading() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)  # the request arrived: it may have been taken
            conn.sendall(answer)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    worker = threading.Thread(target=reset_after_reading, daemon=True)
    worker.start()
    try:
        provider = build(
            {
                "access_key_id": AKID,
                "secret_access_key": SECRET,
                "region": "eu-west-1",
                "base_url": f"http://127.0.0.1:{port}",
            }
        )
        err = send_error(provider, simple())
    finally:
        worker.join(timeout=10)
        listener.close()
    assert err.outcome is Outcome.AMBIGUOUS, err
    # no provider failure's 600 s cooldown in the words (the port, which may hold "600", aside)
    assert err.retry_after is None
    assert "600" not in err.message.replace(f"127.0.0.1:{port}", "")
