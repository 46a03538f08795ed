"""`CliApp`: the library's App as the commands' context object, with the CLI's Output (the
terminal, --json, -v, -q), through which the App's warnings are printed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mailrelay.app import App

if TYPE_CHECKING:
    from mailrelay.cli.output import Output


class CliApp(App):
    """The App of one command line, and how its results are shown (`out`)."""

    def __init__(
        self,
        *,
        config: str | None,
        state: str | None,
        providers: Sequence[str],
        spool: str | None = None,
        verbose: int,
        quiet: bool,
        debug: bool,
        log_file: str | None = None,
    ) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.out = self.output(json_mode=False)
        super().__init__(
            config=config,
            state=state,
            providers=providers,
            spool=spool,
            debug=debug,
            warn=self._warn,
            log_file=log_file,
        )

    def _warn(self, text: str) -> None:
        self.out.warn(text)  # the Output of the moment: a command may make a --json one

    def merge(self, name: str, value: Any) -> None:
        """A global option given after the command word (see global_options)."""
        if name == "verbose":
            self.verbose += value
        elif name == "quiet":
            self.quiet = True
        else:
            super().merge(name, value)
        self.output(json_mode=self.out.json_mode)

    def output(self, *, json_mode: bool) -> Output:
        from mailrelay.cli.output import Output

        self.out = Output(json_mode=json_mode, verbose=self.verbose, quiet=self.quiet)
        return self.out
