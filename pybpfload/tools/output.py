"""Printing what processes chose to call themselves, safely.

Process names, arguments, file names and container names come from whoever
started the process.  In a table they are shown with every control
character, escape sequence and invalid UTF-8 byte escaped, so nothing they
hold can move the cursor, recolour the terminal or forge a line.  In JSON
they are decoded as UTF-8 with invalid bytes kept as ``\\xNN`` escapes, so
every line is valid JSON.
"""

import json
import re

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\\]|[\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def text(value):
    """Bytes or str -> str, invalid UTF-8 bytes as ``\\xNN``."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def _escape_char(m):
    c = m.group(0)
    if c == "\\":
        return "\\\\"
    if c == "\n":
        return "\\n"
    if c == "\t":
        return "\\t"
    if c == "\r":
        return "\\r"
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def safe(value):
    """A string fit for a terminal: control characters and bidi overrides escaped."""
    s = text(value)
    return _UNSAFE.sub(_escape_char, s)


def args_text(args):
    """A list of argument bytes/str -> one escaped line."""
    if not args:
        return ""
    return " ".join(safe(a) for a in args)


def json_line(record):
    """One JSON object per line; bytes values decoded as :func:`text` does."""
    return json.dumps(record, default=_default, ensure_ascii=False, separators=(",", ":"))


def _default(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return text(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def short_id(container_id, width=12):
    return (container_id or "")[:width]


class Table:
    """Fixed columns; the last column takes the rest of the line."""

    def __init__(self, columns, out):
        self.columns = columns          # [(title, width)]; width None for the last
        self.out = out

    def header(self):
        self._row([c[0] for c in self.columns])

    def row(self, values):
        self._row([safe(v) for v in values])

    def _row(self, values):
        parts = []
        for (title, width), v in zip(self.columns, values):
            parts.append(v if width is None else v.ljust(width))
        self.out.write(" ".join(parts).rstrip() + "\n")
