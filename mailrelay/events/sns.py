"""Amazon SNS messages (how SES publishes events): the RSA signature checked with the
certificate at SigningCertURL, which must be on a pinned host, `sns.<region>.amazonaws.com`
(docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html), the TopicArn on
the provider's `sns_topic_arns` list, and SubscriptionConfirmation followed only for those.

Tests need a stand-in for the pinned host: `MAILRELAY_TEST_SNS_HOSTS` (TEST ONLY) adds
"host:port" entries, and it accepts nothing but loopback IP literals (127.0.0.0/8, ::1), so
it can never point the check at another machine. The certificate is fetched over HTTPS
with the system's trust store (SSL_CERT_FILE is honoured), at most 64 KiB, and cached.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import os
import re
import ssl
import threading
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlsplit

from mailrelay.events.model import as_dict, check_age, forged, malformed, utc_from_iso
from mailrelay.events.settings import WebhookSettings

TEST_HOSTS_ENV = "MAILRELAY_TEST_SNS_HOSTS"
_PINNED = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_CERT_PATH = re.compile(r"^/SimpleNotificationService-[A-Za-z0-9]+\.pem$")
MAX_CERT = 64 * 1024
TIMEOUT = 5.0

# the fields signed, in order, by message type (absent ones are left out)
_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED["UnsubscribeConfirmation"] = _SIGNED["SubscriptionConfirmation"]

_cache: dict[str, bytes] = {}
_lock = threading.Lock()


def test_hosts(env: Mapping[str, str] | None = None) -> set[str]:
    """The loopback host:port stand-ins of MAILRELAY_TEST_SNS_HOSTS (test only)."""
    raw = (os.environ if env is None else env).get(TEST_HOSTS_ENV, "")
    hosts = set()
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        host = urlsplit("//" + entry).hostname or ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise forged(f"{TEST_HOSTS_ENV} may name loopback addresses only, not {entry!r}")
        hosts.add(entry.lower())
    return hosts


def check_amazon_url(url: str, what: str) -> None:
    """Refuse a URL that is not https on the pinned SNS host (or a test stand-in)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    pinned = parts.port is None and bool(_PINNED.match(host))
    stand_in = parts.netloc.lower() in test_hosts()
    if parts.scheme != "https" or not (pinned or stand_in) or parts.username:
        raise forged(f"{what} is not on an sns.<region>.amazonaws.com host: {url[:120]!r}")


def fetch(url: str, limit: int = MAX_CERT) -> bytes:
    """GET an https URL already checked by check_amazon_url: its body (at most `limit`)."""
    parts = urlsplit(url)
    connection = http.client.HTTPSConnection(
        parts.hostname or "",
        parts.port,
        timeout=TIMEOUT,
        context=ssl.create_default_context(),
    )
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = connection.getresponse()
        body = response.read(limit + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise forged(f"cannot fetch {url[:120]}: {exc}") from None
    finally:
        connection.close()
    if response.status != 200 or len(body) > limit:
        raise forged(f"cannot fetch {url[:120]}: HTTP {response.status}")
    return body


def _certificate(url: str) -> bytes:
    check_amazon_url(url, "SigningCertURL")
    if not _CERT_PATH.match(urlsplit(url).path):
        raise forged(f"SigningCertURL is not an SNS certificate path: {url[:120]!r}")
    with _lock:
        cached = _cache.get(url)
    if cached is None:
        cached = fetch(url)
        with _lock:
            _cache[url] = cached
    return cached


def verify(envelope: Mapping[str, object], settings: WebhookSettings, now: datetime) -> None:
    """Refuse an SNS message not from an allowed topic, not signed by SNS, or stale."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    kind = str(envelope.get("Type", ""))
    if kind not in _SIGNED:
        raise malformed(f"not an SNS message type mailrelay reads: {kind[:40]!r}")
    if envelope.get("TopicArn") not in settings.topic_arns:
        raise forged(f"TopicArn {str(envelope.get('TopicArn'))[:200]!r} is not in sns_topic_arns")
    version = str(envelope.get("SignatureVersion", ""))
    digest = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(version)
    if digest is None:
        raise forged(f"unknown SNS SignatureVersion {version[:10]!r}")
    signed = "".join(
        f"{key}\n{envelope[key]}\n" for key in _SIGNED[kind] if envelope.get(key) is not None
    )
    try:
        signature = base64.b64decode(str(envelope.get("Signature", "")), validate=True)
        cert = x509.load_pem_x509_certificate(_certificate(str(envelope.get("SigningCertURL"))))
        public = cert.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise forged("the SNS certificate's key is not RSA")
        public.verify(signature, signed.encode("utf-8"), padding.PKCS1v15(), digest)
    except (ValueError, binascii.Error, InvalidSignature):
        raise forged("the SNS signature does not match the certificate") from None
    check_age(utc_from_iso(envelope.get("Timestamp")), now)


def confirm(envelope: Mapping[str, object]) -> None:
    """Follow the SubscribeURL of a verified SubscriptionConfirmation (a pinned host too)."""
    url = str(envelope.get("SubscribeURL", ""))
    check_amazon_url(url, "SubscribeURL")
    fetch(url)


def envelope_of(body: object) -> Mapping[str, object]:
    return as_dict(body, "the SNS message")
