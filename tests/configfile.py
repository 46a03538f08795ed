"""The one writer of config.toml files for tests, on tomli_w (so any value, quotes and
apostrophes included, is written as TOML says it must be)::

    from tests.configfile import write_config

    write_config(tmp_path / "config.toml", [{"type": "outbox", "path": str(box)}],
                 defaults={"policy": "priority"}, serve={"tokens": ["t"]}, mode=0o600)

Tests that check how mailrelay reads a hand-written file (comments, line numbers, bad TOML)
keep writing their text literally; this is for the files a test only needs to exist.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

DEFAULT_FROM = "cron@example.com"


def _plain(value: Any) -> Any:
    """What tomli_w can write: paths as text, tuples as lists, tables all the way down."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_text(
    providers: Sequence[Mapping[str, Any]],
    *,
    defaults: Mapping[str, Any] | None = None,
    **tables: Mapping[str, Any] | None,
) -> str:
    """The TOML of a config: [defaults] (with from = cron@example.com unless given), any
    other tables by name (serve=, alerts=, state=...) and the [[providers]] in order."""
    document: dict[str, Any] = {"defaults": {"from": DEFAULT_FROM, **(defaults or {})}}
    document.update({name: table for name, table in tables.items() if table is not None})
    document["providers"] = list(providers)
    return tomli_w.dumps(_plain(document))


def write_config(
    path: Path,
    providers: Sequence[Mapping[str, Any]],
    *,
    defaults: Mapping[str, Any] | None = None,
    mode: int | None = None,
    **tables: Mapping[str, Any] | None,
) -> Path:
    """Write `config_text(...)` to `path` (its folder made), chmod it to `mode` if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_text(providers, defaults=defaults, **tables))
    if mode is not None:
        path.chmod(mode)
    return path
