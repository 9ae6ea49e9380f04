"""Ultralytics layout: labels/{split}/{exam}_{k+1}.txt and dataset.yaml."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import yaml

from gpuconv.results.boxes import BoxTable, yolo_views_by_slice
from gpuconv.dataset.exams import SPLITS
from gpuconv.writers.atomic import write_bytes_atomic, write_text_atomic

_LABEL_NAME = re.compile(r"^(.+)_(\d+)\.txt$")


def index_exam_files(dirs, pattern: re.Pattern) -> dict[str, list[Path]]:
    """{exam: files} already in ``dirs`` (created if missing) whose names ``pattern`` matches
    with the exam id as group 1: what a re-run must replace or remove."""
    existing: dict[str, list[Path]] = defaultdict(list)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        for p in d.iterdir():
            m = pattern.match(p.name)
            if m:
                existing[m.group(1)].append(p)
    return existing


def label_name(exam: str, k: int) -> str:
    """Slice k (0-based) of an exam -> its label file name; slices are numbered from 1."""
    return f"{exam}_{k + 1}.txt"


class LabelDirs:
    """labels/{train,val}/ under OUT, with an index of files already there (for re-runs)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.existing = index_exam_files([self.dir(split) for split in SPLITS], _LABEL_NAME)

    def dir(self, split: str) -> Path:
        return self.out / "labels" / split

    def write_exam(self, exam: str, split: str, boxes: BoxTable, write_empty: bool) -> list[Path]:
        """Box labels of one exam (see ``write_texts``); each file's bytes are a view of one
        text buffer for the whole exam (no string per file)."""
        return self.write_texts(exam, split, yolo_views_by_slice(boxes), boxes.slices,
                                write_empty)

    def write_texts(self, exam: str, split: str, texts: dict, n_slices: int,
                    write_empty: bool) -> list[Path]:
        """Write one exam's label files from ready text (str, or bytes-like) per slice k (boxes
        or polygons, never both in one file); remove its files left from an earlier run.  Returns the files
        written.  On failure, the files written for this exam are removed again."""
        if write_empty:
            texts = {k: texts.get(k, "") for k in range(n_slices)}
        d = self.dir(split)
        written: list[Path] = []
        try:
            for k in sorted(texts):
                p = d / label_name(exam, k)
                text = texts[k]
                if isinstance(text, str):
                    write_text_atomic(p, text)
                else:
                    write_bytes_atomic(p, text)
                written.append(p)
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        keep = set(written)
        for p in self.existing.pop(exam, []):
            if p not in keep:
                p.unlink(missing_ok=True)
        return written


def write_dataset_yaml(out: Path, names: list[str]) -> Path:
    doc = {
        "path": str(Path(out).resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": {i: n for i, n in enumerate(names)},
    }
    p = Path(out) / "dataset.yaml"
    write_text_atomic(p, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return p
