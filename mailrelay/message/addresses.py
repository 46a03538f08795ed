"""Addresses: the `Address` record, their syntax (a fast path for the common case,
email_validator for the rest), the local-address rules, and parsing address arguments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.utils import formataddr, getaddresses

from mailrelay.datarecord import record
from mailrelay.errors import MessageError
from mailrelay.message.headers import check_header_value


@record(frozen=True)
class Address:
    """One mailbox: an address and an optional display name."""

    email: str
    name: str = ""

    def __str__(self) -> str:
        if not self.name:
            return self.email
        try:
            return formataddr((self.name, self.email))
        except UnicodeEncodeError:  # an internationalised address (SMTPUTF8) with a name
            name = self.name
            if any(c in '()<>@,:;."[]\\' for c in name):
                name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
            return f"{name} <{self.email}>"

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


# The common case, checked without email_validator (whose import compiles dozens of regular
# expressions: about 40 ms of every send). It accepts only addresses email_validator also
# accepts, and normalises them as it does (the domain in lower case); anything else — quoted
# or internationalised parts, IDNA, special-use domains — goes to email_validator.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_ADDRESS = re.compile(rf"({_ATEXT}(?:\.{_ATEXT})*)@((?:{_LABEL}\.)+[A-Za-z]{{2,63}})")
_SPECIAL_USE = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def plain_address(email: str) -> str | None:
    m = _PLAIN_ADDRESS.fullmatch(email)
    if m is None or len(email) > 254 or len(m.group(1)) > 64 or len(m.group(2)) > 253:
        return None
    domain = m.group(2).lower()
    if "--" in domain or domain.rpartition(".")[2] in _SPECIAL_USE:
        return None
    return f"{m.group(1)}@{domain}"


# Names that only a local or internal mail system delivers to, which msmtp and mailx take:
# a dotless host (root@localhost, root@web1) and these special-use or private suffixes
# (RFC 6761 .localhost, RFC 6762 .local, ICANN's .internal; .lan by common use).
_LOCAL_SUFFIXES = ("local", "lan", "internal", "localhost")
_LOCAL_DOMAIN = rf"(?:{_LABEL}\.)*{_LABEL}"  # compiled only on the slow path below


def is_local_address(email: str) -> bool:
    """A dotless, special-use (.local .lan .internal .localhost) or IP-literal domain: a
    local or internal mailbox that the public HTTP APIs cannot deliver to."""
    local, at, domain = email.rpartition("@")
    domain = domain.lower()
    if not at or not local or not domain:
        return False  # not an address at all: the provider's own check says so
    if domain.startswith("["):
        return True
    return "." not in domain or domain.rpartition(".")[2] in _LOCAL_SUFFIXES


def validate_email(where: str, email: str) -> str:
    """Check one address's syntax (no DNS) and return its normalised form."""
    plain = plain_address(email)
    if plain is not None:
        return plain
    import email_validator  # costs start-up time; only unusual addresses pay it

    local, _, domain = email.rpartition("@")
    checked, own_domain = email, None
    if local and is_local_address(email) and re.fullmatch(_LOCAL_DOMAIN, domain):
        # email_validator refuses these names; check the local part alone
        checked, own_domain = f"{local}@example.com", domain.lower()
    try:
        result = email_validator.validate_email(
            checked, check_deliverability=False, allow_smtputf8=True, allow_domain_literal=True
        )
    except email_validator.EmailNotValidError as exc:
        raise MessageError(f"{where}: {email!r} is not a valid address: {exc}") from None
    if own_domain is not None:
        return f"{result.local_part}@{own_domain}"
    return str(result.normalized)


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_BARE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def parse_addresses(where: str, values: Iterable[str]) -> list[Address]:
    """Parse address arguments ("a@x, Name <b@y>") into validated Addresses."""
    out: list[Address] = []
    for value in values:
        check_header_value(where, value)
        if not value.strip():
            raise MessageError(f"{where}: empty address")
        # a bare dot-atom address (most of them) is what getaddresses would make of it
        pairs = [("", value)] if _BARE.fullmatch(value) else getaddresses([value])
        if not pairs or any(not addr for _, addr in pairs):
            raise MessageError(f"{where}: {value!r} is not a valid address")
        for name, addr in pairs:
            out.append(Address(validate_email(where, addr), name))
    return out


def parse_address(where: str, value: str) -> Address:
    addrs = parse_addresses(where, [value])
    if len(addrs) != 1:
        raise MessageError(f"{where}: expected one address, got {len(addrs)}")
    return addrs[0]
