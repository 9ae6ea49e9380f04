"""One run at a time per output folder: an exclusive lock on OUT/.gpuconv.lock.

A second ``convert`` into the same OUT while the first runs would clean up the first run's
in-flight temporaries and interleave manifest records; it is refused at once with one line
(exit 2).  The lock is ``flock`` on an open file, so the kernel releases it when the holder dies
(even by SIGKILL): a stale lock file never blocks a later run.
"""

from __future__ import annotations

import os
from pathlib import Path

from gpuconv.errors import InputError

LOCK_NAME = ".gpuconv.lock"


def prepare_output(out: Path) -> None:
    """Create OUT, or fail with one line when it cannot hold a dataset."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError("the output path exists and is not a folder", out) from None
    except NotADirectoryError:
        raise InputError("the output path lies under a file", out) from None
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({exc.strerror or exc})", out) from None
    if not out.is_dir():
        raise InputError("the output path exists and is not a folder", out)
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError("the output folder is not writable", out)


class OutputLock:
    """``with OutputLock(out):`` holds the folder for one run."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> "OutputLock":
        for _ in range(100):  # the holder unlinks the file on exit: lock what the name names
            fd = self._lock_once()
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return self
            os.close(fd)
        raise InputError("cannot take the run lock (it keeps being replaced)", self.path.parent)

    def _lock_once(self) -> int:
        import fcntl
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"cannot create the run lock ({exc.strerror or exc})",
                             self.path.parent) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            finally:
                os.close(fd)
            raise InputError(f"another gpuconv run (pid {holder}) is writing to this folder; "
                             "wait for it to finish or choose another output folder",
                             self.path.parent) from None
        return fd

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            try:
                self.path.unlink(missing_ok=True)  # still holding it: no run can be in between
            finally:
                os.close(self.fd)
                self.fd = None
