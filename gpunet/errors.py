"""What the user is told: the one exception the CLI turns into a single line on stderr and exit code 2, and
`printable`, which makes text from a file (class names, file names) safe to show on a terminal."""

from __future__ import annotations

import unicodedata

MAX_SHOWN = 80  # characters of a name from a file shown on a terminal or in a plot


class GpunetError(Exception):
    """A problem the user can fix: the message says what is wrong and how to fix it."""


def printable(text: str, limit: int = MAX_SHOWN) -> str:
    """`text` with every control or format character (escape sequences, bidirectional overrides, ...) written as
    its escape (\\x1b, \\u202e), cut to `limit` characters (ending in "...")."""
    text = str(text)
    if len(text) > 4 * limit:  # long enough to cut whatever the escapes add
        text = text[:4 * limit]
    shown = "".join(c if not unicodedata.category(c).startswith("C") else ascii(c)[1:-1] for c in text)
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."
