"""One exception type for problems with a user's input, so callers can report them in one line."""


class InputError(ValueError):
    """Bad input: a file that cannot be read or converted, or options that contradict the data.

    ``str(error)`` is a single line suitable for ``path: reason`` reporting.
    """

    def __init__(self, reason: str, path=None):
        self.reason = " ".join(str(reason).split())  # always one line
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {self.reason}" if self.path else self.reason)


class OptionError(InputError):
    """An invalid setting, named by its Python (API) name in ``option``.

    The message speaks the API's terms (``connectivity: must be 4 or 8``); the CLI prints the
    flag instead (``--connectivity: must be 4 or 8``) through :meth:`for_flag`.
    """

    def __init__(self, option: str, reason: str):
        self.option = option
        super().__init__(f"{option}: {reason}")
        self.detail = " ".join(str(reason).split())

    def for_flag(self, flag: str) -> str:
        return f"{flag}: {self.detail}"
