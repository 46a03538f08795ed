"""Where the configuration is looked for: --config, $MAILRELAY_CONFIG, the user's file, then
the system-wide ones (for cron's mail and daemons, whose environment names none)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def default_config_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("mailrelay")) / "config.toml"


def find_config_path(
    config_path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> tuple[Path, bool]:
    """The user's config file (--config, else $MAILRELAY_CONFIG, else the default), and
    whether it was asked for explicitly (then it must exist)."""
    env = os.environ if env is None else env
    explicit = config_path is not None or bool(env.get("MAILRELAY_CONFIG"))
    chosen = config_path or env.get("MAILRELAY_CONFIG") or default_config_path()
    return Path(chosen).expanduser(), explicit


SYSTEM_CONFIG = "/etc/mailrelay/config.toml"


def system_config_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    """The system-wide config files, read when the user has none (cron's mail as root, a
    daemon's user): mailrelay/config.toml in each $XDG_CONFIG_DIRS folder, then
    /etc/mailrelay/config.toml. $MAILRELAY_SYSTEM_CONFIG (for packaging and tests) replaces
    the whole list with its one path."""
    env = os.environ if env is None else env
    override = env.get("MAILRELAY_SYSTEM_CONFIG")
    if override:
        return [Path(override).expanduser()]
    dirs = [d for d in env.get("XDG_CONFIG_DIRS", "").split(":") if d.startswith("/")]
    paths = [Path(d) / "mailrelay" / "config.toml" for d in dirs]
    return [*paths, *([Path(SYSTEM_CONFIG)] if Path(SYSTEM_CONFIG) not in paths else [])]


def config_candidates(
    config_path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> tuple[list[Path], bool]:
    """The config files to look for, in order (the first that exists is read), and whether
    the one path was asked for explicitly."""
    path, explicit = find_config_path(config_path, env)
    return ([path], True) if explicit else ([path, *system_config_paths(env)], False)
