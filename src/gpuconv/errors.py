"""One exception type for problems with a user's input, so callers can report them in one line."""


class InputError(ValueError):
    """Bad input: a file that cannot be read or converted, or options that contradict the data.

    ``str(error)`` is a single line suitable for ``path: reason`` reporting.
    """

    def __init__(self, reason: str, path=None):
        self.reason = " ".join(str(reason).split())  # always one line
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {self.reason}" if self.path else self.reason)
