"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one."""

from __future__ import annotations

import os
import re
from pathlib import Path

_TEMP_NAME = re.compile(r"^\..+\.tmp\d+$")


def write_bytes_atomic(path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def remove_stale_temps(root) -> int:
    """Delete temporaries a killed run left under ``root`` (a kill -9 cannot clean up)."""
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
