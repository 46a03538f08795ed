"""The SES adapter against moto's real server (SES v2 SendEmail on loopback).

moto does not check SigV4 signatures and has no GetAccount (docs.getmoto.org, sesv2), so what this
adds to the fake is a second, independent reading of the request: moto's own routing
(found by the signing name `ses` in the credential scope), its base64/MIME decoding and its
identity check.
"""

from __future__ import annotations

import base64
import email
from collections.abc import Iterator
from email import policy as email_policy
from email.utils import parseaddr
from typing import Any

import pytest
import requests

from mailrelay.message import Address, Attachment, Message
from mailrelay.providers import registry
from mailrelay.providers.base import Outcome, ProviderError
from mailrelay.providers.options import ProviderSpec
from mailrelay.providers.ses import SesProvider

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

REGION = "eu-west-1"
AKID = "AKIAMOTOTEST00000001"
SECRET = "moto/secret+key0000000000000000000000000"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        client = boto3.client(
            "sesv2",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=AKID,
            aws_secret_access_key=SECRET,
        )
        client.create_email_identity(EmailIdentity="example.com")
        yield url
    finally:
        server.stop()


def provider(url: str, **extra: Any) -> SesProvider:
    cfg = {
        "type": "ses",
        "access_key_id": AKID,
        "secret_access_key": SECRET,
        "region": REGION,
        "base_url": url,
        **extra,
    }
    p = registry.build(ProviderSpec("ses", "ses", cfg, "test"))
    assert isinstance(p, SesProvider)
    return p


def sent_messages(url: str) -> list[dict[str, Any]]:
    """moto's SES backend's sent raw messages, from its model dump."""
    data = requests.get(f"{url}/moto-api/data.json", timeout=5).json()
    messages: list[dict[str, Any]] = data["ses"]["RawMessage"]
    return messages


def test_send_arrives_in_moto(moto_url: str) -> None:
    message = Message(
        sender=Address("ops@example.com", "Ops"),
        to=[Address("alice@example.org", "Alice")],
        cc=[Address("carol@example.org")],
        bcc=[Address("dave@example.org")],
        reply_to=[Address("help@example.com")],
        subject="moto check",
        text="Plain body\n",
        html="<p>HTML body</p>\n",
        headers=[("X-Campaign", "spring")],
        attachments=[Attachment("a.txt", "text/plain", b"attached\n")],
        tags=["welcome"],
        metadata={"user_id": "42"},
    )
    receipt = provider(moto_url).send(message, timeout=10)
    assert receipt.message_id
    (stored,) = [m for m in sent_messages(moto_url) if m["id"] == receipt.message_id]
    # moto adds the To/Cc header addresses again to Destination; every one must be there
    assert {"alice@example.org", "carol@example.org", "dave@example.org"} <= {
        parseaddr(d)[1] for d in stored["destinations"]
    }
    mime = email.message_from_string(stored["raw_data"], policy=email_policy.default)
    assert mime["Subject"] == "moto check"
    assert mime["From"] == "Ops <ops@example.com>"
    assert mime["Reply-To"] == "help@example.com"
    assert mime["X-Campaign"] == "spring"
    assert mime["X-Tag"] == "welcome"
    assert mime["Bcc"] is None
    names = [p.get_filename() for p in mime.walk() if p.get_filename()]
    assert names == ["a.txt"]


def test_unverified_sender_is_the_account_not_the_message(moto_url: str) -> None:
    message = Message(
        sender=Address("ops@unverified.example.net"),
        to=[Address("alice@example.org")],
        subject="nope",
        text="x\n",
    )
    before = len(sent_messages(moto_url))
    with pytest.raises(ProviderError) as info:
        provider(moto_url).send(message, timeout=10)
    err = info.value
    # moto: MessageRejected "Did not have authority to send from email ..."; real SES says
    # "Email address is not verified": both are this account's setup, so fail over
    assert err.outcome is Outcome.PROVIDER
    assert err.status == 400
    assert "MessageRejected" in err.message
    assert "ops@unverified.example.net" in err.message
    assert SECRET not in str(err)
    assert len(sent_messages(moto_url)) == before


def test_raw_payload_is_what_moto_decodes(moto_url: str) -> None:
    """The base64 we send decodes (in moto) to exactly our MIME bytes."""
    message = Message(
        sender=Address("ops@example.com"), to=[Address("a@example.org")], subject="s", text="t\n"
    )
    req = provider(moto_url).build_send(message)
    receipt = provider(moto_url).send(message, timeout=10)
    (stored,) = [m for m in sent_messages(moto_url) if m["id"] == receipt.message_id]
    sent_raw = base64.b64decode(req.json["Content"]["Raw"]["Data"]).decode()
    assert stored["raw_data"] == sent_raw


def test_check_against_moto_lacks_get_account(moto_url: str) -> None:
    # moto has no GetAccount route: the probe fails cleanly, sending nothing
    before = len(sent_messages(moto_url))
    health = provider(moto_url).check(timeout=10)
    assert not health.ok
    assert health.outcome is not None
    assert len(sent_messages(moto_url)) == before
