"""A loopback stand-in for sns.<region>.amazonaws.com: HTTPS with a trustme certificate,
serving an SNS signing certificate made here and counting SubscribeURL visits; and SNS
messages signed with that certificate's key the way SNS signs them."""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

CERT_PATH = "/SimpleNotificationService-0123456789abcdef.pem"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
_NOW = datetime.datetime.now(datetime.timezone.utc)
SIGNING_PEM = (
    x509.CertificateBuilder()
    .subject_name(_NAME)
    .issuer_name(_NAME)
    .public_key(_KEY.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(_NOW - datetime.timedelta(days=1))
    .not_valid_after(_NOW + datetime.timedelta(days=30))
    .sign(_KEY, hashes.SHA256())
    .public_bytes(serialization.Encoding.PEM)
)


class StandIn:
    def __init__(self, host: str) -> None:
        self.host = host  # "127.0.0.1:PORT"
        self.confirmations = 0
        self.ca_file = ""


@contextmanager
def sns_stand_in(tmp: Path) -> Iterator[StandIn]:
    ca = trustme.CA()
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    stand_in = StandIn("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == CERT_PATH:
                body = SIGNING_PEM
            elif self.path.startswith("/confirm"):
                stand_in.confirmations += 1
                body = b"<ConfirmSubscriptionResponse/>"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stand_in.host = f"127.0.0.1:{server.server_address[1]}"
    stand_in.ca_file = str(ca_file)
    try:
        yield stand_in
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


_FIELDS = {
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


def sns_message(
    host: str,
    kind: str = "Notification",
    *,
    message: Any = None,
    topic: str = TOPIC,
    at: datetime.datetime | None = None,
    version: str = "1",
    cert_url: str | None = None,
) -> bytes:
    when = at or datetime.datetime.now(datetime.timezone.utc)
    envelope: dict[str, Any] = {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "SignatureVersion": version,
        "SigningCertURL": cert_url or f"https://{host}{CERT_PATH}",
    }
    if kind == "SubscriptionConfirmation":
        envelope["Token"] = uuid.uuid4().hex
        envelope["SubscribeURL"] = f"https://{host}/confirm?Token={envelope['Token']}"
        envelope["Message"] = "You have chosen to subscribe to the topic."
    signed = "".join(f"{k}\n{envelope[k]}\n" for k in _FIELDS[kind] if k in envelope)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = _KEY.sign(signed.encode(), padding.PKCS1v15(), digest)
    envelope["Signature"] = base64.b64encode(signature).decode()
    return json.dumps(envelope).encode()


def ses_bounce(recipients: list[str]) -> dict[str, Any]:
    """An SES event-publishing Bounce (docs.aws.amazon.com/ses event-publishing examples)."""
    return {
        "eventType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": r, "status": "5.1.1"} for r in recipients],
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        },
        "mail": {
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "messageId": "010001750b5b3d6e-3a5e0b8c-aaaa-bbbb-cccc-ddddeeeeffff-000000",
            "destination": recipients,
        },
    }
