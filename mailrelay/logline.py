"""Text for one line of a log: what a request or an error says, with its control characters
written as visible escapes."""

from __future__ import annotations

import re

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
