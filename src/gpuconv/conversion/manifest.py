"""Resumable runs: OUT/manifest.jsonl records each finished exam.

One JSON line per exam is appended (and flushed to disk) only after all of that exam's files
are in place, so a run killed at any moment leaves either a complete record or none.  An exam is
skipped on a re-run when its input hash, its options hash and its output files all still match;
anything else is redone.

Damage of any kind is tolerated: a line that is not UTF-8, not JSON, or not a record of the
expected shape (a torn last line, a hand edit, ``"files": null``) is ignored and counted in
``damaged`` (the run says so once), so its exam is simply redone; a torn last line never glues
onto the next record (a newline is written first).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

MANIFEST_NAME = "manifest.jsonl"


def input_hash(blob: bytes, data_blob: bytes | None = None) -> str:
    """BLAKE2b of an input file's bytes (and of a detached header's data file)."""
    h = hashlib.blake2b(blob, digest_size=16)
    if data_blob is not None:
        h.update(data_blob)
    return h.hexdigest()


def options_hash(options: dict) -> str:
    blob = json.dumps(options, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


_FIELD_TYPES = {"exam": str, "status": str, "input_hash": (str, type(None)),
                "options_hash": str, "files": list, "split": str}


def _parse_record(line: bytes) -> dict | None:
    """The record on one manifest line, or None when the line is damaged in any way."""
    try:
        rec = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("exam"), str):
        return None
    for key, types in _FIELD_TYPES.items():
        if key in rec and not isinstance(rec[key], types):
            return None
    if rec.get("status") == "ok":
        if not all(isinstance(rec.get(k), str) for k in ("input_hash", "options_hash", "split")):
            return None
        if not isinstance(rec.get("files"), list) or not all(
                isinstance(f, str) and f and not f.startswith("/") and ".." not in f.split("/")
                for f in rec["files"]):
            return None
        counts = [rec.get(k) for k in ("slices", "slices_with_boxes", "boxes", "max_plain_value")]
        per_class = rec.get("boxes_per_class")
        if not all(type(v) is int and v >= 0 for v in counts) or not isinstance(per_class, dict) \
                or not all(isinstance(c, str) and c.isdigit() and type(n) is int and n >= 0
                           for c, n in per_class.items()):
            return None
    return rec


class Manifest:
    def __init__(self, out: Path, reset: bool = False):
        self.path = Path(out) / MANIFEST_NAME
        self.entries: dict[str, dict] = {}
        self._lock = threading.Lock()
        self.damaged = 0
        self._needs_newline = False
        if reset:
            self.path.unlink(missing_ok=True)
        elif self.path.is_file():
            data = self.path.read_bytes()
            self._needs_newline = bool(data) and not data.endswith(b"\n")
            for line in data.split(b"\n"):
                if not line.strip():
                    continue
                rec = _parse_record(line)
                if rec is None:
                    self.damaged += 1
                else:
                    self.entries[rec["exam"]] = rec

    def is_done(self, exam: str, in_hash: str, opt_hash: str, out: Path) -> dict | None:
        """The recorded entry when this exam can be skipped, else None."""
        rec = self.entries.get(exam)
        if not rec or rec.get("status") != "ok":
            return None
        if rec.get("input_hash") != in_hash or rec.get("options_hash") != opt_hash:
            return None
        if not all((Path(out) / f).exists() for f in rec.get("files", [])):
            return None
        return rec

    def record(self, rec: dict) -> None:
        line = json.dumps(rec, sort_keys=True) + "\n"
        with self._lock:
            # one write() of a whole line: a kill leaves the line complete or torn (ignored on
            # reading).  No fsync: label files are not fsynced either, and it cost 6 ms a record
            with open(self.path, "a", encoding="utf-8") as fh:
                if self._needs_newline:  # a torn last line must not glue onto this record
                    fh.write("\n")
                    self._needs_newline = False
                fh.write(line)
            self.entries[rec["exam"]] = rec
