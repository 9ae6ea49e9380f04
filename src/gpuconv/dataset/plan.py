"""The header-only plan every whole-corpus command starts from (convert, stats).

Inputs -> unique exam ids -> headers (a bad header fails that file alone) -> class list ->
split.  One place, so ``stats`` and ``convert --instances`` name, number and split exams alike.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gpuconv.dataset.classes import ClassMap, build_class_map
from gpuconv.errors import InputError
from gpuconv.dataset.classes import MAX_CLASSES
from gpuconv.dataset.exams import (check_trainable, check_unique_exam_ids, exam_id, read_split_csv,
                                   seeded_split)
from gpuconv.io.formats import find_label_files, read_header  # any supported format
from gpuconv.io.nrrd_read import VolumeHeader

NRRD_PATTERNS = ("*.nrrd", "*.nhdr")


def expand_inputs(inputs) -> list[Path]:
    """Files, folders (searched recursively) and globs -> sorted unique paths.

    A folder that holds segmentation files (``*.seg.nrrd``, DICOM-SEG ``*.dcm``) contributes
    only those (so CT volumes lying beside them are not mistaken for label maps); otherwise
    every .nrrd/.nhdr/.nii/.nii.gz in it (``io.formats.find_label_files``).
    """
    found: dict[str, Path] = {}
    for item in inputs:
        item = str(item)
        p = Path(item)
        if p.is_dir() and not _named_like_a_label_file(p):
            paths = find_label_files(p)   # a search: only regular files count
            named = False
        elif p.exists() or p.is_symlink():
            paths = [p]
            named = True
        else:
            paths = [Path(g) for g in sorted(glob.glob(item, recursive=True))]
            if not paths:
                raise InputError("no such file, folder or matching glob", item)
            named = True
        for q in paths:
            # named by the user (a path or a glob match): anything but an ordinary folder is an
            # input, so a FIFO, a device, a dangling link or a folder called x.seg.nrrd fails
            # with its own line (the reader says why) instead of vanishing (issue 14)
            if q.is_file() or (named and (not q.is_dir() or _named_like_a_label_file(q))):
                found.setdefault(str(q.resolve()), q)
    return sorted(found.values(), key=lambda q: str(q))


def _named_like_a_label_file(p: Path) -> bool:
    return p.name.lower().endswith((".nrrd", ".nhdr", ".nii.gz", ".nii", ".dcm"))


@dataclass
class RunPlan:
    headers: dict[Path, VolumeHeader]     # files that can be converted, in exam-id order
    class_map: ClassMap
    split_of: dict[str, str]              # exam id -> 'train' | 'val' | 'test'
    failures: list[dict] = field(default_factory=list)  # {"file", "reason"}, sorted at the end

    def fail(self, path, reason: str) -> None:
        self.failures.append({"file": str(path), "reason": reason})
        if self.on_error:
            self.on_error(str(path), reason)

    on_error: Callable | None = None


def plan_run(paths: list[Path], *, classes=None, single_class: bool = False,
             split_csv=None, val_fraction: float = 0.2, seed: int = 0,
             on_error=None, max_classes: int = MAX_CLASSES) -> RunPlan:
    """Read headers, build the class list and assign splits; raises InputError for problems
    that make the whole output wrong (duplicate exam ids, unreadable split/classes files)."""
    if not paths:
        raise InputError("no input files found")
    check_unique_exam_ids(paths)
    plan = RunPlan({}, ClassMap([]), {}, on_error=on_error)
    for p in sorted(paths, key=exam_id):
        try:
            plan.headers[p] = read_header(p)
        except InputError as exc:
            plan.fail(p, exc.reason)
    plan.class_map = build_class_map(list(plan.headers.values()), classes, single_class,
                                     max_classes)
    if split_csv is not None:
        table = read_split_csv(split_csv)
        for p in list(plan.headers):
            e = exam_id(p)
            if e in table:
                plan.split_of[e] = table[e]
            else:
                plan.fail(p, f"exam '{e}' is missing from the split CSV {split_csv}")
                del plan.headers[p]
    else:
        plan.split_of = seeded_split([exam_id(p) for p in plan.headers], val_fraction, seed)
    check_trainable(plan.split_of, f"the split CSV {split_csv}" if split_csv is not None
                    else f"--val-fraction {val_fraction}")
    return plan
