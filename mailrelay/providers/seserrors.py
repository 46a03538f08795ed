"""Amazon SES's errors: the error code of an answer (`error_type`) and the codes each outcome
class takes (ses.py's `outcome_for` and `limit_kind` read them)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mailrelay.providers.httperrors import json_body

if TYPE_CHECKING:
    from mailrelay.providers.httpclient import Response as HttpResponse

# Error types (x-amzn-ErrorType / `__type`) and their class. SendEmail's own errors come from
# botocore's sesv2 model; the auth ones are the AWS common errors (403).
TRANSIENT_TYPES = frozenset(
    {
        "TooManyRequestsException",  # 429 "Maximum sending rate exceeded."
        "LimitExceededException",  # 400, a sending quota: clears with time
        "Throttling",  # the v1 spelling of the rate limit
        "ThrottlingException",
        "InternalServiceErrorException",  # 500
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
THROTTLES = frozenset({"TooManyRequestsException", "Throttling", "ThrottlingException"})
PROVIDER_TYPES = frozenset(
    {
        "MailFromDomainNotVerifiedException",
        "AccountSuspendedException",
        "SendingPausedException",
        "NotFoundException",  # 404: the configuration set (or identity ARN) does not exist
        "UnrecognizedClientException",  # unknown access key / bad session token
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",  # wrong secret key, region or clock
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "AccessDeniedException",  # the IAM identity may not call ses:SendEmail
        "AccessDenied",
        "ExpiredTokenException",
        "RequestExpired",
    }
)
PERMANENT_TYPES = frozenset(
    {"MessageRejected", "BadRequestException", "InvalidParameterValue", "ValidationException"}
)
# MessageRejected also covers identities that are not verified (and sandbox recipients):
# "Email address is not verified. The following identities failed the check in region ...".
# That is this account's configuration, not the message, so it fails over.
UNVERIFIED = re.compile(r"not verified|did not have authority", re.IGNORECASE)


def error_type(resp: HttpResponse) -> str:
    """The SES error code: x-amzn-ErrorType, else the body's `__type` / `code`."""
    raw = resp.headers.get("x-amzn-ErrorType") or ""
    if not raw:
        body = json_body(resp)
        if isinstance(body, dict):
            for key in ("__type", "code", "Code"):
                if isinstance(body.get(key), str):
                    raw = body[key]
                    break
    # "MessageRejected:http://internal.amazon.com/coral/..." or "com.amazonaws.sesv2#Name"
    return raw.split(":", 1)[0].rsplit("#", 1)[-1].strip()
