"""The one error printer of every command: ``error: MESSAGE`` on stderr, one line.

Library errors speak the Python API's terms (``OptionError`` names the field); here they become
the CLI's (the flag).  Exit codes: 1 when some files failed, 2 when the run could not start.
"""

from __future__ import annotations

import contextlib

import click

from gpuconv.errors import InputError, OptionError, error_line

#: API field -> CLI flag, where the flag is not simply the field with dashes
FLAG_OF = {"fmt": "--format", "split_csv": "--split", "as_json": "--json"}


def flag(option: str) -> str:
    return FLAG_OF.get(option, "--" + option.replace("_", "-"))


def message(exc: BaseException) -> str:
    if isinstance(exc, OptionError):
        return exc.for_flag(flag(exc.option))
    return str(exc)


def err(msg) -> None:
    """Print one error line."""
    click.echo(error_line(msg), err=True)


def file_error(path, reason) -> None:
    """The per-file line: ``error: FILE: reason``."""
    err(f"{path}: {reason}")


@contextlib.contextmanager
def run_level(code: int = 2):
    """Errors that stop a whole command become one line and exit ``code``."""
    try:
        yield
    except (InputError, RuntimeError) as exc:
        err(message(exc))
        raise click.exceptions.Exit(code) from None
