"""``convert``: the end-to-end job (inputs -> header pre-pass -> per-file labelling -> writers).

Per-file work is isolated: a bad file is recorded with a one-line reason and the others still
convert.  Problems that would make the whole output wrong (duplicate exam ids, an unreadable
split or classes file) stop the run before anything is written.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .backends import get_backend
from .boxes import BoxTable, to_box_table
from .classes import ClassMap, build_class_map
from .errors import InputError
from .exams import check_unique_exam_ids, exam_id, read_split_csv, seeded_split
from .nrrdio import VolumeHeader, read_header, read_volume
from .writers.atomic import write_text_atomic
from .writers.yolo import LabelDirs, write_dataset_yaml

NRRD_PATTERNS = ("*.nrrd", "*.nhdr")


def expand_inputs(inputs) -> list[Path]:
    """Files, folders (searched recursively) and globs -> sorted unique paths.

    A folder that holds ``*.seg.nrrd`` files contributes only those (so CT volumes lying beside
    their segmentations are not mistaken for label maps); otherwise every .nrrd/.nhdr in it.
    """
    found: dict[str, Path] = {}
    for item in inputs:
        item = str(item)
        p = Path(item)
        if p.is_dir():
            seg = sorted(p.rglob("*.seg.nrrd"))
            paths = seg or sorted(q for pat in NRRD_PATTERNS for q in p.rglob(pat))
        elif p.exists():
            paths = [p]
        else:
            paths = [Path(g) for g in sorted(glob.glob(item, recursive=True))]
            if not paths:
                raise InputError("no such file, folder or matching glob", item)
        for q in paths:
            if q.is_file():
                found.setdefault(str(q.resolve()), q)
    return sorted(found.values(), key=lambda q: str(q))


@dataclass
class ExamResult:
    exam: str
    path: Path
    boxes: BoxTable
    max_plain_value: int = 0
    timings: dict = field(default_factory=dict)


def label_exam(path: Path, class_map: ClassMap, backend, connectivity: int) -> ExamResult:
    """Read, decode and reduce one file to its canonical box table (no files written)."""
    t0 = time.perf_counter()
    vol = read_volume(path)
    t1 = time.perf_counter()
    comp = backend.slice_components(vol.layers, connectivity)
    t2 = time.perf_counter()
    boxes = to_box_table(comp, vol.header, class_map)
    max_plain = int(comp.value.max()) if (vol.header.segments is None and len(comp)) else 0
    return ExamResult(exam_id(path), path, boxes, max_plain,
                      {"read": t1 - t0, "label": t2 - t1, "boxes": time.perf_counter() - t2})


def _progress(total: int, enabled: bool | None):
    """A rich progress bar on a terminal, nothing otherwise."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)
    from rich.console import Console
    prog = Progress(TextColumn("converting"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True)
    prog.add_task("files", total=total, rate="")
    return prog


def convert(inputs, out, *, split_csv=None, val_fraction: float = 0.2, seed: int = 0,
            connectivity: int = 8, classes=None, single_class: bool = False,
            write_empty: bool = False, backend="auto", workers: int | None = None,
            progress: bool | None = None, on_error=None) -> dict:
    """Convert label volumes to an Ultralytics dataset in ``out``; returns the summary dict.

    ``on_error(path, reason)`` is called for each failed file (the CLI prints it as one line).
    Raises InputError for problems that stop the whole run before anything is written.
    """
    started = time.perf_counter()
    if connectivity not in (4, 8):
        raise InputError("--connectivity must be 4 or 8")
    be = get_backend(backend)
    out = Path(out)
    paths = expand_inputs(inputs)
    if not paths:
        raise InputError("no input files found")
    check_unique_exam_ids(paths)

    failures: list[dict] = []

    def fail(path, reason):
        failures.append({"file": str(path), "reason": reason})
        if on_error:
            on_error(str(path), reason)

    headers: dict[Path, VolumeHeader] = {}
    for p in sorted(paths, key=exam_id):
        try:
            headers[p] = read_header(p)
        except InputError as exc:
            fail(p, exc.reason)
    class_map = build_class_map(list(headers.values()), classes, single_class)

    exams = [exam_id(p) for p in headers]
    if split_csv is not None:
        table = read_split_csv(split_csv)
        split_of = {}
        for p in list(headers):
            e = exam_id(p)
            if e in table:
                split_of[e] = table[e]
            else:
                fail(p, f"exam '{e}' is missing from the split CSV {split_csv}")
                del headers[p]
    else:
        split_of = seeded_split(exams, val_fraction, seed)

    out.mkdir(parents=True, exist_ok=True)
    dirs = LabelDirs(out)
    todo = sorted(headers, key=exam_id)
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))

    per_class = [0] * len(class_map.names)
    totals = {"files": 0, "slices": 0, "slices_with_boxes": 0, "label_files": 0, "boxes": 0}
    stage = {"read": 0.0, "label": 0.0, "boxes": 0.0, "write": 0.0}
    split_counts = {"train": 0, "val": 0}
    max_plain = 0

    def work(p):
        res = label_exam(p, class_map, be, connectivity)
        t0 = time.perf_counter()
        n_files = dirs.write_exam(res.exam, split_of[res.exam], res.boxes, write_empty)
        res.timings["write"] = time.perf_counter() - t0
        return res, n_files

    prog = _progress(len(todo), progress)
    if prog:
        prog.start()
    try:
        with ThreadPoolExecutor(n_workers) as pool:
            futures = {pool.submit(work, p): p for p in todo}
            for fut in as_completed(futures):
                p = futures[fut]
                try:
                    res, n_files = fut.result()
                except InputError as exc:
                    fail(p, exc.reason)
                except Exception as exc:  # a crash in one file must not stop the others
                    fail(p, f"{type(exc).__name__}: {exc}")
                else:
                    b = res.boxes
                    totals["files"] += 1
                    totals["slices"] += b.slices
                    totals["slices_with_boxes"] += len(set(b.k.tolist()))
                    totals["label_files"] += n_files
                    totals["boxes"] += len(b)
                    split_counts[split_of[res.exam]] += 1
                    max_plain = max(max_plain, res.max_plain_value)
                    for c in b.cls.tolist():
                        if c >= len(per_class):
                            per_class.extend([0] * (c + 1 - len(per_class)))
                        per_class[c] += 1
                    for key, v in res.timings.items():
                        stage[key] += v
                if prog:
                    done = totals["files"] + len(failures)
                    rate = done / max(time.perf_counter() - started, 1e-9)
                    prog.update(0, advance=1, rate=f"{rate:.1f} files/s")
    finally:
        if prog:
            prog.stop()

    names = class_map.final_names(max_plain)
    per_class += [0] * (len(names) - len(per_class))
    yaml_path = write_dataset_yaml(out, names)
    failures.sort(key=lambda f: f["file"])
    summary = {
        "gpuconv": __version__,
        "backend": be.name,
        "out": str(out.resolve()),
        "dataset_yaml": str(yaml_path.resolve()),
        "connectivity": connectivity,
        "classes": names,
        **totals,
        "exams_per_split": split_counts,
        "boxes_per_class": {n: per_class[i] for i, n in enumerate(names)},
        "failed": len(failures),
        "failures": failures,
        "seconds": round(time.perf_counter() - started, 4),
        "stage_seconds": {k: round(v, 4) for k, v in stage.items()},
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
