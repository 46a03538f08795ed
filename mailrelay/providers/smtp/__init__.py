"""SMTP submission through smtplib: STARTTLS, implicit TLS or plain; AUTH; reply codes mapped
to outcome classes.

One job a module: `reply.py` classifies a reply (code, enhanced status code, text, stage →
outcome class and detail; pure), `data.py` prepares the message data for DATA (dot
stuffing), `session.py` holds one session (connection, TLS, AUTH, the dialogue, its
deadline) and `provider.py` the `SmtpProvider` adapter and its configuration.
"""

from mailrelay.providers.smtp.data import dot_stuff
from mailrelay.providers.smtp.provider import DEFAULT_PORTS, SECURITIES, SmtpProvider
from mailrelay.providers.smtp.reply import (
    Verdict,
    classify_reply,
    enhanced_code,
    reply_text,
    verdict,
)

__all__ = [
    "DEFAULT_PORTS",
    "SECURITIES",
    "SmtpProvider",
    "Verdict",
    "classify_reply",
    "dot_stuff",
    "enhanced_code",
    "reply_text",
    "verdict",
]
