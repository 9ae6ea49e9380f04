"""The published COCA conversion as the baseline to beat: the COCA repository's
``nrrd_to_yolo.py``, run as its users run it (pynrrd's ``nrrd.read``, then the script's loop).

There is one model of that script in gpuconv, ``writers/compat_coca.py`` (``--compat coca``
writes its files byte for byte); this module only times it, stage by stage:
- decode: ``nrrd.read`` (pynrrd, stdlib zlib) of the whole file, header included;
- label: per slice ``z`` of axis 2, ``np.unique`` and ``scipy.ndimage.label`` per declared
  segment value (4-connectivity, scipy's default structure);
- reduce: ``ndimage.find_objects`` per value, the boxes' min/max;
- write: one text file for EVERY slice, ``{id}_{z+1}.txt`` with the script's integer exam id,
  lines formatted as the script does (six decimals).

Its conventions, which differ from gpuconv's contract (see ``results/boxes.py``): axis 0 is y and
axis 1 is x, each normalised by its own size; boxes one pixel short (width = max - min, so a
one-pixel lesion has zero width); class 0 for every box; values not declared by a
``SegmentN_LabelValue`` with a name are ignored.  ``to_contract`` undoes the first two so its
boxes can be compared with gpuconv's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpuconv.writers.compat_coca import (coca_exam_id, coca_segments, coca_slice_objects,
                                         coca_text)


def read(path) -> tuple[np.ndarray, dict[int, str]]:
    """(data, {label value: segment name}) as the script gets them from ``nrrd.read``."""
    import nrrd
    data, header = nrrd.read(str(path))
    return data, coca_segments(header)


def slice_boxes(data: np.ndarray, segments: dict[int, str], timings: dict | None = None,
                slices=None) -> dict[int, list[tuple[int, int, int, int]]]:
    """{z: [(y_min, x_min, y_max, x_max), ...]} for every slice (or only ``slices``, the
    benchmark's sample), in the script's order.  ``timings`` gets the seconds of labelling
    (unique + label) and reducing (find_objects)."""
    if timings is not None:
        timings.setdefault("label", 0.0)
        timings.setdefault("reduce", 0.0)
    return {z: coca_slice_objects(data[:, :, z], segments, timings)
            for z in (range(data.shape[2]) if slices is None else slices)}


def write(objects: dict[int, list], shape, out_dir, exam: int) -> int:
    """One file per slice in ``objects`` (empty ones too, as the script writes them)."""
    out_dir = Path(out_dir)
    rows, cols = shape[0], shape[1]
    for z, objs in objects.items():
        with open(out_dir / f"{exam}_{z + 1}.txt", "w") as fh:
            fh.write(coca_text(objs, rows, cols))
    return len(objects)


def convert_file(path, out_dir) -> int:
    """The script's whole conversion of one file; returns the number of files written."""
    data, segments = read(path)
    return write(slice_boxes(data, segments), data.shape, out_dir, coca_exam_id(path))


def to_contract(line: str, I: int, J: int) -> tuple[int, int, int, int]:
    """One script line -> (i0, i1, j0, j1) in gpuconv's terms (undo swap and short boxes)."""
    _cls, xc, yc, w, h = (float(t) for t in line.split())
    j0 = int(round(xc * J - w * J / 2))
    j1 = int(round(xc * J + w * J / 2))
    i0 = int(round(yc * I - h * I / 2))
    i1 = int(round(yc * I + h * I / 2))
    return i0, i1, j0, j1
