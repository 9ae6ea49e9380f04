"""Benchmark inputs, each a function of a seed: sparse calcium maps, a dense vessel tree, a field
of tiny specks, and the sizes/densities that give the growth curves.

New generators live here (not in ``synth.py``) so ``synth_corpus``'s output, which other tests
pin, never changes.  Every volume is written as a gzip ``.seg.nrrd`` the way 3D Slicer would,
because reading and decoding are part of what is measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpuconv.io.nrrd_write import slicer_segment_fields, write_nrrd
from gpuconv.dataset.synth import CLASS_NAMES, COLORS, _blob

SPACING = (0.7, 0.7, 3.0)


@dataclass
class Workload:
    """One named input set: what it is, the files it was written to, and what we know of it."""

    name: str
    family: str                      # sparse | density | vessel | specks | organs | cells
    shape: tuple[int, int, int]
    paths: list[Path] = field(default_factory=list)
    foreground: float = 0.0          # measured fraction of non-zero voxels (mean over files)
    expected_components: int | None = None   # known by construction (specks), else None

    @property
    def voxels(self) -> int:
        return int(np.prod(self.shape))


def sparse_calcium(rng, shape, fg_fraction: float, max_radius: int = 6) -> np.ndarray:
    """(I, J, K) uint8, values 1..8: irregular calcium-like lesions until ``fg_fraction`` of the
    voxels are foreground (lesions of 1 to a few hundred voxels, <= 5 slices thick)."""
    vol = np.zeros(shape, np.uint8)
    target = max(1, int(round(fg_fraction * vol.size)))
    filled = 0
    while filled < target:
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        m = _blob(rng, max_radius)
        lo = [int(rng.integers(0, max(1, s - ms))) for s, ms in zip(shape, m.shape)]
        region = vol[tuple(slice(a, a + ms) for a, ms in zip(lo, m.shape))]
        m = m[: region.shape[0], : region.shape[1], : region.shape[2]]
        filled += int(np.count_nonzero(region[m] == 0))
        region[m] = cls + 1
    return vol


def _ball(r: int) -> np.ndarray:
    g = np.ogrid[-r:r + 1, -r:r + 1, -r:r + 1]
    return (g[0] ** 2 + g[1] ** 2 + g[2] ** 2) <= r * r + r


def vessel_tree(rng, shape, fg_fraction: float = 0.05, root_radius: int = 7) -> np.ndarray:
    """(I, J, K) uint8 binary map of branching tubes (random-walk branches whose radius shrinks
    at each split) until ``fg_fraction`` is foreground: large, dense, touching structures."""
    vol = np.zeros(shape, bool)
    target = fg_fraction * vol.size
    balls = {r: _ball(r) for r in range(1, root_radius + 1)}
    hi = np.asarray(shape, float) - 1
    filled = 0
    while filled < target:
        start = rng.uniform(0.2, 0.8, 3) * hi
        stack = [(start, rng.normal(size=3), root_radius)]
        while stack and filled < target:
            p, d, r = stack.pop()
            d = d / np.linalg.norm(d)
            for step in range(int(rng.integers(40, 160))):
                d = d + rng.normal(0, 0.12, 3)
                d /= np.linalg.norm(d)
                p = p + d
                if (p < 0).any() or (p > hi).any():
                    break
                if step % max(1, r // 2):
                    continue
                c = np.rint(p).astype(int)
                lo = np.maximum(c - r, 0)
                up = np.minimum(c + r + 1, shape)
                b = balls[r][tuple(slice(a - (ci - r), u - (ci - r))
                                   for a, u, ci in zip(lo, up, c))]
                vol[lo[0]:up[0], lo[1]:up[1], lo[2]:up[2]] |= b
            else:
                if r > 1:
                    for _ in range(2):
                        stack.append((p.copy(), d + rng.normal(0, 0.6, 3), max(1, int(r * 0.75))))
            filled = int(np.count_nonzero(vol))
    return vol.astype(np.uint8)


_SPECK_SHAPES = (  # (di, dj) pixel offsets; all fit in a 3x3 cell corner and are 4-connected
    ((0, 0),), ((0, 0), (1, 0)), ((0, 0), (0, 1)), ((0, 0), (1, 0), (2, 0)),
    ((0, 0), (0, 1), (0, 2)), ((0, 0), (1, 0), (1, 1)), ((0, 0), (0, 1), (1, 1)),
)


def specks(rng, shape, n: int) -> np.ndarray:
    """(I, J, K) uint8 with exactly ``n`` separate 1-3 voxel specks (values 1..8), each inside one
    slice: cells of 4x4 pixels hold at most one speck in their 3x3 corner, so no two specks
    touch even diagonally and the 2D component count is ``n`` by construction."""
    I, J, K = shape
    ci, cj = I // 4, J // 4
    if n > ci * cj * K:
        raise ValueError(f"{n} specks do not fit in {shape}")
    sites = rng.choice(ci * cj * K, size=n, replace=False)
    k, rest = np.divmod(sites, ci * cj)
    a, b = np.divmod(rest, cj)
    vol = np.zeros(shape, np.uint8)
    kinds = rng.integers(0, len(_SPECK_SHAPES), n)
    values = rng.integers(1, len(CLASS_NAMES) + 1, n).astype(np.uint8)
    for s, offsets in enumerate(_SPECK_SHAPES):
        sel = kinds == s
        for di, dj in offsets:
            vol[4 * a[sel] + di, 4 * b[sel] + dj, k[sel]] = values[sel]
    return vol


def dense_cells(rng, shape, fg_fraction: float = 0.4, cell: int = 3,
                n_values: int = 8) -> np.ndarray:
    """(I, J, K) uint8: every slice a grid of ``cell`` x ``cell`` pixel squares, each non-zero
    with probability ``fg_fraction`` and then one of ``n_values`` values: about 10^4 touching
    components of mixed values per 512x512 slice (the 40 % maps: > 10^6 boxes per file)."""
    I, J, K = shape
    coarse = np.zeros((-(-I // cell), -(-J // cell), K), np.uint8)
    m = rng.random(coarse.shape) < fg_fraction
    coarse[m] = rng.integers(1, n_values + 1, int(m.sum()))
    return np.ascontiguousarray(np.repeat(np.repeat(coarse, cell, 0), cell, 1)[:I, :J])


def organs(rng, shape, fg_fraction: float = 0.35, n_labels: int = 100) -> np.ndarray:
    """(I, J, K) uint8 multi-organ map: overlapping ellipsoids (radii 4-40 in-plane, 3-30
    across slices) of ``n_labels`` label values until ``fg_fraction`` is foreground."""
    vol = np.zeros(shape, np.uint8)
    target = fg_fraction * vol.size
    filled = 0
    while filled < target:
        r = rng.uniform([4, 4, 3], [40, 40, 30])
        c = rng.uniform(0, 1, 3) * np.asarray(shape)
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, shape)
        if (hi <= lo).any():
            continue
        g = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        inside = sum(((g[a] - c[a]) / r[a]) ** 2 for a in range(3)) <= 1
        region = vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        filled += int(np.count_nonzero(region[inside] == 0))
        region[inside] = rng.integers(1, n_labels + 1)
    return vol


def second_annotator(rng, vol: np.ndarray, flip: float = 0.3) -> np.ndarray:
    """Another annotator's version of binary ``vol``: a share ``flip`` of its boundary voxels
    removed and as many voxels just outside added (Dice ~0.8-0.9 on vessel trees)."""
    m = vol > 0
    grown = m.copy()
    for axis in range(3):
        grown |= np.roll(m, 1, axis) | np.roll(m, -1, axis)
    shrunk = m.copy()
    for axis in range(3):
        shrunk &= np.roll(m, 1, axis) & np.roll(m, -1, axis)
    out = m.copy()
    edge = m & ~shrunk
    out[edge & (rng.random(m.shape) < flip)] = False
    ring = grown & ~m
    out[ring & (rng.random(m.shape) < flip)] = True
    return out.astype(np.uint8)


AGREE_SPACING = (0.390625, 0.390625, 0.625)   # ASOCA-like CTA grid (dyadic: exact k-d tree path)


def write_seg(path: Path, vol: np.ndarray, names=CLASS_NAMES) -> Path:
    """Write a Slicer-style gzip .seg.nrrd whose segment n has label value n+1."""
    segs = [{"name": nm, "label_value": v + 1, "layer": 0, "color": COLORS[v % len(COLORS)],
             "id": f"Segment_{v + 1}"} for v, nm in enumerate(names)]
    shape = vol.shape
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    directions = np.diag([-SPACING[0], -SPACING[1], SPACING[2]])
    origin = (SPACING[0] * shape[0] / 2, SPACING[1] * shape[1] / 2, -200.0)
    return write_nrrd(path, vol, directions=directions, origin=origin,
                      extra=slicer_segment_fields(segs, shape))


def _sub_rng(seed: int, name: str):
    """One independent stream per workload name, so adding a workload never changes another."""
    return np.random.default_rng([seed, *name.encode()])


# name -> (family, shape, parameter, n files); parameter is fg fraction or speck count
DEFAULT_PLAN = {
    "sparse-128x128x64": ("sparse", (128, 128, 64), 0.003, 1),
    "sparse-256x256x64": ("sparse", (256, 256, 64), 0.003, 1),
    "sparse-384x384x64": ("sparse", (384, 384, 64), 0.003, 1),
    "sparse-512x512x64": ("sparse", (512, 512, 64), 0.003, 1),
    "sparse-512x512x128": ("sparse", (512, 512, 128), 0.003, 1),
    "sparse-512x512x320": ("sparse", (512, 512, 320), 0.003, 1),
    "density-0.05%": ("density", (512, 512, 64), 0.0005, 1),
    "density-1%": ("density", (512, 512, 64), 0.01, 1),
    "vessel-512x512x128": ("vessel", (512, 512, 128), 0.05, 1),
    "specks-1e5": ("specks", (512, 512, 64), 100_000, 1),
}
# the whole-process comparison with the skilled user's cc3d script (bench/whole_process.py)
WHOLE_PROCESS_PLAN = {
    "tiny-512x512x64": ("sparse", (512, 512, 64), 0.003, 1),
    "two-512x512x128": ("sparse", (512, 512, 128), 0.003, 2),
    "organs-512x512x300": ("organs", (512, 512, 300), 0.35, 1),
    "cells40-512x512x128": ("cells", (512, 512, 128), 0.40, 2),
}
QUICK_PLAN = {
    "sparse-64x64x16": ("sparse", (64, 64, 16), 0.003, 1),
    "sparse-128x96x24": ("sparse", (128, 96, 24), 0.003, 1),
    "vessel-96x96x32": ("vessel", (96, 96, 32), 0.05, 1),
    "specks-2e3": ("specks", (128, 128, 16), 2000, 1),
}
WHOLE_PROCESS_QUICK = {
    "tiny-96x96x16": ("sparse", (96, 96, 16), 0.003, 1),
    "organs-96x96x24": ("organs", (96, 96, 24), 0.35, 1),
    "cells40-96x96x16": ("cells", (96, 96, 16), 0.40, 2),
}
# the end-to-end corpus: n sparse COCA-like scans, density drawn log-uniformly in 0.05-1 %
CORPUS_DEFAULT = {"n": 40, "shape": (512, 512, 64), "fg": (0.0005, 0.01)}
CORPUS_QUICK = {"n": 4, "shape": (96, 96, 16), "fg": (0.0005, 0.01)}


def build_workload(name: str, spec, root: Path, seed: int) -> Workload:
    family, shape, param, n_files = spec
    rng = _sub_rng(seed, name)
    wl = Workload(name, family, tuple(shape))
    fg = []
    for f in range(n_files):
        if family in ("sparse", "density"):
            vol = sparse_calcium(rng, shape, param)
            names = CLASS_NAMES
        elif family == "vessel":
            vol = vessel_tree(rng, shape, param)
            names = ("vessel",)
        elif family == "organs":
            vol = organs(rng, shape, param)
            names = tuple(f"organ_{v + 1}" for v in range(100))
        elif family == "cells":
            vol = dense_cells(rng, shape, param)
            names = CLASS_NAMES
        elif family == "specks":
            vol = specks(rng, shape, int(param))
            names = CLASS_NAMES
            wl.expected_components = int(param) * n_files
        else:
            raise ValueError(f"unknown workload family '{family}'")
        fg.append(np.count_nonzero(vol) / vol.size)
        wl.paths.append(write_seg(root / name / f"{name}_{f + 1:04d}.seg.nrrd", vol, names))
    wl.foreground = float(np.mean(fg))
    return wl


def build_corpus(root: Path, seed: int, n: int, shape, fg_range) -> Workload:
    """The ``n``-scan corpus used for the end-to-end comparison."""
    rng = _sub_rng(seed, "corpus")
    wl = Workload(f"corpus-{n}x{'x'.join(map(str, shape))}", "corpus", tuple(shape))
    fg = []
    for e in range(n):
        frac = float(np.exp(rng.uniform(np.log(fg_range[0]), np.log(fg_range[1]))))
        vol = sparse_calcium(rng, shape, frac)
        fg.append(np.count_nonzero(vol) / vol.size)
        wl.paths.append(write_seg(root / "corpus" / f"COCA_{e + 1:04d}.seg.nrrd", vol))
    wl.foreground = float(np.mean(fg))
    return wl
