"""The one place that renders results: JSON on request, rich tables on a terminal, plain
lines otherwise. Data goes to stdout, diagnostics to stderr; every string is scrubbed of
known secrets on the way out."""

from __future__ import annotations

import os
import re
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


class Styled(str):
    """A table cell with a colour for terminals ("green", "red", "yellow"); plain elsewhere."""

    style: str | None

    def __new__(cls, text: str, style: str | None = None) -> Styled:
        cell = super().__new__(cls, text)
        cell.style = style
        return cell


def health_cell(text: str, *, ok: bool, cooling: bool = False) -> Styled:
    """Healthy green, failing red, cooling yellow."""
    return Styled(text, "red" if not ok else "yellow" if cooling else "green")


# C0 controls (TAB, CR and LF among them), DEL, the C1 controls and the Unicode line and
# paragraph separators: what a terminal or a log reader takes as a line end or an escape
_CONTROL = "[\x00-\x1f\x7f-\x9f\u2028\u2029\\\\]"  # compiled at first use: serve's logs
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def escape_controls(text: str) -> str:
    """`text` for one line of a log: each control character as a visible escape (\\n,
    \\x1b, \\u2028) and a backslash doubled, so a request cannot forge or erase a line."""

    def escaped(m: re.Match[str]) -> str:
        char = m.group()
        if char in _NAMED:
            return _NAMED[char]
        return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    return re.sub(_CONTROL, escaped, text)  # re's cache keeps the compiled pattern


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

    def table(
        self,
        title: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        long: Sequence[str] = (),
        wide_only: Sequence[str] = (),
        wide: bool = False,
    ) -> None:
        """On a terminal, a table that fits its width (termtable.py: colours unless
        $NO_COLOR; what does not fit beside a row goes under it, in full; the `wide_only`
        columns only when `wide`); tab-free aligned plain lines of every column otherwise."""
        styles = [[getattr(c, "style", None) for c in row] for row in rows]
        rows = [[scrub(c) for c in row] for row in rows]
        if _isatty(self.stdout):
            from rich.console import Console
            from rich.text import Text

            from mailrelay.termtable import render

            console = Console(
                file=self.stdout, no_color=bool(os.environ.get("NO_COLOR")), highlight=False
            )
            shown = [i for i, c in enumerate(columns) if wide or c not in wide_only]
            lines = render(
                [columns[i] for i in shown],
                [[r[i] for i in shown] for r in rows],
                [[s[i] for i in shown] for s in styles],
                long=long,
                width=console.width,
            )
            console.print(Text(title, style="italic"), overflow="fold")
            for pieces in lines:
                console.print(Text.assemble(*((t, s or "") for t, s in pieces)), soft_wrap=True)
            return
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        for line in [list(columns), *rows]:
            cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])] + [line[-1]]
            self.data("  ".join(cells).rstrip())
