"""The script a skilled user writes instead of gpuconv: pynrrd + cc3d, the same label files.

    python cc3d_script.py OUT FILE...       # writes OUT/{exam}_{k+1}.txt

Deliberately standalone (imports nothing from gpuconv, so a whole-process run of it costs what
the user's script costs): ``nrrd.read``; per non-empty slice ``cc3d.connected_components``
(connectivity 8, multi-label: equal values linked, like gpuconv) and ``cc3d.statistics`` for
the boxes and pixel counts; the value of each component read at one of its pixels; lines
sorted and formatted as gpuconv's contract says (class = label value - 1, which is what
gpuconv assigns to the benchmark's files, whose segment n has label value n + 1).
``bench.contenders.same_label_files`` checks the output against gpuconv's, file by file.
"""

from __future__ import annotations

import os
import re
import sys


def exam_id(path: str) -> str:
    stem = os.path.basename(path)
    for ext in (".nrrd", ".nhdr"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    if stem.endswith(".seg"):
        stem = stem[:-4]
    m = re.search(r"(\d+)$", stem)
    return m.group(1) if m else stem


def slice_lines(sl, np, cc3d) -> str:
    """YOLO text of one 2D slice ``sl`` indexed [i, j]."""
    W, H = sl.shape
    labels, n = cc3d.connected_components(sl, connectivity=8, return_N=True)
    if n == 0:
        return ""
    st = cc3d.statistics(labels)
    bbox = st["bounding_boxes"][1:]          # (slice_i, slice_j) per component
    px = st["voxel_counts"][1:]
    i0 = np.array([b[0].start for b in bbox])
    i1 = np.array([b[0].stop - 1 for b in bbox])
    j0 = np.array([b[1].start for b in bbox])
    j1 = np.array([b[1].stop - 1 for b in bbox])
    value = np.zeros(n + 1, np.int64)
    value[labels.reshape(-1)] = sl.reshape(-1)  # every pixel of a component holds its value
    cls = value[1:] - 1
    order = np.lexsort((px, i1, j1, i0, j0, cls))
    return "".join(f"{c} {(a + b + 1) / 2 / W:.6f} {(p + q + 1) / 2 / H:.6f} "
                   f"{(b - a + 1) / W:.6f} {(q - p + 1) / H:.6f}\n"
                   for c, a, b, p, q in zip(cls[order].tolist(), i0[order].tolist(),
                                            i1[order].tolist(), j0[order].tolist(),
                                            j1[order].tolist()))


def convert_file(path: str, out: str) -> int:
    import cc3d
    import nrrd
    import numpy as np
    data, _ = nrrd.read(path)
    exam = exam_id(path)
    written = 0
    nonempty = np.flatnonzero(data.reshape(-1, data.shape[2], order="F").any(axis=0)) \
        if data.flags.f_contiguous else np.flatnonzero(data.any(axis=(0, 1)))
    for k in nonempty.tolist():
        text = slice_lines(data[:, :, k], np, cc3d)
        if text:
            with open(os.path.join(out, f"{exam}_{k + 1}.txt"), "w") as fh:
                fh.write(text)
            written += 1
    return written


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out, files = argv[0], argv[1:]
    os.makedirs(out, exist_ok=True)
    for f in files:
        convert_file(f, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
