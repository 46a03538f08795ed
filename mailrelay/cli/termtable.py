"""A table laid out to fit a terminal's width, no cell ever split or cut.

The row keeps its first columns, each whole (a name or type is never split over two lines);
the columns that do not fit beside them (the `long` ones first, then from the right) go
under the row, one labelled line each, in full, wrapped at the terminal's edge. Pure: it
returns the lines with their colours, and output.py prints them."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

GAP = 2  # spaces between two cells
KEPT = 2  # the first columns always stay on the row (the name and its type)
NOTE_INDENT = 4


def layout(
    columns: Sequence[str], rows: Sequence[Sequence[str]], long: Sequence[str], width: int
) -> list[int]:
    """The indexes of the columns that stay on the row at `width` (the others go under it)."""
    natural = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

    def fits(kept: list[int]) -> bool:
        return sum(natural[i] for i in kept) + GAP * (len(kept) - 1) <= width

    kept = list(range(len(columns)))
    if fits(kept):
        return kept
    kept = [i for i in kept if columns[i] not in long]
    while len(kept) > KEPT and not fits(kept):
        kept.pop()
    return kept


def note_lines(label: str, text: str, width: int) -> list[str]:
    """`label: text` under a row, indented, wrapped at `width`, nothing left out."""
    lead = " " * NOTE_INDENT
    return textwrap.wrap(
        f"{label}: {text}",
        width=max(width, NOTE_INDENT + 20),
        initial_indent=lead,
        subsequent_indent=lead + "  ",
        break_long_words=True,
        break_on_hyphens=False,
    )


def render(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    styles: Sequence[Sequence[str | None]],
    *,
    long: Sequence[str],
    width: int,
) -> list[list[tuple[str, str | None]]]:
    """The header and the rows as lines of (text, style) pieces, each line at most `width`
    wide except a kept cell that is wider than the terminal by itself."""
    kept = layout(columns, rows, long, width)
    under = [i for i in range(len(columns)) if i not in kept]
    widths = {i: max([len(columns[i])] + [len(r[i]) for r in rows]) for i in kept}

    def line(
        cells: Sequence[str], cell_styles: Sequence[str | None]
    ) -> list[tuple[str, str | None]]:
        pieces: list[tuple[str, str | None]] = []
        for n, i in enumerate(kept):
            last = n == len(kept) - 1
            text = cells[i] if last else cells[i].ljust(widths[i])
            pieces.append((text, cell_styles[i]))
            if not last:
                pieces.append((" " * GAP, None))
        return pieces

    out = [line(columns, ["bold"] * len(columns))]
    for row, row_styles in zip(rows, styles, strict=True):
        out.append(line(row, row_styles))
        for i in under:
            if row[i] and row[i] != "-":
                out.extend(
                    [(text, row_styles[i])] for text in note_lines(columns[i], row[i], width)
                )
    return out
