"""Where the state lives: a file path or a Redis URL, from --state, $MAILRELAY_STATE, the
config's state_file, or the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

STATE_ENV = "MAILRELAY_STATE"


STATE_URL_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")  # redis-py's, and Sentinel


def is_state_url(text: str) -> bool:
    """Whether a state setting names the Redis store rather than a file."""
    scheme, sep, _ = text.strip().partition("://")
    return bool(sep) and scheme.lower() in STATE_URL_SCHEMES


def state_url(explicit: str | None, env: Mapping[str, str], configured: str | None) -> str | None:
    """The Redis URL when the state setting that wins (as in state_path) is one, else None."""
    for value in (explicit, env.get(STATE_ENV, "").strip() or None):
        if value:
            return value.strip() if is_state_url(value) else None
    return configured


def default_state_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("mailrelay")) / "state.toml"


def state_path(explicit: str | None, env: Mapping[str, str], configured: Path | None) -> Path:
    """`--state PATH`, else `$MAILRELAY_STATE`, else the config's `state_file`, else the default."""
    if explicit:
        return Path(explicit).expanduser()
    from_env = env.get(STATE_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    if configured is not None:
        return configured
    return default_state_path()
