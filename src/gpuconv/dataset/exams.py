"""Exam ids and the train/val split.

Exam id: the file name without ``.nrrd``/``.nhdr`` and a trailing ``.seg``; then its trailing run
of digits when there is one (``COCA_0042.seg.nrrd`` -> ``0042``), else that whole stem
(``Segmentation.seg.nrrd`` -> ``Segmentation``).  Digits are kept as written (leading zeros too).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from gpuconv.errors import InputError

_SUFFIXES = (".nrrd", ".nhdr", ".nii.gz", ".nii", ".dcm")  # a DICOM series folder: its name
_TRAILING_DIGITS = re.compile(r"(\d+)$")
SPLITS = ("train", "val")


def exam_stem(path) -> str:
    name = Path(path).name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.lower().endswith(".seg"):
        name = name[:-4]
    return name


def exam_id(path) -> str:
    stem = exam_stem(path)
    m = _TRAILING_DIGITS.search(stem)
    return m.group(1) if m else stem


def check_unique_exam_ids(paths) -> dict[str, Path]:
    """exam id -> path; two inputs with one id are an error (their labels would collide)."""
    seen: dict[str, Path] = {}
    clashes = []
    for p in paths:
        e = exam_id(p)
        if e in seen:
            clashes.append(f"'{e}' from {seen[e]} and {p}")
        else:
            seen[e] = Path(p)
    if clashes:
        raise InputError("duplicate exam ids: " + "; ".join(clashes))
    return seen


def read_csv_rows(path, columns: tuple[str, ...], what: str) -> list[dict]:
    """Rows of a small CSV that must have ``columns``; one-line errors naming the file."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"cannot read {what} file ({exc.strerror or exc})", path) from None
    if not rows or not set(columns) <= set(rows[0]):
        raise InputError(f"{what} CSV needs the columns '{','.join(columns)}'", path)
    return rows


def read_split_rows(path, case_sensitive: bool = False) -> list[tuple[int, str, str]]:
    """(line number, exam, 'train'|'val') for each row of an ``exam,split`` CSV; ``test`` is
    written to val (documented).  ``case_sensitive``: 'Train' is an error, as in the COCA
    script, instead of 'train'."""
    out = []
    for n, row in enumerate(read_csv_rows(path, ("exam", "split"), "split"), start=2):
        split = (row["split"] or "").strip()
        split = split if case_sensitive else split.lower()
        if split == "test":
            split = "val"
        if split not in SPLITS:
            raise InputError(f"line {n}: split '{row['split']}' is not train, val or test", path)
        out.append((n, (row["exam"] or "").strip(), split))
    return out


def read_split_csv(path) -> dict[str, str]:
    """``exam,split`` rows -> {exam: 'train'|'val'}."""
    return {exam: split for _, exam, split in read_split_rows(path)}


def seeded_split(exams, val_fraction: float, seed: int) -> dict[str, str]:
    """Exactly round(n * val_fraction) exams go to val, chosen by a seeded permutation of the
    sorted ids, so the split does not depend on input order."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError("val fraction must be between 0 and 1")
    ordered = sorted(exams)
    n_val = int(round(len(ordered) * val_fraction))
    perm = np.random.default_rng(seed).permutation(len(ordered))
    val = {ordered[i] for i in perm[:n_val]}
    return {e: ("val" if e in val else "train") for e in ordered}
