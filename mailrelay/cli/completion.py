"""`mailrelay completion bash|zsh|fish`: print the shell completion script, and the completion
helper for options that take a provider name.

The scripts are click's own (what `_MAILRELAY_COMPLETE=<shell>_source mailrelay` prints); they
call back into mailrelay at every TAB, so they never go stale as the CLI grows. The copies in
completions/ are the same text, checked in for packagers and kept in sync by a test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from mailrelay.cli import global_options

if TYPE_CHECKING:  # click.shell_completion is loaded at a TAB, not by every command using this
    from click.shell_completion import CompletionItem

PROG_NAME = "mailrelay"
COMPLETE_VAR = "_MAILRELAY_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def completion_script(shell: str) -> str:
    """The completion script click generates for `shell`, without a trailing newline."""
    from click.shell_completion import get_completion_class

    from mailrelay.cli import cli

    comp_cls = get_completion_class(shell)
    if comp_cls is None:  # pragma: no cover - SHELLS are all built into click
        raise click.BadParameter(f"unsupported shell {shell!r}")
    return comp_cls(cli, {}, PROG_NAME, COMPLETE_VAR).source()


def complete_provider_names(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """`shell_complete=` helper: the names of the configured providers.

    Reads the config file (and --provider URLs, $MAILRELAY_PROVIDERS) without building a
    provider or resolving a secret, and offers nothing rather than fail: a TAB must never
    print a traceback into the user's command line.
    """
    try:
        from click.shell_completion import CompletionItem

        from mailrelay.config import load_settings

        root = ctx.find_root().params
        config = ctx.meta.get("mailrelay.config") or root.get("config")
        urls = ctx.meta.get("mailrelay.providers") or root.get("providers") or ()
        settings = load_settings(config, tuple(urls))
        return [
            CompletionItem(spec.name, help=spec.type)
            for spec in settings.providers
            if spec.name.startswith(incomplete)
        ]
    except Exception:
        return []


@click.command(context_settings={"max_content_width": 100})
@click.argument("shell", type=click.Choice(SHELLS), metavar="bash|zsh|fish")
@global_options()
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    Packages install these scripts already (the wheel puts them in share/bash-completion,
    share/zsh/site-functions and share/fish/vendor_completions.d); this command is for
    installs that did not.

    \b
    Examples:
      mailrelay completion bash > ~/.local/share/bash-completion/completions/mailrelay
      mailrelay completion zsh > ~/.zfunc/_mailrelay
      mailrelay completion fish > ~/.config/fish/completions/mailrelay.fish
      eval "$(mailrelay completion bash)"
    """
    click.echo(completion_script(shell))
