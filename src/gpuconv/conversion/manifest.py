"""Resumable runs: OUT/manifest.jsonl records each finished exam.

One JSON line per exam is appended (and flushed to disk) only after all of that exam's files
are in place, so a run killed at any moment leaves either a complete record or none; a torn last
line is ignored on reading.  An exam is skipped on a re-run when its input hash, its options
hash and its output files all still match; anything else is redone.
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


class Manifest:
    def __init__(self, out: Path, reset: bool = False):
        self.path = Path(out) / MANIFEST_NAME
        self.entries: dict[str, dict] = {}
        self._lock = threading.Lock()
        if reset:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill
                if isinstance(rec, dict) and "exam" in rec:
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
            with open(self.path, "a") as fh:
                fh.write(line)
            self.entries[rec["exam"]] = rec
