"""Exam ids and the train/val/test split.

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
SPLITS = ("train", "val", "test")


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
    import io
    from gpuconv.io.safe_yaml import read_user_text  # UTF-8, size cap (issue 14)
    text = read_user_text(path, f"{what} file")
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as exc:  # a NUL byte, a field past csv's size limit
        raise InputError(f"{what} file is not a CSV ({exc})", path) from None
    if not rows or not set(columns) <= set(rows[0]):
        raise InputError(f"{what} CSV needs the columns '{','.join(columns)}'", path)
    return rows


def read_split_rows(path, case_sensitive: bool = False,
                    keep_test: bool = False) -> list[tuple[int, str, str]]:
    """(line number, exam, split) for each row of an ``exam,split`` CSV, split one of train, val,
    test.  Without ``keep_test``, ``test`` is returned as val (what ``--compat coca`` and a CSV
    without val rows use).  ``case_sensitive``: 'Train' is an error, as in the COCA script,
    instead of 'train'."""
    out = []
    for n, row in enumerate(read_csv_rows(path, ("exam", "split"), "split"), start=2):
        split = (row["split"] or "").strip()
        split = split if case_sensitive else split.lower()
        if split not in SPLITS:
            raise InputError(f"line {n}: split '{row['split']}' is not train, val or test", path)
        if split == "test" and not keep_test:
            split = "val"
        out.append((n, (row["exam"] or "").strip(), split))
    return out


TEST_AS_VAL = ("the split CSV has train and test rows but no val rows: test exams are written "
               "to val (images/val, labels/val) and Ultralytics validates on them")


def read_split_csv(path) -> dict[str, str]:
    """``exam,split`` rows -> {exam: 'train'|'val'|'test'}.

    A CSV with val rows keeps its test rows apart (``images/test``, ``labels/test`` and a
    ``test:`` key, so held-out exams never leak into validation); a CSV with train and test rows
    only (COCA's own ``train_test_split.csv``) has its test exams written to val, as before
    (``split_note`` says so in the summary)."""
    rows = read_split_rows(path, keep_test=True)
    has_val = any(split == "val" for _, _, split in rows)
    return {exam: (split if has_val or split != "test" else "val") for _, exam, split in rows}


def csv_uses_test_as_val(path) -> bool:
    """True when ``read_split_csv`` wrote the CSV's test rows to val."""
    splits = {split for _, _, split in read_split_rows(path, keep_test=True)}
    return "test" in splits and "val" not in splits


def seeded_split(exams, val_fraction: float, seed: int) -> dict[str, str]:
    """round(n * val_fraction) exams go to val, but at least one and at most n - 1 when there
    are two or more exams and ``val_fraction`` > 0 (so neither split is ever empty by rounding),
    chosen by a seeded permutation of the sorted ids, so the split does not depend on input
    order.  A single exam goes to train (``val_source`` then points val at the train images)."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError("val fraction must be between 0 and 1")
    ordered = sorted(exams)
    n = len(ordered)
    n_val = int(round(n * val_fraction))
    if n >= 2 and val_fraction > 0:
        n_val = min(max(n_val, 1), n - 1)
    elif n < 2:
        n_val = 0
    perm = np.random.default_rng(seed).permutation(n)
    val = {ordered[i] for i in perm[:n_val]}
    return {e: ("val" if e in val else "train") for e in ordered}


def split_counts(split_of) -> dict[str, int]:
    """{'train': n, 'val': n[, 'test': n]}: exams per split (test only when there is one)."""
    splits = list(split_of.values()) if isinstance(split_of, dict) else list(split_of)
    counts = {"train": splits.count("train"), "val": splits.count("val")}
    if "test" in splits:
        counts["test"] = splits.count("test")
    return counts


def check_trainable(split_of: dict[str, str], source: str) -> None:
    """Refuse, before anything is written, a split that leaves train empty (Ultralytics needs
    training images); ``source`` says where the split came from, for the one-line error."""
    counts = split_counts(split_of)
    if split_of and counts["train"] == 0:
        per = ", ".join(f"{k} {v}" for k, v in counts.items())
        raise InputError(f"no exam goes to train ({per}, from {source}); Ultralytics needs "
                         "training images: put at least one exam in train")


def val_source(counts: dict[str, int]) -> str:
    """The folder dataset.yaml names for ``val:``: images/val, or images/train when no exam went
    to val (one exam, ``--val-fraction 0``, a CSV without val/test rows), so Ultralytics still
    trains (validating on the training images) instead of stopping at an empty folder."""
    return "images/val" if counts.get("val", 0) > 0 else "images/train"


def split_note(counts: dict[str, int], split_csv=None) -> str | None:
    """One sentence for the summary when the split is not the plain train/val one, else None."""
    notes = []
    if split_csv is not None and csv_uses_test_as_val(split_csv):
        notes.append(TEST_AS_VAL)
    if counts.get("train", 0) and not counts.get("val", 0):
        notes.append("no exam went to val: dataset.yaml's val points at images/train, so "
                     "Ultralytics trains but validates on the training images (give a split CSV "
                     "with val rows or more exams for a held-out validation)")
    return "; ".join(notes) or None
