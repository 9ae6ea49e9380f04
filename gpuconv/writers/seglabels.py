"""Label files from ready-made text per slice (YOLO-seg polygons), with the same file rules as
``LabelDirs.write_exam`` for boxes: atomic writes, stale files of the exam removed, and on
failure the files written for this exam removed again.  A file never mixes boxes and polygons:
Ultralytics reads a whole file as polygons when any line has more than 6 fields."""

from __future__ import annotations

from pathlib import Path

from .atomic import write_text_atomic
from .yolo import LabelDirs, label_name


def write_exam_texts(dirs: LabelDirs, exam: str, split: str, texts: dict[int, str],
                     n_slices: int, write_empty: bool) -> list[Path]:
    if write_empty:
        texts = {k: texts.get(k, "") for k in range(n_slices)}
    d = dirs.dir(split)
    written: list[Path] = []
    try:
        for k in sorted(texts):
            p = d / label_name(exam, k)
            write_text_atomic(p, texts[k])
            written.append(p)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    keep = set(written)
    for p in dirs.existing.pop(exam, []):
        if p not in keep:
            p.unlink(missing_ok=True)
    return written
