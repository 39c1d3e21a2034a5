"""Text that reaches a terminal or a spreadsheet: control characters shown, formulas defused.

Stored values come from clients (user ids, account names, tags); printed raw, a newline or an
escape sequence could forge report rows or drive the terminal, and a CSV cell starting with ``=``
runs as a formula when the file is opened in a spreadsheet.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{ord(char):02x}")


def sanitize(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1) shown as an escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(_escape, text)


def csv_cell(text: str) -> str:
    """A text cell for CSV: a leading ``=``, ``+``, ``-``, ``@``, tab or CR is prefixed with ``'``
    so that spreadsheets show the text instead of evaluating it (OWASP's CSV injection advice)."""
    return "'" + text if text.startswith(_FORMULA_START) else text
