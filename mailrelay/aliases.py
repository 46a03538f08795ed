"""Aliases for bare local names: cron's "root", a daemon's "postmaster".

A host without a mail system has nowhere to deliver `To: root`. The `[aliases]` table of the
config maps such names to addresses (`root = "ops@example.com"`, a list for several, `"*"`
for every local name, as nullmailer's adminaddr), and `aliases_file` reads the /etc/aliases
format of aliases(5): `name: target, target`, `#` comments, continuation lines that start
with a blank. A target that is a command (`|...`), a file (`/...`) or an include
(`:include:...`) cannot be delivered through a relay: it is left out with a warning.

Lookup (`AliasBook`): the config's entry for the name, else the file's, else the config's
`"*"`; a target that is itself a local name is looked up again (at most `MAX_DEPTH` deep, a
loop ends there). A name that ends with no address raises `NoAliasError`: sendmail mode
holds the message until an alias exists.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

from mailrelay.errors import ConfigError, NoAliasError

MAX_DEPTH = 10
WILDCARD = "*"
# A local name: a dot-atom (RFC 5322 §3.2.3), as a local part without "@domain".
LOCAL_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_FILE_NAME = re.compile(r"[^\s:#]+")

Aliases = Mapping[str, list[str]]


def is_local_name(value: str) -> bool:
    """A bare local name ("root"), not an address."""
    return "@" not in value and LOCAL_NAME.fullmatch(value) is not None


def read_table(table: object, source: str) -> dict[str, list[str]]:
    """The `[aliases]` table: name = "address" or ["address", ...]; names in lower case."""
    if not isinstance(table, dict):
        raise ConfigError("[aliases] must be a table", source=source)
    out: dict[str, list[str]] = {}
    for name, value in table.items():
        key = f"aliases.{name}"
        if name != WILDCARD and not is_local_name(name):
            raise ConfigError(
                'must be a local name without "@" (e.g. root), or "*"', source=source, key=key
            )
        targets = [value] if isinstance(value, str) else value
        if (
            not isinstance(targets, list)
            or not targets
            or not all(isinstance(t, str) and t.strip() for t in targets)
        ):
            raise ConfigError(
                "must be an address or a non-empty list of addresses", source=source, key=key
            )
        out[name.lower()] = [t.strip() for t in targets]
    return out


def read_file(path: Path, warnings: list[str]) -> dict[str, list[str]]:
    """An aliases(5) file; what cannot go through a relay is left out with a warning."""
    from mailrelay.fsutil import read_regular_file

    source = str(path)
    try:
        text = read_regular_file(path).decode("utf-8", "replace")
    except FileNotFoundError:
        raise ConfigError("aliases file not found", source=source) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not an aliases file", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=source) from None
    entries: list[tuple[int, str]] = []  # (line number, the whole entry unfolded)
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[:1] in (" ", "\t") and entries:
            entries[-1] = (entries[-1][0], f"{entries[-1][1]} {line.strip()}")
        else:
            entries.append((number, line.strip()))
    out: dict[str, list[str]] = {}
    for number, entry in entries:
        where = f"{source}:{number}"
        name, colon, rest = entry.partition(":")
        name = name.strip().strip('"')
        if not colon or not _FILE_NAME.fullmatch(name):
            raise ConfigError(f"{where}: expected 'name: address, address'")
        targets = []
        for target in (t.strip() for t in rest.split(",")):
            bare = target.strip('"')
            if not bare:
                continue
            if bare.startswith(("|", "/", ":include:")):
                warnings.append(
                    f"{where}: {name}: {bare.split()[0]!r} is a command, file or include, "
                    "which a relay cannot deliver; left out"
                )
                continue
            targets.append(bare)
        if targets:
            out[name.lower()] = targets
    return out


class AliasBook:
    """The config's `[aliases]` and its `aliases_file`, read when a local name first needs
    one (a send without local names never reads the file)."""

    def __init__(
        self,
        table: Aliases,
        file: Path | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.table = table
        self.file = file
        self.warn = warn
        self._file_table: dict[str, list[str]] | None = None

    def __call__(self, name: str) -> list[str]:
        """The addresses a local name stands for (see the module docstring); NoAliasError
        when it has none, ConfigError when the aliases file cannot be read."""
        if self._file_table is None:
            warnings: list[str] = []
            self._file_table = read_file(self.file, warnings) if self.file else {}
            for warning in warnings:
                if self.warn is not None:
                    self.warn(warning)
        found: list[str] = []
        _expand(name, self.table, self._file_table, found, seen=set(), depth=0)
        if not found:
            raise NoAliasError(
                f"recipient {name!r} is a local name with no alias; add "
                f'{name} = "you@example.com" (or "*" for every local name) to [aliases] '
                "in the config, or give full addresses (e.g. MAILTO in a crontab)"
            )
        return found


def _expand(
    name: str, table: Aliases, file_table: Aliases, found: list[str], seen: set[str], depth: int
) -> None:
    key = name.lower()
    if key in seen or depth > MAX_DEPTH:
        return
    seen.add(key)
    targets = table.get(key) or file_table.get(key) or table.get(WILDCARD) or []
    for target in targets:
        if "@" in target:
            if target.lower() not in (f.lower() for f in found):
                found.append(target)
        elif is_local_name(target):
            _expand(target, table, file_table, found, seen, depth + 1)
