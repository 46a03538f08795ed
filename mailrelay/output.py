"""The one place that renders results: JSON on request, rich tables on a terminal, plain
lines otherwise. Data goes to stdout, diagnostics to stderr; every string is scrubbed of
known secrets on the way out."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from typing import IO, Any

from mailrelay.secrets import scrub

PROG = "mailrelay"


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class Output:
    def __init__(
        self,
        *,
        json_mode: bool = False,
        verbose: int = 0,
        quiet: bool = False,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ) -> None:
        self.json_mode = json_mode
        self.verbose = verbose
        self.quiet = quiet
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    @property
    def interactive(self) -> bool:
        """A person is watching stderr: show the one-line success and failover notes."""
        return _isatty(self.stderr)

    # --- low level -----------------------------------------------------------------------

    def data(self, text: str) -> None:
        self.stdout.write(scrub(text) + "\n")
        self.stdout.flush()

    def emit_json(self, document: dict[str, Any]) -> None:
        import json  # only --json pays for it

        self.data(json.dumps(document, indent=2, default=jsonable, ensure_ascii=False))

    def note(self, text: str) -> None:
        """A diagnostic for people; suppressed by --quiet."""
        if not self.quiet:
            self.stderr.write(scrub(f"{PROG}: {text}") + "\n")
            self.stderr.flush()

    def warn(self, text: str) -> None:
        self.note(f"warning: {text}")

    def error(self, text: str) -> None:
        """Errors are shown even with --quiet: a silent failure is worse than noise."""
        self.stderr.write(scrub(f"{PROG}: error: {text}") + "\n")
        self.stderr.flush()

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """A rich table on a terminal; tab-free aligned plain lines otherwise."""
        rows = [[scrub(c) for c in row] for row in rows]
        if _isatty(self.stdout):
            from rich.console import Console
            from rich.table import Table

            table = Table(title=title, title_justify="left")
            for col in columns:
                table.add_column(col, overflow="fold")
            for row in rows:
                table.add_row(*row)
            Console(file=self.stdout).print(table)
            return
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        for line in [list(columns), *rows]:
            cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])] + [line[-1]]
            self.data("  ".join(cells).rstrip())
