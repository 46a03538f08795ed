"""The command line: one click group; each command family lives in its own module.

Commands are thin: parse → call the library → render with `Output`. Known errors become one
line and a documented exit code (errors.py); a traceback only with --debug.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from mailrelay import __version__
from mailrelay.cli.context import CliApp as CliApp  # the commands' context object
from mailrelay.errors import ExitCode, MailrelayError, did_you_mean

F = TypeVar("F", bound=Callable[..., Any])

pass_app = click.make_pass_decorator(CliApp)


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
    "suppressions": (
        "mailrelay.cli.suppressions",
        "suppressions",
        "List, add, remove and import suppressed addresses.",
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
    """A global option given after the command word: fold it into the group's CliApp."""
    if param.name is None:
        return value
    source = ctx.get_parameter_source(param.name)
    if source in (None, click.core.ParameterSource.DEFAULT):
        return value
    app = ctx.find_object(CliApp)
    if app is None:  # shell completion parses without running the group: keep it for TAB
        ctx.meta[f"mailrelay.{param.name}"] = value
    else:
        app.merge(param.name, value)
    return value


def global_options(*, merge: bool = True) -> Callable[[F], F]:
    """The options every command takes, before or after its word (defined once, here).

    On the group they build the CliApp; on a command (`merge`) they update it, so
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
            help="State file, or a redis://, rediss://, unix:// or redis+sentinel:// URL to "
            "share it across hosts (default: $MAILRELAY_STATE, else the user data dir's "
            "mailrelay/state.toml).",
            **extra,
        ),
        click.option(
            "--spool",
            metavar="PATH|URL",
            type=path,
            help="Spool folder, or a redis://, rediss:// or unix:// URL to share the queue "
            "across hosts (default: $MAILRELAY_SPOOL, else spool_dir in the config, else the "
            "state's Redis when the state is a URL, else the user data dir's mailrelay/spool).",
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
    spool: str | None,
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
    app = CliApp(
        config=config,
        state=state,
        spool=spool,
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
    if argv is None:  # the console script: a process of its own
        _fewer_collections()
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
    if argv is None:  # the console script: the process ends here
        _freeze_heap()
    sys.exit(int(code or 0))


def _fewer_collections() -> None:
    """Collect cycles every 20,000 net allocations instead of every 700: loading a command's
    modules made ~20 young-generation passes over objects that all live to the end of the
    run (2.6 % of a one-message send, docs/benchmarks.md); a long run (serve, a batch, a
    flush loop) still collects, less often."""
    import gc

    gc.set_threshold(20_000, *gc.get_threshold()[1:])


def _freeze_heap() -> None:
    """Leave what the run built out of the collections of interpreter shutdown: they would
    walk every object of the start-up (the modules, click's command tree) for cycles that a
    process about to exit need not free; ~6% of a one-message send (docs/benchmarks.md).
    Nothing of ours is left to a finalizer: files are closed by `with` blocks."""
    import gc

    gc.freeze()
