"""`mailrelay config init|check|show`: write a starting config, check one, show what is in
effect."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mailrelay.cli import (
    CliApp,
    HintingGroup,
    global_options,
    json_option,
    pass_app,
    probe_timeout_option,
)
from mailrelay.errors import ConfigError, ExitCode

if TYPE_CHECKING:
    from mailrelay.config import Settings

TEMPLATE_RESOURCE = "config.example.toml"


def config_template() -> str:
    """The commented template `config init` writes (docs/config.example.toml is a copy)."""
    from importlib.resources import files

    return files("mailrelay").joinpath(TEMPLATE_RESOURCE).read_text(encoding="utf-8")


@click.group(cls=HintingGroup, context_settings={"max_content_width": 100})
@global_options()
def config() -> None:
    """Write, check and show the configuration file.

    \b
    Examples:
      mailrelay config init
      mailrelay config check --probe
      mailrelay config show
    """


@config.command("init")
@click.option("--force", is_flag=True, help="Replace the file if it exists.")
@global_options()
@pass_app
def init_command(app: CliApp, force: bool) -> None:
    """Write a commented template to the config path (the file mailrelay reads).

    Every provider type is there, commented out, with its secrets as { env = ... }. The file
    is created mode 0600; an existing one is left alone unless --force.
    """
    from mailrelay.configpaths import find_config_path
    from mailrelay.fsutil import make_private_dirs

    path, _ = find_config_path(app.config_path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_TRUNC if force else os.O_EXCL
    try:
        make_private_dirs(path.parent)
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError("exists already; give --force to replace it", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror}", source=str(path)) from None
    with open(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)  # also when --force replaced a wider file
        f.write(config_template())
    app.out.note(f"wrote {path}; edit it, then run 'mailrelay config check'")


@config.command("check")
@click.option("--probe", is_flag=True, help="Also probe every provider, as 'mailrelay status'.")
@probe_timeout_option("With --probe: how long each probe may take.")
@global_options()
@pass_app
def check_command(app: CliApp, probe: bool, timeout: float) -> None:
    """Read the config, resolve every secret and print one line per problem.

    Finds unknown keys (with the likely meant one), unset environment variables, failing
    secret commands, bad URLs and values. Exit 0 when all is well, 78 otherwise (with
    --probe: 69 when a provider fails its probe).
    """
    from mailrelay.config import load_settings
    from mailrelay.providers import registry

    problems: list[ConfigError] = []
    try:
        settings = load_settings(app.config_path, app.provider_urls, problems=problems)
    except ConfigError as exc:
        app.out.error(str(exc))
        click.get_current_context().exit(int(ExitCode.CONFIG))
    for warning in settings.warnings:
        app.out.warn(warning)
    for spec in settings.providers:
        problems.extend(registry.problems(spec))
    if settings.aliases_file is not None:  # read at send time only when a local name needs it
        from mailrelay.aliases import read_file

        alias_warnings: list[str] = []
        try:
            read_file(settings.aliases_file, alias_warnings)
        except ConfigError as exc:
            problems.append(exc)
        for warning in alias_warnings:
            app.out.warn(warning)
    if not settings.providers:
        problems.append(
            ConfigError(
                f"no providers configured (searched {settings.searched}); add [[providers]] "
                "or give --provider URL / $MAILRELAY_PROVIDERS"
            )
        )
    for problem in problems:
        app.out.error(str(problem))
    if problems:
        click.get_current_context().exit(int(ExitCode.CONFIG))
    code = 0
    if probe:
        from mailrelay.probes import probe as run_probes

        for p in run_probes(settings.build_providers(), timeout):
            if p.health.ok:
                app.out.note(f"{p.provider}: healthy ({p.health.detail})")
            else:
                app.out.error(f"{p.provider}: failing: {p.health.detail}")
                code = int(ExitCode.UNAVAILABLE)
    try:
        spool_warning = app.spool().durability_warning()
    except ConfigError as exc:
        app.out.error(str(exc))
        click.get_current_context().exit(int(ExitCode.CONFIG))
    if spool_warning:
        app.out.warn(spool_warning)
    if not code:
        where = settings.source or "no config file, providers from URLs"
        app.out.note(f"config ok: {len(settings.providers)} provider(s) ({where})")
    click.get_current_context().exit(code)


def _redacted(value: Any, key: str | None = None) -> Any:
    from mailrelay.config import SECRET_KEYS
    from mailrelay.secrets import REDACTED, Secret

    if isinstance(value, dict):
        if set(value) and set(value) <= set(Secret.FORMS) and len(value) == 1:
            return Secret(value).describe()
        return {k: _redacted(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, key) for v in value]
    if key in SECRET_KEYS and isinstance(value, str):
        return REDACTED
    return value


def _locations(app: CliApp, settings: Settings) -> dict[str, Any]:
    from mailrelay.state import state_path

    outboxes = [
        str(Path(str(spec.values["path"])).expanduser())
        for spec in settings.providers
        if spec.type == "outbox" and isinstance(spec.values.get("path"), str)
    ]
    return {
        "config": settings.source or f"{settings.searched} (none there)",
        "state": str(state_path(app.state_override, os.environ, settings.state_file)),
        "spool": app.spool().where,
        "outbox": outboxes,
        "log_file": str(app.log_file or settings.log_file or "") or None,
    }


@config.command("show")
@json_option
@global_options()
@pass_app
def show_command(app: CliApp, json_mode: bool) -> None:
    """Print the configuration in effect, secrets redacted, and where the files are.

    Defaults are filled in; --provider URLs and $MAILRELAY_PROVIDERS replace the config's
    providers as they do when sending. Shows where the config, state, spool and outbox are.
    """
    out = app.output(json_mode=json_mode)
    settings = app.settings
    defaults = {
        "from": settings.sender,
        "policy": settings.policy,
        "timeout": settings.timeout,
        "on_ambiguous": settings.on_ambiguous,
        "cooldown": settings.cooldown,
        "provider_cooldown": settings.provider_cooldown,
        "max_cooldown": settings.max_cooldown,
        "max_size": settings.max_size,
        "on_failure": settings.on_failure,
        "queue_retry": settings.queue_retry,
        "queue_max_retry": settings.queue_max_retry,
        "queue_max_age": settings.queue_max_age,
    }
    defaults = {k: v for k, v in defaults.items() if v is not None}
    providers = [
        {"name": spec.name, **_redacted({k: v for k, v in spec.values.items() if k != "name"})}
        for spec in settings.providers
    ]
    where = _locations(app, settings)
    if out.json_mode:
        out.emit_json({"files": where, "defaults": defaults, "providers": providers})
        return
    import tomli_w

    shown = {k: ", ".join(v) if isinstance(v, list) else v for k, v in where.items()}
    lines = [f"# {k}: {v or '-'}" for k, v in shown.items()]
    body = tomli_w.dumps({"defaults": defaults, "providers": providers})
    out.data("\n".join(lines) + "\n\n" + body.rstrip())
