"""Where the spool is: `--spool`, else `$MAILRELAY_SPOOL`, else the config's `spool_dir`
(each a folder or a Redis URL), else the state's Redis URL when the state is in Redis (the
queue lives with the state), else the user data dir's folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

SPOOL_ENV = "MAILRELAY_SPOOL"


def spool_location(
    explicit: str | None,
    env: Mapping[str, str],
    configured: str | Path | None,
    state_url: str | None,
) -> str | Path:
    """A Redis URL (str) or a folder (Path)."""
    from mailrelay.spool.store import default_spool_dir
    from mailrelay.state.location import is_state_url

    for value in (explicit, env.get(SPOOL_ENV, "").strip() or None, configured):
        if isinstance(value, Path):
            return value
        if value:
            return value.strip() if is_state_url(value) else Path(value).expanduser()
    return state_url if state_url else default_spool_dir()
