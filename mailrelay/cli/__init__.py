"""The command line: one click group; each command family lives in its own module.

Commands are thin: parse → call the library → render with `Output`. Known errors become one
line and a documented exit code (errors.py); a traceback only with --debug.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mailrelay import __version__
from mailrelay.errors import ExitCode, MailrelayError, did_you_mean

if TYPE_CHECKING:
    from mailrelay.alerts import Dispatcher
    from mailrelay.config import Settings
    from mailrelay.delivery import Queueing
    from mailrelay.engine import AlertSink, Engine, Listener, ProbeGate
    from mailrelay.output import Output
    from mailrelay.providers.base import Provider
    from mailrelay.providers.options import ProviderSpec
    from mailrelay.spool import Spool
    from mailrelay.state import StateStore

F = TypeVar("F", bound=Callable[..., Any])


class App:
    """What every command needs, built lazily from the global options."""

    def __init__(
        self,
        *,
        config: str | None,
        state: str | None,
        providers: Sequence[str],
        verbose: int,
        quiet: bool,
        debug: bool,
        log_file: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.log_file = log_file
        self.config_path = config
        self.state_override = state
        self.provider_urls = list(providers)
        self.verbose = verbose
        self.quiet = quiet
        self.debug = debug
        self._settings: Settings | None = settings
        self._providers: list[Provider] | None = None
        self.via: list[str] = []  # send --via / status NAME: only these providers, this order
        self.out = self.output(json_mode=False)

    def merge(self, name: str, value: Any) -> None:
        """A global option given after the command word (see global_options)."""
        if name == "providers":
            self.provider_urls.extend(value)
        elif name == "verbose":
            self.verbose += value
        elif name in ("quiet", "debug"):
            setattr(self, name, True)
        else:
            attr = {"config": "config_path", "state": "state_override"}.get(name, name)
            setattr(self, attr, value)
        self._settings = None
        self.output(json_mode=self.out.json_mode)

    def output(self, *, json_mode: bool) -> Output:
        from mailrelay.output import Output

        self.out = Output(json_mode=json_mode, verbose=self.verbose, quiet=self.quiet)
        return self.out

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from mailrelay.config import load_settings

            self._settings = load_settings(self.config_path, self.provider_urls)
            for warning in self._settings.warnings:
                self.out.warn(warning)
        return self._settings

    def providers(self) -> list[Provider]:
        if self._providers is None:
            from mailrelay.errors import ConfigError
            from mailrelay.providers import registry

            specs = self.settings.providers
            if self.via:
                specs = self.chosen(specs)
            self._providers = [registry.build(spec) for spec in specs]
            if not self._providers:
                s = self.settings
                where = f"in {s.source}" if s.source else f"no config file at {s.searched}"
                raise ConfigError(
                    f"no providers configured ({where}); run 'mailrelay config init', add "
                    "[[providers]] to the config, or give --provider URL / $MAILRELAY_PROVIDERS"
                )
        return self._providers

    def chosen(self, specs: list[ProviderSpec]) -> list[ProviderSpec]:
        """The providers named by --via (or `status NAME`), in the order given."""
        from mailrelay.errors import UsageError

        by_name = {spec.name: spec for spec in specs}
        unknown = [name for name in self.via if name not in by_name]
        if unknown:
            known = ", ".join(by_name) or "none"
            where = self.settings.source or self.settings.searched
            raise UsageError(
                f"no provider named {unknown[0]!r}{did_you_mean(unknown[0], list(by_name))}; "
                f"configured ({where}): {known}"
            )
        return [by_name[name] for name in dict.fromkeys(self.via)]

    def store(self) -> StateStore:
        from mailrelay.state import TomlStateStore, default_state_path, state_path, state_url

        settings = self.settings
        url = state_url(self.state_override, os.environ, settings.state_url)
        if url is None:
            path = state_path(self.state_override, os.environ, settings.state_file)
            return TomlStateStore(path, warn=self.out.warn)
        from mailrelay.state.redisstore import FallbackStore, RedisStateStore, masked

        def connect() -> RedisStateStore:
            secret = settings.state_password
            return RedisStateStore(url, password=secret.reveal() if secret else None)

        def local() -> TomlStateStore:  # while Redis cannot be reached: this user's file
            return TomlStateStore(settings.state_file or default_state_path(), warn=self.out.warn)

        return FallbackStore(connect, masked(url), local, warn=self.out.warn)

    def hold_connections(self) -> None:
        """Many messages follow: providers keep connections between them (close() ends them)."""
        for provider in self.providers():
            provider.hold_connections()

    def spool(self) -> Spool:
        """The spool of queued messages (`spool_dir` in the config, else the user data dir)."""
        from mailrelay.spool import Spool, default_spool_dir

        return Spool(self.settings.spool_dir or default_spool_dir(), warn=self.out.warn)

    def queueing(self) -> Queueing:
        """Queuing on: the spool and the retry settings (mailrelay.delivery writes it)."""
        from mailrelay.delivery import Queueing

        s = self.settings
        return Queueing(self.spool(), retry=s.queue_retry, max_retry=s.queue_max_retry)

    def listeners(self) -> list[Listener]:
        """Who hears of every attempt: the audit log, when --log-file or log_file is set."""
        path = self.log_file or self.settings.log_file
        if not path:
            return []
        from mailrelay.audit import AuditLog

        return [AuditLog(path)]

    def alerter(self) -> Dispatcher | None:
        """Where alert events go ([alerts] in the config), or None when nowhere."""
        alerts = self.settings.alerts
        if alerts is None or not alerts.enabled:
            return None
        from mailrelay.alerts import Dispatcher

        return Dispatcher(alerts, warn=self.out.warn)

    def engine(
        self,
        *,
        policy: str | None = None,
        timeout: float | None = None,
        store: StateStore | None = None,
        alert: AlertSink | None = None,
        skip_cooling: bool = False,
        probe_gate: ProbeGate | None = None,
    ) -> Engine:
        """The failover engine; `alert` replaces the [alerts] dispatcher (serve passes an
        alerts.BackgroundDispatcher, so no request waits for an alert)."""
        from mailrelay.engine import Engine, Policy

        s = self.settings
        return Engine(
            self.providers(),
            store if store is not None else self.store(),
            Policy(
                order=policy or ("priority" if self.via else s.policy),
                timeout=timeout or s.timeout,
                on_ambiguous=s.on_ambiguous,
                cooldown=s.cooldown,
                provider_cooldown=s.provider_cooldown,
                max_cooldown=s.max_cooldown,
                skip_cooling=skip_cooling,
            ),
            warn=self.out.warn,
            raise_bugs=self.debug,
            listeners=self.listeners(),
            alert=alert if alert is not None else self.alerter(),
            probe_gate=probe_gate,
        )

    def close(self) -> None:
        for provider in self._providers or []:
            provider.close()


pass_app = click.make_pass_decorator(App)


def json_option(f: F) -> F:
    return click.option(
        "--json", "json_mode", is_flag=True, help="Print a JSON document (see README) on stdout."
    )(f)


def probe_timeout_option(text: str) -> Callable[[F], F]:
    """`--timeout SECONDS` for the commands that probe providers (status, config check)."""
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        metavar="SECONDS",
        help=text,
    )


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# name → (module, attribute, the first paragraph of its help, shown by `mailrelay --help`).
# A command's module is imported only when that command runs (or its help is asked for), so
# `--help`, `--version` and every command pay for their own imports only.
# tests/test_distribution.py checks these lines against each command's own help.
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "send": (
        "mailrelay.cli.send",
        "send",
        "Send one message through the first provider that accepts it.",
    ),
    "sendmail": (
        "mailrelay.cli.sendmail",
        "sendmail",
        "Act as sendmail: send the RFC 5322 message on standard input (for cron and scripts).",
    ),
    "config": (
        "mailrelay.cli.configcmd",
        "config",
        "Write, check and show the configuration file.",
    ),
    "providers": (
        "mailrelay.cli.providers",
        "providers",
        "List the configured providers in order, with the state's counters.",
    ),
    "status": (
        "mailrelay.cli.providers",
        "status",
        "Probe every provider (or those NAMEd) without sending and say who is healthy.",
    ),
    "queue": (
        "mailrelay.cli.queue",
        "queue",
        "List, send and drop the messages waiting in the spool.",
    ),
    "metrics": (
        "mailrelay.cli.metrics",
        "metrics",
        "Print Prometheus metrics: attempts, messages, cooldowns, spool depth.",
    ),
    "schema": (
        "mailrelay.cli.schema",
        "schema",
        "Print the JSON Schema (draft 2020-12) of a message given as JSON.",
    ),
    "serve": (
        "mailrelay.cli.serve",
        "serve",
        "Run the HTTP service: the send API, a status page and metrics (gunicorn).",
    ),
    "completion": (
        "mailrelay.cli.completion",
        "completion",
        "Print the shell completion script for bash, zsh or fish.",
    ),
}


class HintingGroup(click.Group):
    """A group that prints its help when given nothing (not an error: exit 0) and answers
    a mistyped command with the closest one ("did you mean")."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:
            click.echo(ctx.get_help())
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if args and not name.startswith("-") and self.get_command(ctx, name) is None:
            known = self.list_commands(ctx)
            raise click.UsageError(
                f"no such command {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}",
                ctx,
            )
        return super().resolve_command(ctx, args)


class LazyGroup(HintingGroup):
    """A group whose commands are imported on first use (see LAZY_COMMANDS)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(LAZY_COMMANDS)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            import importlib

            module, attr, _ = self.lazy_commands[cmd_name]
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(limit=80)))
            else:
                rows.append((name, self.lazy_commands[name][2]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _merge_global(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A global option given after the command word: fold it into the group's App."""
    if param.name is None:
        return value
    source = ctx.get_parameter_source(param.name)
    if source in (None, click.core.ParameterSource.DEFAULT):
        return value
    app = ctx.find_object(App)
    if app is None:  # shell completion parses without running the group: keep it for TAB
        ctx.meta[f"mailrelay.{param.name}"] = value
    else:
        app.merge(param.name, value)
    return value


def global_options(*, merge: bool = True) -> Callable[[F], F]:
    """The options every command takes, before or after its word (defined once, here).

    On the group they build the App; on a command (`merge`) they update it, so
    `mailrelay -v send` and `mailrelay send -v` mean the same.
    """
    extra: dict[str, Any] = {"callback": _merge_global, "expose_value": False} if merge else {}
    path = click.Path()  # completes file names; the command itself says what is wrong
    options = [
        click.option(
            "--config",
            metavar="PATH",
            type=path,
            help="Config file (default: $MAILRELAY_CONFIG, else the user config dir's "
            "mailrelay/config.toml).",
            **extra,
        ),
        click.option(
            "--state",
            metavar="PATH|URL",
            type=path,
            help="State file, or a redis://, rediss:// or unix:// URL to share it across "
            "hosts (default: $MAILRELAY_STATE, else the user data dir's mailrelay/state.toml).",
            **extra,
        ),
        click.option(
            "--provider",
            "providers",
            metavar="URL",
            multiple=True,
            help="A provider as a URL, e.g. smtp://user:pass@host:587 (repeatable; replaces "
            "the config's providers; default $MAILRELAY_PROVIDERS).",
            **extra,
        ),
        click.option(
            "--log-file",
            metavar="PATH",
            type=path,
            help="Append a JSON-lines record of every attempt and result (default: log_file "
            "in the config; off).",
            **extra,
        ),
        click.option(
            "-v", "--verbose", count=True, help="Say more: every attempt, even under cron.", **extra
        ),
        click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.", **extra),
        click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.", **extra),
    ]

    def decorate(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", message="mailrelay %(version)s")
@global_options(merge=False)
@click.pass_context
def cli(
    ctx: click.Context,
    config: str | None,
    state: str | None,
    providers: tuple[str, ...],
    log_file: str | None,
    verbose: int,
    quiet: bool,
    debug: bool,
) -> None:
    """Send mail through the first of several providers that accepts it.

    mailrelay remembers which provider worked last and how each one is doing, so the next
    run starts where the last one succeeded and skips providers that are failing.

    Every option below also works after the command word (mailrelay send -v ...).

    \b
    Examples:
      echo "disk 91% full" | mailrelay send -s "web1: disk" ops@example.com
      mailrelay config init
      mailrelay providers
      mailrelay status
    """
    app = App(
        config=config,
        state=state,
        providers=providers,
        verbose=verbose,
        quiet=quiet,
        debug=debug,
        log_file=log_file,
    )
    ctx.obj = app
    ctx.call_on_close(app.close)


def _stderr(text: str) -> None:
    sys.stderr.write(f"mailrelay: error: {text}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: run the CLI and turn every failure into a documented exit code."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.UsageError as exc:
        hint = ""
        if exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        _stderr(f"{exc.format_message()}{hint}")
        code = ExitCode.USAGE
    except MailrelayError as exc:
        from mailrelay.secrets import scrub

        _stderr(scrub(str(exc)))
        if debug:
            raise
        code = exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        sys.stderr.write("\n")
        code = 130
    except BrokenPipeError:
        # the reader went away (| head): end quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141
    except click.exceptions.ClickException as exc:
        _stderr(exc.format_message())
        code = exc.exit_code
    except Exception as exc:
        if debug:
            raise
        from mailrelay.secrets import scrub

        _stderr(
            scrub(f"internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)")
        )
        code = ExitCode.SOFTWARE
    sys.exit(int(code or 0))
