"""A synthetic COCA-like corpus, so the demo and the benchmarks need no downloads.

Each exam is a 3D Slicer-style ``.seg.nrrd`` with 8 named calcium classes whose label values
are shuffled per file and which are listed in a shuffled order after the first exam (real
corpora are that untidy), irregular lesions of 1 to a few hundred voxels, anisotropic CT
spacing, and > 99% background.  Everything follows from ``seed``.

With ``ct=True`` (what ``gpuconv synth`` does) each exam also gets a matching synthetic CT,
``ct/CT_%04d.nrrd``: int16 HU on the same grid (sizes, spacing, origin, directions), air
(-1000 HU) around a body ellipse of soft tissue (40 HU, a faint texture) with two lungs
(-850 HU), and calcium (600 HU) exactly where the labels are, so ``convert --images`` builds a
dataset Ultralytics can train.  The CT has its own random stream: the labels are the same with
or without it.
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


CT_AIR, CT_TISSUE, CT_LUNG, CT_CALCIUM = -1000, 40, -850, 600   # HU


def synth_ct(labels: np.ndarray) -> np.ndarray:
    """(I, J, K) int16 HU volume matching an (I, J, K) label map: calcium where labels are."""
    I, J, K = labels.shape
    x = (np.arange(I) - (I - 1) / 2)[:, None] / max(I / 2, 1)
    y = (np.arange(J) - (J - 1) / 2)[None, :] / max(J / 2, 1)
    base = np.full((I, J), CT_AIR, np.int16)
    body = (x / 0.95) ** 2 + (y / 0.8) ** 2 <= 1.0
    base[body] = CT_TISSUE
    ii, jj = np.meshgrid(np.arange(I), np.arange(J), indexing="ij")
    texture = ((ii * 7 + jj * 13) % 31 - 15).astype(np.int16)   # compresses well, looks grainy
    base[body] += texture[body]
    for cx in (-0.45, 0.45):
        base[((x - cx) / 0.3) ** 2 + ((y + 0.05) / 0.5) ** 2 <= 1.0] = CT_LUNG
    ct = np.repeat(base[:, :, None], K, axis=2)
    ct[labels != 0] = CT_CALCIUM
    return ct


def synth_corpus(out, n: int = 20, shape=(512, 512, 64), seed: int = 0,
                 spacing=(0.7, 0.7, 3.0), val_fraction: float = 0.2,
                 ct: bool = False) -> list[Path]:
    """Write ``n`` exams ``COCA_%04d.seg.nrrd`` and ``split.csv`` into ``out`` (with ``ct``, also
    ``out/ct/CT_%04d.nrrd``).  The CSV has at least one val exam when ``n`` >= 2."""
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
        if ct:
            (out / "ct").mkdir(exist_ok=True)
            write_nrrd(out / "ct" / f"CT_{exam}.nrrd", synth_ct(vol), directions=directions,
                       origin=origin, level=1)   # level 1: as small as 6 here, faster
    if n >= 2 and all(split == "train" for _, split in rows):
        rows[-1] = (rows[-1][0], "val")    # never an empty val split
    with open(out / "split.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["exam", "split"])
        w.writerows(rows)
    return paths
