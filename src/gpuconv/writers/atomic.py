"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one."""

from __future__ import annotations

import os
import re
from pathlib import Path

# A temporary is ".NAME.tmpPID-gpuconv": the marker keeps the stale-temporary cleanup away from
# a user's own files (only names this module makes are ever deleted).
_TEMP_NAME = re.compile(r"^\..+\.tmp\d+-gpuconv$")


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary beside ``path``, then rename it over ``path``."""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.tmp{os.getpid()}-gpuconv")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text_atomic(path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def remove_stale_temps(root) -> int:
    """Delete temporaries a killed run left under ``root`` (a kill -9 cannot clean up).  Only
    names with this module's marker; the caller holds the output lock, so no other run's
    in-flight temporaries can be among them."""
    root = Path(root)
    if not root.is_dir():
        return 0
    n = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if _TEMP_NAME.match(name):
                Path(dirpath, name).unlink(missing_ok=True)
                n += 1
    return n
