"""``--compat coca``: what the COCA repository's conversion script writes, byte for byte
(class-0 boxes; the labels published with COCA are polygons made by another script).

The script is ``nrrd_to_yolo.py`` of github.com/datadoc1/COCA_NonGated_Segmentations (read at
commit c098d5db747f3d0448c8a05f79ad9bc4598acff6).  What it does, and so what this mode does:
- exam id = ``int(name.split('_')[-1].split('.')[0])`` (``COCA_0042.seg.nrrd`` -> 42, leading
  zeros dropped); files not ending in ``.nrrd`` or without such an id are skipped;
- the split comes from a CSV (``exam,split``; ``test`` goes to val); an exam missing from it is
  skipped; labels go to ``yolo/{split}_labels/{exam}_{z+1}.txt`` (here under OUT, i.e. OUT plays
  the role of the folder the script runs in);
- per slice z of axis 2, ``np.unique`` values that a ``SegmentN_LabelValue`` with a non-empty
  ``SegmentN_Name`` declares, ``scipy.ndimage.label`` per value with its default structure
  (4-connectivity), boxes from the min/max voxel indices with axis 0 as y and axis 1 as x,
  width = max - min (no +1), centre = (min + width / 2) / size, class 0 for everything, six
  decimals, lines by value then label number, and a file for EVERY slice, empty or not.

Differences from the default mode (why the default exists): x/y are swapped relative to the
CT's x = first axis convention, boxes are one pixel too small (a one-pixel lesion gets width 0),
every class is 0, instances are 4-connected, 4D layered files are not supported, and plain
label maps (no Segment fields) give empty files.  Here, unlike the script, duplicate exam ids
and unreadable files are reported instead of silently overwriting or crashing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from gpuconv import __version__
from gpuconv.errors import InputError
from gpuconv.dataset.exams import read_split_rows, seeded_split
from gpuconv.io.nrrd_read import read_volume
from gpuconv.writers.atomic import write_text_atomic

COCA_SCRIPT = ("https://github.com/datadoc1/COCA_NonGated_Segmentations/blob/"
               "c098d5db747f3d0448c8a05f79ad9bc4598acff6/nrrd_to_yolo.py")


def coca_exam_id(path) -> int:
    """The script's exam id; ValueError when it has none."""
    return int(Path(path).name.split("_")[-1].split(".")[0])


def coca_segments(fields: dict) -> dict[int, str]:
    """{label value: name} exactly as the script builds it from the raw header fields."""
    segments: dict[int, str] = {}
    for key, value in fields.items():
        if key.startswith("Segment") and key.endswith("_LabelValue"):
            seg_index = key.split("_")[0][7:]
            name = fields.get(f"Segment{seg_index}_Name")
            if name:
                segments[int(value)] = name
    return segments


def coca_slice_objects(slice_data: np.ndarray, segments: dict[int, str],
                       timings: dict | None = None) -> list[tuple[int, int, int, int]]:
    """(y_min, x_min, y_max, x_max) per object of one (axis 0, axis 1) slice, in the script's
    order: ``np.unique`` values that ``segments`` declares, ``scipy.ndimage.label`` per value
    (4-connectivity), ``find_objects`` in label order.  ``timings`` (the benchmark's) gets the
    seconds of unique + label added to "label" and of find_objects to "reduce"."""
    t0 = time.perf_counter()
    out = []
    reduce_s = 0.0
    for label in np.unique(slice_data).tolist():
        if label == 0 or label not in segments:
            continue
        labeled, n = ndimage.label(slice_data == label)
        t1 = time.perf_counter()
        for obj in ndimage.find_objects(labeled)[:n]:
            out.append((obj[0].start, obj[1].start, obj[0].stop - 1, obj[1].stop - 1))
        reduce_s += time.perf_counter() - t1
    if timings is not None:
        timings["label"] = timings.get("label", 0.0) + time.perf_counter() - t0 - reduce_s
        timings["reduce"] = timings.get("reduce", 0.0) + reduce_s
    return out


def coca_text(objects, rows: int, cols: int) -> str:
    """The label file of one slice from its objects, as the script formats them: axis 0 is y,
    axis 1 is x, width = max - min (no +1), centre = (min + width / 2) / size, class 0, six
    decimals."""
    lines = []
    for y_min, x_min, y_max, x_max in objects:
        width = x_max - x_min
        height = y_max - y_min
        center_x = (x_min + width / 2) / cols
        center_y = (y_min + height / 2) / rows
        lines.append(f"0 {center_x:.6f} {center_y:.6f} {width / cols:.6f} "
                     f"{height / rows:.6f}\n")
    return "".join(lines)


def coca_slice_text(slice_data: np.ndarray, segments: dict[int, str]) -> str:
    """Text of one label file for one (axis 0, axis 1) slice, as the script writes it."""
    return coca_text(coca_slice_objects(slice_data, segments), *slice_data.shape)


def read_coca_split(path) -> dict[int, str]:
    """The split CSV as the COCA script reads it: exam ids through int(), splits as written."""
    out = {}
    for n, exam, split in read_split_rows(path, case_sensitive=True):
        try:
            out[int(exam)] = split
        except ValueError:
            raise InputError(f"line {n}: exam '{exam}' is not an integer (the COCA script reads "
                             "exam ids with int())", path) from None
    return out


def convert_coca(paths: list[Path], out, *, split_csv=None, val_fraction: float = 0.2,
                 seed: int = 0, on_error=None) -> dict:
    """Write OUT/yolo/{train,val}_labels as the COCA script would; returns a summary dict.

    ``paths`` are label files (already expanded).  Without ``split_csv`` the split is the
    seeded one of the default mode (the script itself requires its CSV)."""
    started = time.perf_counter()
    out = Path(out)
    failures: list[dict] = []

    def fail(path, reason):
        failures.append({"file": str(path), "reason": reason})
        if on_error:
            on_error(str(path), reason)

    by_id: dict[int, Path] = {}
    for p in paths:
        if not p.name.endswith(".nrrd"):
            fail(p, "skipped: the COCA script reads only '.nrrd' files")
            continue
        try:
            e = coca_exam_id(p)
        except ValueError:
            fail(p, "skipped: no integer exam id after the last '_' (COCA script rule)")
            continue
        if e in by_id:
            raise InputError(f"duplicate COCA exam id {e}: {by_id[e]} and {p}")
        by_id[e] = p
    if split_csv is not None:
        split_of = read_coca_split(split_csv)
    else:
        split_of = {int(k): v for k, v in
                    seeded_split([str(e) for e in by_id], val_fraction, seed).items()}
    for split in ("train", "val"):
        (out / "yolo" / f"{split}_labels").mkdir(parents=True, exist_ok=True)

    totals = {"files": 0, "slices": 0, "slices_with_boxes": 0, "label_files": 0, "boxes": 0}
    counts = {"train": 0, "val": 0}
    for e in sorted(by_id):
        p = by_id[e]
        if e not in split_of:
            fail(p, f"skipped: exam {e} is not in the split CSV")
            continue
        try:
            vol = read_volume(p)
            if vol.header.n_layers != 1:
                raise InputError("--compat coca reads 3D label maps only (the script's axis 2 "
                                 "is not the slice axis of a layered 4D file)", p)
            data = vol.layers[0]
            segments = coca_segments(vol.header.fields)
            d = out / "yolo" / f"{split_of[e]}_labels"
            occupied = np.flatnonzero(data.reshape(-1, data.shape[2], order="F").any(axis=0))
            occupied = set(occupied.tolist())
            n_boxes = n_with = 0
            for z in range(data.shape[2]):
                text = coca_slice_text(data[:, :, z], segments) if z in occupied else ""
                write_text_atomic(d / f"{e}_{z + 1}.txt", text)
                n = text.count("\n")
                n_boxes += n
                n_with += n > 0
        except InputError as exc:
            fail(p, exc.reason)
            continue
        totals["files"] += 1
        totals["slices"] += data.shape[2]
        totals["label_files"] += data.shape[2]
        totals["slices_with_boxes"] += n_with
        totals["boxes"] += n_boxes
        counts[split_of[e]] += 1
    failures.sort(key=lambda f: f["file"])
    summary = {
        "gpuconv": __version__, "backend": "cpu", "compat": "coca", "compat_source": COCA_SCRIPT,
        "out": str(out.resolve()), "dataset_yaml": None, "connectivity": 4,
        "classes": ["calcium"], **totals, "exams_per_split": counts,
        "failed": len(failures), "failures": failures,
        "seconds": round(time.perf_counter() - started, 4),
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
