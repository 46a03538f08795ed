"""A fake Amazon SES v2 endpoint: SigV4 checked for real, SendEmail and GetAccount.

What it checks, like the service does:
- the SigV4 `Authorization` header: `AWS4-HMAC-SHA256 Credential=<AKID>/<date>/<region>/ses/
  aws4_request, SignedHeaders=...(host and x-amz-date among them), Signature=...`, and the
  signature itself, recomputed here from the request with the secret key (stdlib hmac, not
  the library the adapter uses); `x-amz-security-token` when a session token is configured.
- the body of SendEmail against the request shape in botocore's sesv2 model (types, required
  members, enums, patterns, no unknown members), then SES's own rules: exactly one content
  type, Raw data that is base64 MIME with a From, valid ASCII envelope addresses, at most 50
  recipients, message-tag alphabet, a known configuration set, a verified sender.

Error bodies are rest-json: status, `x-amzn-ErrorType` header, body `{"message": ...}`
(botocore sesv2 error shapes). Auth error texts are the AWS common errors as
reported in public issue threads (e.g. django-ses#283, nodemailer-ses-transport#10).
"""

from __future__ import annotations

import base64
import binascii
import email
import hashlib
import hmac
import json
import re
from datetime import datetime, timedelta, timezone
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import formataddr, parseaddr
from functools import cache
from typing import Any, ClassVar
from urllib.parse import quote

from werkzeug import Request, Response

from mailrelay.providers.base import Outcome
from tests.esp.fakebase import FakeESP, Scenario

AKID = "AKIAFAKESES0EXAMPLE1"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYFAKEKEY/ses"  # has / and + like real secret keys
SESSION_TOKEN = "FwoGZXIvYXdzEFAKE//sessiontoken+for/tests=="
REGION = "eu-west-1"
CONFIG_SET = "mailrelay-events"
SEND_PATH = "/v2/email/outbound-emails"
ACCOUNT_PATH = "/v2/email/account"

_CORAL = ":http://internal.amazon.com/coral/com.amazon.sesv2/"
_STRUCTURAL = frozenset(
    h.lower()
    for h in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "Reply-To",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "X-Tag",
    )
)
_TAG_TEXT = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def ses_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """A rest-json error as SES v2 sends it."""
    h = {"x-amzn-ErrorType": code + _CORAL, "x-amzn-RequestId": "fake-request-id"}
    h.update(headers or {})
    return Response(
        json.dumps({"message": message}), status=status, headers=h, content_type="application/json"
    )


@cache
def _model() -> dict[str, Any]:
    # botocore comes with moto[server]; its sesv2 model is the authoritative request shape
    import botocore.loaders  # type: ignore[import-untyped]

    model: dict[str, Any] = botocore.loaders.create_loader().load_service_model(
        "sesv2", "service-2"
    )
    return model


def shape_errors(shape_name: str, value: Any, where: str = "") -> list[str]:
    """Check a JSON value against a botocore shape: types, required, enums, patterns, limits."""
    shape = _model()["shapes"][shape_name]
    kind = shape["type"]
    label = where or "(body)"
    errors: list[str] = []
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{label}: expected an object"]
        members = shape.get("members", {})
        for req in shape.get("required", []):
            if value.get(req) is None:
                errors.append(
                    f"Value null at '{where + req}' failed to satisfy constraint: "
                    "Member must not be null"
                )
        for key, item in value.items():
            if key not in members:
                errors.append(f"{label}: unknown member {key!r}")
            else:
                errors += shape_errors(members[key]["shape"], item, f"{where}{key}.")
    elif kind == "list":
        if not isinstance(value, list):
            return [f"{label}: expected a list"]
        if "max" in shape and len(value) > shape["max"]:
            errors.append(f"{label}: at most {shape['max']} items")
        for i, item in enumerate(value, 1):
            errors += shape_errors(shape["member"]["shape"], item, f"{where}{i}.")
    elif kind == "string":
        if not isinstance(value, str):
            return [f"{label}: expected a string"]
        if "enum" in shape and value not in shape["enum"]:
            errors.append(f"{label}: must be one of {shape['enum']}")
        if len(value) < shape.get("min", 0) or len(value) > shape.get("max", 1 << 62):
            errors.append(f"{label}: length out of range")
        if "pattern" in shape and not re.search(shape["pattern"], value):
            errors.append(f"{label}: must match {shape['pattern']}")
    elif kind == "blob":
        if not isinstance(value, str):
            return [f"{label}: expected base64 text"]
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error:
            errors.append(f"{label}: not valid base64")
    elif kind == "boolean" and not isinstance(value, bool):
        errors.append(f"{label}: expected a boolean")
    elif kind in ("integer", "long") and (isinstance(value, bool) or not isinstance(value, int)):
        errors.append(f"{label}: expected an integer")
    return errors


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def sigv4_signature(secret: str, date: str, region: str, service: str, string_to_sign: str) -> str:
    """The SigV4 signature (AWS General Reference, "Create a signature")."""
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<sig>[0-9a-f]{64})$"
)


class FakeSes(FakeESP):
    type = "ses"
    secrets = (AKID, SECRET, SESSION_TOKEN)
    credential_keys = ("access_key_id", "secret_access_key")

    def __init__(self, *, session_token: str | None = None, region: str = REGION) -> None:
        super().__init__()
        self.session_token = session_token
        self.region = region
        self.configuration_sets = {CONFIG_SET}
        self.verified: set[str] | None = None  # identities (addresses/domains); None = all
        self.auth_failures: list[str] = []  # why each refused request was refused
        self.account: dict[str, Any] = {
            "DedicatedIpAutoWarmupEnabled": False,
            "EnforcementStatus": "HEALTHY",
            "ProductionAccessEnabled": True,
            "SendingEnabled": True,
            "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 0.0},
        }

    # --- provider table / URL ------------------------------------------------------------

    def config(self, base_url: str) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "type": "ses",
            "name": "ses",
            "base_url": base_url,
            "access_key_id": AKID,
            "secret_access_key": SECRET,
            "region": self.region,
            "configuration_set": CONFIG_SET,
        }
        if self.session_token:
            cfg["session_token"] = self.session_token
        return cfg

    def url(self, base_url: str) -> str:
        query = f"base_url={quote(base_url, safe='')}&configuration_set={CONFIG_SET}"
        if self.session_token:
            query += f"&session_token={quote(self.session_token, safe='')}"
        return f"ses://{AKID}:{quote(SECRET, safe='')}@{self.region}?{query}"

    # --- SigV4 -----------------------------------------------------------------------------

    def check_auth(self, request: Request) -> Response | None:
        """None when the request is signed right, else the error SES answers."""
        header = request.headers.get("Authorization")
        if not header:
            return self._refuse(
                403,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
                "no Authorization header",
            )
        m = _AUTH.match(header)
        if not m:
            return self._refuse(
                403,
                "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' "
                "parameters.",
                f"malformed Authorization: {header[:40]}",
            )
        cred = m["cred"].split("/")
        if len(cred) != 5 or cred[4] != "aws4_request":
            return self._refuse(
                403, "IncompleteSignatureException", "Credential is malformed.", "credential scope"
            )
        akid, date, region, service, _ = cred
        if akid != AKID:
            return self._refuse(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
                "unknown access key id",
            )
        if service != "ses":
            return self._refuse(
                403,
                "SignatureDoesNotMatch",
                "Credential should be scoped to correct service: 'ses'. ",
                f"service {service}",
            )
        if region != self.region:
            return self._refuse(
                403,
                "SignatureDoesNotMatch",
                "Credential should be scoped to a valid region. ",
                f"region {region}",
            )
        signed = m["signed"].split(";")
        if signed != sorted(signed) or "host" not in signed or "x-amz-date" not in signed:
            return self._refuse(
                403,
                "SignatureDoesNotMatch",
                "'Host' and 'X-Amz-Date' must be signed headers.",
                f"signed headers {signed}",
            )
        amz_date = request.headers.get("x-amz-date", "")
        try:
            when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return self._refuse(
                403,
                "IncompleteSignatureException",
                "X-Amz-Date must be in ISO 8601 basic format.",
                "x-amz-date",
            )
        if date != amz_date[:8]:
            return self._refuse(
                403,
                "SignatureDoesNotMatch",
                "Date in Credential scope does not match YYYYMMDD from "
                "ISO-8601 version of date from HTTP.",
                "scope date",
            )
        if abs(datetime.now(timezone.utc) - when) > timedelta(minutes=15):
            return self._refuse(
                403, "InvalidSignatureException", "Signature expired.", "clock skew"
            )
        token = request.headers.get("x-amz-security-token")
        if (token or None) != self.session_token or (
            token and "x-amz-security-token" not in signed
        ):
            return self._refuse(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
                "session token missing, wrong or unsigned",
            )
        body = request.get_data()
        payload_hash = hashlib.sha256(body).hexdigest()
        declared = request.headers.get("x-amz-content-sha256")
        canonical_headers = ""
        for name in signed:
            values = request.headers.getlist(name)
            if not values:
                return self._refuse(
                    403,
                    "SignatureDoesNotMatch",
                    f"Signed header {name!r} is missing.",
                    f"missing {name}",
                )
            joined = ",".join(" ".join(v.split()) for v in values)
            canonical_headers += f"{name}:{joined}\n"
        query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, v in sorted(request.args.items(multi=True))
        )
        canonical = "\n".join(
            [
                request.method,
                quote(request.path, safe="/-_.~"),
                query,
                canonical_headers,
                ";".join(signed),
                payload_hash,
            ]
        )
        scope = f"{date}/{region}/{service}/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        expected = sigv4_signature(SECRET, date, region, service, to_sign)
        if (declared and declared != payload_hash) or not hmac.compare_digest(expected, m["sig"]):
            return self._refuse(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method. Consult the "
                "service documentation for details.",
                "signature",
            )
        return None

    def _refuse(self, status: int, code: str, message: str, why: str) -> Response:
        self.auth_failures.append(why)
        return ses_error(status, code, message)

    # --- routing ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        refused = self.check_auth(request)
        if refused is not None:
            return refused
        if request.path == ACCOUNT_PATH and request.method == "GET":
            return Response(json.dumps(self.account), status=200, content_type="application/json")
        if request.path == SEND_PATH and request.method == "POST":
            return self.send_email(request)
        # rest-json services answer an unknown route like this [U: exact text]
        return ses_error(404, "UnknownOperationException", "Unknown operation")

    def send_email(self, request: Request) -> Response:
        if request.mimetype != "application/json":
            return ses_error(400, "SerializationException", "Expected a JSON body")
        try:
            payload = json.loads(request.get_data())
        except ValueError:
            return ses_error(400, "SerializationException", "Malformed JSON body")
        problems = shape_errors("SendEmailRequest", payload)
        if problems:
            n = len(problems)
            return ses_error(
                400,
                "BadRequestException",
                f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(problems),
            )
        content = payload["Content"]
        kinds = [k for k in ("Simple", "Raw", "Template") if k in content]
        if len(kinds) != 1:
            return ses_error(
                400,
                "BadRequestException",
                "Exactly one of Simple, Raw or Template content must be given.",
            )
        if kinds[0] != "Raw":
            return ses_error(
                400, "BadRequestException", "[fake] only Raw content is served by this fake"
            )
        mime = self.parse_raw(payload)
        if mime is None or not mime["From"]:
            return ses_error(400, "BadRequestException", "Missing required header 'From'.")
        dest = payload.get("Destination", {})
        recipients = [
            a for key in ("ToAddresses", "CcAddresses", "BccAddresses") for a in dest.get(key, [])
        ]
        if not recipients:
            return ses_error(400, "BadRequestException", "Missing required header 'To'.")
        if len(recipients) > 50:
            return ses_error(400, "MessageRejected", "Recipient count exceeds 50.")
        sender = payload.get("FromEmailAddress") or parseaddr(str(mime["From"]))[1]
        for addr in [sender, *recipients]:
            bad = _address_problem(addr)
            if bad:
                return ses_error(400, "BadRequestException", bad)
        for tag in payload.get("EmailTags", []):
            for part in ("Name", "Value"):
                if not _TAG_TEXT.match(tag[part]):
                    return ses_error(
                        400,
                        "BadRequestException",
                        f"Invalid tag {part.lower()} <{tag[part]}>: only alphanumeric ASCII "
                        "characters, '_', and '-' are allowed.",
                    )
        config_set = payload.get("ConfigurationSetName")
        if config_set is not None and config_set not in self.configuration_sets:
            return ses_error(
                404, "NotFoundException", f"Configuration set <{config_set}> does not exist."
            )
        sender_email = parseaddr(sender)[1].lower()
        if self.verified is not None and not (
            sender_email in self.verified or sender_email.rpartition("@")[2] in self.verified
        ):
            return ses_error(
                400,
                "MessageRejected",
                "Email address is not verified. The following identities failed the check "
                f"in region {self.region.upper()}: {sender_email}",
            )
        self.sent.append(payload)
        self.last_message_id = self.next_id()
        quota = self.account["SendQuota"]
        quota["SentLast24Hours"] = float(quota["SentLast24Hours"]) + len(recipients)
        return Response(
            json.dumps({"MessageId": self.last_message_id}),
            status=200,
            headers={"x-amzn-RequestId": "fake-request-id"},
            content_type="application/json",
        )

    @staticmethod
    def parse_raw(payload: dict[str, Any]) -> EmailMessage | None:
        try:
            data = base64.b64decode(payload["Content"]["Raw"]["Data"], validate=True)
        except (KeyError, binascii.Error):
            return None
        msg = email.message_from_bytes(data, policy=email_policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    # --- what the contract compares ----------------------------------------------------------

    def normalize(self, payload: Any) -> dict[str, Any]:
        msg = self.parse_raw(payload)
        assert msg is not None

        def addresses(name: str) -> list[str]:
            header = msg[name]
            if header is None:
                return []
            return [
                formataddr((a.display_name, a.addr_spec)) if a.display_name else a.addr_spec
                for a in header.addresses
            ]

        text = html = None
        attachments: list[tuple[str, str, bytes]] = []
        inline: list[tuple[str, str, bytes]] = []
        for part in msg.walk():
            if part.is_multipart():
                continue
            assert isinstance(part, EmailMessage)
            disposition = part.get_content_disposition()
            ctype = part.get_content_type()
            cid = part["Content-ID"]
            if cid:
                inline.append((str(cid).strip("<>"), ctype, _payload(part)))
            elif disposition == "attachment" or (disposition == "inline" and part.get_filename()):
                attachments.append((part.get_filename() or "", ctype, _payload(part)))
            elif ctype == "text/plain" and text is None:
                text = part.get_content().replace("\r\n", "\n")
            elif ctype == "text/html" and html is None:
                # the MIME text encoder ends every part with one line break, whatever the
                # original had; trailing whitespace means nothing in HTML, so drop it here
                html = part.get_content().replace("\r\n", "\n").removesuffix("\n")
        return {
            "from": addresses("From")[0],
            "to": addresses("To"),
            "cc": addresses("Cc"),
            "bcc": list(payload.get("Destination", {}).get("BccAddresses", [])),
            "reply_to": addresses("Reply-To"),
            "subject": str(msg["Subject"] or ""),
            "text": text,
            "html": html,
            "headers": {k: str(v) for k, v in msg.items() if k.lower() not in _STRUCTURAL},
            "attachments": attachments,
            "inline": inline,
            "tags": [str(v) for v in msg.get_all("X-Tag", [])],
            "metadata": {t["Name"]: t["Value"] for t in payload.get("EmailTags", [])},
        }

    scenarios: ClassVar[dict[str, Scenario]] = {
        "auth": Scenario(
            lambda: ses_error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
            Outcome.PROVIDER,
            "security token included in the request is invalid",
        ),
        "signature": Scenario(
            lambda: ses_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method.",
            ),
            Outcome.PROVIDER,
            "signature we calculated does not match",
        ),
        "access_denied": Scenario(
            lambda: ses_error(
                403,
                "AccessDeniedException",
                "User: arn:aws:iam::123456789012:user/mailer is not authorized to perform: "
                "ses:SendEmail",
            ),
            Outcome.PROVIDER,
            "not authorized to perform: ses:SendEmail",
        ),
        "invalid": Scenario(
            lambda: ses_error(400, "BadRequestException", "Missing final '@domain'"),
            Outcome.PERMANENT,
            "Missing final '@domain'",
        ),
        "message_rejected": Scenario(
            lambda: ses_error(400, "MessageRejected", "Message contains a virus."),
            Outcome.PERMANENT,
            "Message contains a virus",
        ),
        "unverified": Scenario(
            lambda: ses_error(
                400,
                "MessageRejected",
                "Email address is not verified. The following identities failed the check "
                "in region EU-WEST-1: ops@example.com",
            ),
            Outcome.PROVIDER,
            "Email address is not verified",
        ),
        "mail_from_not_verified": Scenario(
            lambda: ses_error(
                400, "MailFromDomainNotVerifiedException", "The MAIL FROM domain is not verified."
            ),
            Outcome.PROVIDER,
            "MAIL FROM domain is not verified",
        ),
        "account_suspended": Scenario(
            lambda: ses_error(
                400,
                "AccountSuspendedException",
                "Your account's ability to send email has been permanently restricted.",
            ),
            Outcome.PROVIDER,
            "permanently restricted",
        ),
        "sending_paused": Scenario(
            lambda: ses_error(400, "SendingPausedException", "Sending is paused for this account."),
            Outcome.PROVIDER,
            "Sending is paused",
        ),
        "config_set_missing": Scenario(
            lambda: ses_error(
                404, "NotFoundException", "Configuration set <mailrelay-events> does not exist."
            ),
            Outcome.PROVIDER,
            "Configuration set <mailrelay-events> does not exist",
        ),
        "limit_exceeded": Scenario(
            lambda: ses_error(400, "LimitExceededException", "Daily message quota exceeded."),
            Outcome.TRANSIENT,
            "Daily message quota exceeded",
            limited="quota",
        ),
        "rate_limit": Scenario(
            lambda: ses_error(429, "TooManyRequestsException", "Maximum sending rate exceeded."),
            Outcome.TRANSIENT,
            "Maximum sending rate exceeded",
        ),
        "server_error": Scenario(
            lambda: ses_error(500, "InternalServiceErrorException", "Internal service error."),
            Outcome.TRANSIENT,
            "Internal service error",
        ),
    }


def _payload(part: EmailMessage) -> bytes:
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


def _address_problem(addr: str) -> str | None:
    """SES's complaint about an envelope address, or None (ASCII only: no SMTPUTF8)."""
    email_addr = parseaddr(addr)[1] or addr
    if not email_addr.isascii():
        return f"Local address contains control or whitespace: {email_addr}"
    local, at, domain = email_addr.rpartition("@")
    if not at or not local or not domain or "." not in domain:
        return "Missing final '@domain'"
    if any(c.isspace() for c in email_addr):
        return "Local address contains control or whitespace"
    return None


FAKE_CLASS = FakeSes
