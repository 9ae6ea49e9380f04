"""A synthetic COCA-like corpus, so the demo and the benchmarks need no downloads.

Each exam is a 3D Slicer-style ``.seg.nrrd`` with 8 named calcium classes whose label values
are shuffled per file and which are listed in a shuffled order after the first exam (real
corpora are that untidy), irregular lesions of 1 to a few hundred voxels, anisotropic CT
spacing, and > 99% background.  Everything follows from ``seed``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from gpuconv.io.nrrd_write import slicer_segment_fields, write_nrrd

CLASS_NAMES = ("LM", "LAD", "LCX", "RCA", "aortic_valve", "mitral_valve", "aorta", "other")
COLORS = ("0.9 0.2 0.2", "0.2 0.9 0.2", "0.2 0.2 0.9", "0.9 0.9 0.2", "0.9 0.2 0.9",
          "0.2 0.9 0.9", "0.6 0.4 0.2", "0.5 0.5 0.5")


def _blob(rng, max_radius: int) -> np.ndarray:
    """An irregular lesion mask (I, J, K): a noisy ellipsoid; radius 0 gives one voxel."""
    r = rng.integers(0, max_radius + 1, size=3)
    r[2] = min(r[2], 2)
    if r.max() == 0:
        return np.ones((1, 1, 1), bool)
    grid = np.ogrid[tuple(slice(-int(x), int(x) + 1) for x in r)]
    d = sum((g / max(int(x), 1)) ** 2 for g, x in zip(grid, r))
    noise = rng.random(d.shape) * 0.6
    mask = (d + noise) <= 1.0
    mask[tuple(int(x) for x in r)] = True
    return mask


def synth_volume(rng, shape=(512, 512, 64), lesions=(10, 40), max_radius=6) -> np.ndarray:
    """(I, J, K) uint8 map with values 1..8 = class index + 1 (before per-file relabelling)."""
    vol = np.zeros(shape, np.uint8)
    n = int(rng.integers(lesions[0], lesions[1] + 1))
    for _ in range(n):
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        m = _blob(rng, max_radius)
        lo = [int(rng.integers(0, max(1, s - ms))) for s, ms in zip(shape, m.shape)]
        sl = tuple(slice(a, a + ms) for a, ms in zip(lo, m.shape))
        region = vol[sl]
        region[m[: region.shape[0], : region.shape[1], : region.shape[2]]] = cls + 1
    return vol


def synth_corpus(out, n: int = 20, shape=(512, 512, 64), seed: int = 0,
                 spacing=(0.7, 0.7, 3.0), val_fraction: float = 0.2) -> list[Path]:
    """Write ``n`` exams ``COCA_%04d.seg.nrrd`` and ``split.csv`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    rows = []
    for e in range(n):
        vol = synth_volume(rng, shape)
        order = rng.permutation(len(CLASS_NAMES))        # order segments are listed in,
        if e == 0:                                        # canonical in the first exam, so
            order = np.arange(len(CLASS_NAMES))           # the class list reads LM, LAD, ...
        values = rng.permutation(len(CLASS_NAMES)) + 1   # label value each class gets here
        relabel = np.zeros(256, np.uint8)
        relabel[1: len(CLASS_NAMES) + 1] = values
        vol = relabel[vol]
        segs = [{"name": CLASS_NAMES[c], "label_value": int(values[c]), "layer": 0,
                 "color": COLORS[c], "id": f"Segment_{c + 1}"} for c in order]
        directions = np.diag([-spacing[0], -spacing[1], spacing[2]])
        origin = (spacing[0] * shape[0] / 2, spacing[1] * shape[1] / 2, -200.0)
        exam = f"{e + 1:04d}"
        p = write_nrrd(out / f"COCA_{exam}.seg.nrrd", vol, directions=directions, origin=origin,
                       extra=slicer_segment_fields(segs, shape))
        paths.append(p)
        rows.append((exam, "val" if rng.random() < val_fraction else "train"))
    with open(out / "split.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["exam", "split"])
        w.writerows(rows)
    return paths
