"""The published COCA conversion, re-expressed from its description as the baseline to beat.

What it does (and what this module reproduces on purpose, conventions included):
- ``nrrd.read`` (pynrrd, stdlib zlib) reads the whole file;
- for every slice ``z`` along axis 2: ``np.unique`` of the slice, then for every non-zero value
  ``scipy.ndimage.label(slice == value)`` with scipy's default structure (4-connectivity), then
  for every component ``np.argwhere(labels == n)`` and its min/max for the box;
- one text file per slice that has boxes, ``{exam}_{z+1}.txt`` (gpuconv's naming, so the two
  outputs can be compared file by file).

Its known conventions, which differ from gpuconv's contract (see ``gpuconv/boxes.py``):
- x/y swap: ``argwhere`` rows are axis i and are taken as y; columns (axis j) as x, each
  normalised by its own size (x by J, y by I);
- boxes one pixel short: ``cx = (c0 + c1) / 2 / J``, ``w = (c1 - c0) / J`` (a one-pixel lesion
  has zero width);
- class 0: every box is written with class id 0, whatever its label value;
- floats printed with Python's ``repr`` (no fixed number of decimals).
``to_contract`` undoes the first two so its boxes can be compared with gpuconv's.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from gpuconv.dataset.exams import exam_id


def read(path) -> np.ndarray:
    import nrrd
    data, _ = nrrd.read(str(path))
    return data


def slice_boxes(data: np.ndarray, connectivity: int = 4, timings: dict | None = None,
                slices=None) -> list[tuple[int, int, int, int, int, int]]:
    """(z, value, r0, c0, r1, c1) per component, in the published loop's order.

    ``r`` indexes axis i (the slice's rows), ``c`` axis j.  ``timings`` (optional) gets the
    seconds spent labelling (unique + label) and reducing (argwhere + min/max).  ``slices``
    (optional) restricts the loop to those slice indices (the benchmark samples slices).
    """
    from scipy import ndimage
    structure = None if connectivity == 4 else np.ones((3, 3), bool)
    rows = []
    t_total = t_reduce = 0.0
    for z in (range(data.shape[2]) if slices is None else slices):
        t0 = time.perf_counter()
        sl = data[:, :, z]
        for value in np.unique(sl):
            if value == 0:
                continue
            labels, n = ndimage.label(sl == value, structure=structure)
            t1 = time.perf_counter()
            for comp in range(1, n + 1):
                coords = np.argwhere(labels == comp)
                r0, c0 = coords.min(axis=0)
                r1, c1 = coords.max(axis=0)
                rows.append((z, int(value), int(r0), int(c0), int(r1), int(c1)))
            t_reduce += time.perf_counter() - t1
        t_total += time.perf_counter() - t0
    if timings is not None:  # unique + label + loop overhead count as labelling
        timings["label"] = t_total - t_reduce
        timings["reduce"] = t_reduce
    return rows


def lines(rows, shape) -> dict[int, str]:
    """{z: file text} as the published method writes it (class 0, swapped, one pixel short)."""
    I, J = shape[0], shape[1]
    out: dict[int, list[str]] = {}
    for z, _value, r0, c0, r1, c1 in rows:
        xc = (c0 + c1) / 2 / J
        yc = (r0 + r1) / 2 / I
        w = (c1 - c0) / J
        h = (r1 - r0) / I
        out.setdefault(z, []).append(f"0 {xc} {yc} {w} {h}\n")
    return {z: "".join(v) for z, v in out.items()}


def write(texts: dict[int, str], out_dir, exam: str) -> int:
    out_dir = Path(out_dir)
    for z, text in texts.items():
        with open(out_dir / f"{exam}_{z + 1}.txt", "w") as fh:
            fh.write(text)
    return len(texts)


def convert_file(path, out_dir, connectivity: int = 4) -> int:
    """The whole published conversion of one file; returns the number of files written."""
    data = read(path)
    return write(lines(slice_boxes(data, connectivity), data.shape), out_dir, exam_id(path))


def to_contract(line: str, I: int, J: int) -> tuple[int, int, int, int]:
    """One published line -> (i0, i1, j0, j1) in gpuconv's terms (undo swap and short boxes)."""
    _cls, xc, yc, w, h = (float(t) for t in line.split())
    j0 = int(round(xc * J - w * J / 2))
    j1 = int(round(xc * J + w * J / 2))
    i0 = int(round(yc * I - h * I / 2))
    i1 = int(round(yc * I + h * I / 2))
    return i0, i1, j0, j1
