"""One exception type for problems with a user's input, so callers can report them in one line."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def one_line(text) -> str:
    """``text`` with every line break and control character escaped (``\\n``, ``\\x1b``...), so a
    file name holding a newline cannot split an error line or move the terminal's cursor."""
    def esc(m):
        c = m.group(0)
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c, f"\\x{ord(c):02x}"
                                                           if ord(c) < 256 else f"\\u{ord(c):04x}")
    return _CONTROL.sub(esc, str(text))


def shown(value, limit: int = 80) -> str:
    """A value quoted inside a message: one line, at most ``limit`` characters."""
    s = one_line(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


class InputError(ValueError):
    """Bad input: a file that cannot be read or converted, or options that contradict the data.

    ``str(error)`` is a single line suitable for ``path: reason`` reporting; ``path`` keeps the
    real name, the message shows it with line breaks and control characters escaped.
    """

    def __init__(self, reason: str, path=None):
        self.reason = one_line(" ".join(str(reason).split()))  # always one line
        self.path = None if path is None else str(path)
        super().__init__(f"{one_line(self.path)}: {self.reason}" if self.path else self.reason)


def error_line(message) -> str:
    """The line a command prints for an error: ``error: MESSAGE`` with MESSAGE on one line."""
    return f"error: {one_line(message)}"


class OptionError(InputError):
    """An invalid setting, named by its Python (API) name in ``option``.

    The message speaks the API's terms (``connectivity: must be 4 or 8``); the CLI prints the
    flag instead (``--connectivity: must be 4 or 8``) through :meth:`for_flag`.
    """

    def __init__(self, option: str, reason: str):
        self.option = option
        super().__init__(f"{option}: {reason}")
        self.detail = one_line(" ".join(str(reason).split()))

    def for_flag(self, flag: str) -> str:
        return f"{flag}: {self.detail}"
