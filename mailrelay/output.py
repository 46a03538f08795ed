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


LONG_CELL_WIDTH = 40  # a long error is wrapped to this width and cut after two rows


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


def two_rows(text: str, width: int = LONG_CELL_WIDTH) -> str:
    """`text` in at most two rows of `width`, the rest cut with …"""
    import textwrap

    rows = textwrap.wrap(text, width=width, break_long_words=True) or [""]
    if len(rows) > 2:
        rows = [rows[0], rows[1][: width - 1].rstrip() + "…"]
    return "\n".join(rows)


# C0 controls (TAB, CR and LF among them), DEL, the C1 controls and the Unicode line and
# paragraph separators: what a terminal or a log reader takes as a line end or an escape
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\\\\]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def escape_controls(text: str) -> str:
    """`text` for one line of a log: each control character as a visible escape (\\n,
    \\x1b, \\u2028) and a backslash doubled, so a request cannot forge or erase a line."""

    def escaped(m: re.Match[str]) -> str:
        char = m.group()
        if char in _NAMED:
            return _NAMED[char]
        return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    return _CONTROL.sub(escaped, text)


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
    ) -> None:
        """A rich table on a terminal (colours unless $NO_COLOR; the `long` columns take at
        most two rows); tab-free aligned plain lines otherwise."""
        styles = [[getattr(c, "style", None) for c in row] for row in rows]
        rows = [[scrub(c) for c in row] for row in rows]
        if _isatty(self.stdout):
            from rich.console import Console
            from rich.table import Table
            from rich.text import Text

            console = Console(
                file=self.stdout, no_color=bool(os.environ.get("NO_COLOR")), highlight=False
            )
            cut = [c in long for c in columns]
            # the long columns share what the others leave of the terminal, 40 at most each
            natural = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
            rest = console.width - 3 * len(columns) - 1
            rest -= sum(w for w, is_long in zip(natural, cut, strict=True) if not is_long)
            width = max(12, min(LONG_CELL_WIDTH, rest // max(1, sum(cut))))
            table = Table(title=title, title_justify="left")
            for col, is_long in zip(columns, cut, strict=True):
                if is_long:
                    table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=width)
                else:
                    table.add_column(col, overflow="fold")
            for row, row_styles in zip(rows, styles, strict=True):
                table.add_row(
                    *(
                        Text(two_rows(c, width) if cut[i] else c, style=row_styles[i] or "")
                        for i, c in enumerate(row)
                    )
                )
            console.print(table)
            return
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        for line in [list(columns), *rows]:
            cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])] + [line[-1]]
            self.data("  ".join(cells).rstrip())
