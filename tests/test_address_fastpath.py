"""The fast address check must agree with email_validator on everything it accepts."""

from __future__ import annotations

import random
import string

import email_validator

from mailrelay.errors import MessageError
from mailrelay.message import is_local_address, plain_address, validate_email

FIXED = [
    "Ops@Example.COM",
    "a.b+c@sub.example.co.uk",
    "o'neil@example.com",
    "{x}@example.org",
    "a@localhost",
    "a@x.local",
    "a@x.test",
    "a@home.arpa",
    "a@example.onion",
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    "a@-x.com",
    "a@x-.com",
    "a@ab--c.com",
    "a@1.2.3.4",
    "a@example.123",
    "a@example.c0m",
    "a@xn--bcher-kva.example",
    "a@ex_ample.com",
    "a@example.com.",
    "x" * 65 + "@example.com",
    "a@" + "b" * 64 + ".com",
]


def reference(address: str) -> str | None:
    try:
        result = email_validator.validate_email(
            address, check_deliverability=False, allow_smtputf8=True
        )
    except email_validator.EmailNotValidError:
        return None
    return str(result.normalized)


def random_addresses(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    chars = string.ascii_letters + string.digits + ".-_+!#%'{}"
    tails = ["@example.com", "@a.b", "@x.y.z", "@Ex-Ample.ORG", "@e.museum", "@q.local", ""]
    out = []
    for _ in range(n):
        head = "".join(rng.choice(chars) for _ in range(rng.randint(1, 12)))
        mid = "".join(rng.choice(chars + "@") for _ in range(rng.randint(0, 6)))
        out.append(head + mid + rng.choice(tails))
    return out


def test_fast_path_accepts_only_what_email_validator_accepts_and_normalises_alike() -> None:
    disagree = []
    for address in FIXED + random_addresses(3000, seed=20261122):
        expected = reference(address)
        fast = plain_address(address)
        if fast is not None and fast != expected:
            disagree.append((address, fast, expected))
        if is_local_address(address):
            continue  # taken beyond email_validator's rules: see the test below
        # the public function agrees with the reference either way
        try:
            got: str | None = validate_email("to", address)
        except MessageError:
            got = None
        if got != expected:
            disagree.append((address, got, expected))
    assert disagree == []


def test_fast_path_takes_the_common_case() -> None:
    assert plain_address("ops@example.com") == "ops@example.com"
    assert plain_address("Ops.Team+alerts@Mail.Example.COM") == "Ops.Team+alerts@mail.example.com"
    assert plain_address("ops@bücher.example") is None  # left to email_validator


def test_local_and_internal_addresses_are_taken_as_msmtp_and_mailx_take_them() -> None:
    for address, normal in [
        ("root@localhost", "root@localhost"),
        ("root@WEB1", "root@web1"),
        ("ops@host.local", "ops@host.local"),
        ("ops@nas.lan", "ops@nas.lan"),
        ("ops@db.internal", "ops@db.internal"),
        ("ops@app.localhost", "ops@app.localhost"),
        ("ops@[127.0.0.1]", "ops@[127.0.0.1]"),
    ]:
        assert validate_email("to", address) == normal
        assert is_local_address(normal)
    for bad in ("a..b@localhost", "a@-x.local", "@localhost", "a@x_y.lan"):
        try:
            validate_email("to", bad)
        except MessageError:
            continue
        raise AssertionError(f"{bad} was taken")
    assert not is_local_address("ops@example.com")


def test_bare_addresses_are_split_as_getaddresses_splits_them() -> None:
    """parse_addresses takes a bare dot-atom address as it is, without getaddresses: on
    3,000 random strings of address characters, the two must agree."""
    from email.utils import getaddresses

    from mailrelay.message.addresses import _BARE

    rng = random.Random(1)
    alphabet = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-.@"
    taken = 0
    for _ in range(3000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.5:
            value = f"{value}@{rng.choice(['example.com', 'a-b.example', 'x'])}"
        if _BARE.fullmatch(value):
            taken += 1
            assert getaddresses([value]) == [("", value)], value
    assert taken > 500  # the fast path was exercised
