"""YOLO-seg polygons in the consumer's convention: the outer boundary of each 2D instance as
the centres of its boundary pixels, so that Ultralytics' mask rasteriser gives the pixels back.

The consumer (Ultralytics, read in ``ultralytics/data/utils.py`` ``verify_image_label`` /
``polygon2mask`` and ``ultralytics/utils/instance.py`` ``denormalize``) parses a line's numbers
as float32, multiplies them by the image size in float32, truncates with
``np.asarray(..., np.int32)`` and fills with ``cv2.fillPoly`` at native size, where an integer
point is a pixel *centre* and the pixels on the polygon's edges are filled too.  So:

- Vertices are boundary pixels: the 8-connected outer boundary chain of the instance (Suzuki &
  Abe border following, exactly as OpenCV's ``findContours(RETR_EXTERNAL,
  CHAIN_APPROX_SIMPLE)`` writes it: first point = the instance's first pixel in raster order
  (smallest j, then smallest i), counter-clockwise on screen (y down), straight runs -
  horizontal, vertical or diagonal - compressed to their end points).  ``tests/test_polygons.py``
  checks the vertex lists equal cv2's on random maps.
- ``--connectivity 4``: the chain uses 4-neighbour steps only (the same border following with
  the 4-neighbourhood), so pixels of another instance or background that touch only at a corner
  are never enclosed; every edge is then horizontal or vertical.
- Text: x = (i + 0.5) / W, y = (j + 0.5) / H (the pixel centre in Ultralytics' continuous
  coordinates), six decimals.  Measured over every vertex of every size 1..4096
  (``docs/datasets.md``): 0 of 8,390,656 vertices truncate to another pixel (4 decimals would
  still do; integer vertices i / W lose 3.7 % even written in full, 48 % with six decimals).
- A line always has >= 3 points (> 6 fields, so Ultralytics never reads it as a box): a
  one-pixel lesion repeats its pixel, a straight line of pixels (2 points) repeats its first.
- Holes are filled: only the outer boundary is written.  A hole is background that cannot reach
  the outside through the background's own connectivity (4 when instances are 8-connected, 8
  when they are 4-connected), i.e. ``scipy.ndimage.binary_fill_holes`` with that structure.
- Lines of a file are sorted like boxes (class, j0, i0, j1, i1, pixel count) and then by text,
  so output is deterministic and identical for every backend (polygons are always traced on
  the host, with this module's own tracer, never with cv2 at run time).

The box Ultralytics derives from a polygon (``segments2boxes``: vertex extents) is one pixel
narrower and shorter than the pixels it covers: a one-pixel lesion's box has width 0 (see
docs/datasets.md for what its augmentation then drops).

Tracer: this module's Numba port of the border following, not cv2 at run time.  Measured on
the build machine (2 cores, shared), 2,051 instances of 30 synthetic 512x512x64 exams (median
9 px), best of 5: 7.7 us per instance here (the crop padded and traced) against 6.3 us for
``cv2.findContours`` given a ready uint8 crop, identical vertex lists; but ``import cv2`` alone
costs 176 ms (a cold CLI start, issue 15) and opencv would become a run-time dependency, so
opencv-python-headless stays a test dependency (the tests compare against it and rasterise
with it).

After Ultralytics resamples a segment to 1000 points (``resample_segments``: np.interp between
the vertices in normalised float32 coordinates), horizontal and vertical runs stay exact (the
interpolated points keep the run's row or column and lie between its end pixels), so every
``--connectivity 4`` polygon still gives its instance back exactly.  A diagonal step passes
through a pixel corner; an interpolated point that lands on or within float32 rounding of that
corner truncates to the corner's off-chain neighbour, and the mask gains that pixel.  Measured
(docs/datasets.md): 1,886 of 2,000 COCA-like lesions exact after resampling (worst IoU 0.85),
all 2,000 without; integer vertices i / W are worse in both cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy import ndimage

from gpuconv.backends.base import SliceComponents
from gpuconv.results.boxes import _fixed_width_lut, assign_classes
from gpuconv.dataset.classes import ClassMap
from gpuconv.io.nrrd_read import VolumeHeader

DECIMALS = 6     # the width of boxes._fixed_width_lut's strings (8 characters: 0.xxxxxx)
MIN_POINTS = 3   # 3 points = 7 fields: Ultralytics reads a file as polygons when a line has > 6


@numba.njit(cache=True, nogil=True)
def _trace_chain(padded, four):
    """Outer border of the component holding the first foreground pixel (raster order) of
    ``padded`` (uint8, (H+2, W+2), zero border), compressed to the points where the step
    direction changes.  Returns an (n, 2) int64 array of (x, y) pixel coordinates, unpadded.

    Suzuki & Abe's border following as OpenCV implements it: direction codes 0 E, 1 NE, 2 N,
    3 NW, 4 W, 5 SW, 6 S, 7 SE (y down); the first step is found clockwise from W, each next one
    counter-clockwise from the direction back to the previous pixel; the walk stops when it is
    back at the start pixel about to repeat its first step.  ``four``: 4-neighbour steps only.
    """
    H = padded.shape[0]
    W = padded.shape[1]
    sy = -1
    sx = -1
    for y in range(1, H - 1):
        for x in range(1, W - 1):
            if padded[y, x]:
                sy = y
                sx = x
                break
        if sy >= 0:
            break
    if sy < 0:
        return np.empty((0, 2), np.int64)
    ddx = (1, 1, 0, -1, -1, -1, 0, 1)
    ddy = (0, -1, -1, -1, 0, 1, 1, 1)
    step = 2 if four else 1
    s = 4
    while True:                       # clockwise from W: the pixel the border ends on
        s = (s - step) & 7
        if s == 4 or padded[sy + ddy[s], sx + ddx[s]] != 0:
            break
    if s == 4:                        # a single pixel
        out = np.empty((1, 2), np.int64)
        out[0, 0] = sx - 1
        out[0, 1] = sy - 1
        return out
    cap = 64
    out = np.empty((cap, 2), np.int64)
    x1 = sx + ddx[s]
    y1 = sy + ddy[s]
    x3 = sx
    y3 = sy
    x4 = sx
    y4 = sy
    prev = s ^ 4
    n = 0
    while True:
        for _ in range(8):            # counter-clockwise from the step after "back"
            s = (s + step) & 7
            x4 = x3 + ddx[s]
            y4 = y3 + ddy[s]
            if padded[y4, x4] != 0:
                break
        if s != prev:
            if n == cap:
                cap *= 2
                grown = np.empty((cap, 2), np.int64)
                grown[:n] = out[:n]
                out = grown
            out[n, 0] = x3 - 1
            out[n, 1] = y3 - 1
            n += 1
            prev = s
        if x4 == sx and y4 == sy and x3 == x1 and y3 == y1:
            break
        x3 = x4
        y3 = y4
        s = (s + 4) & 7
    return out[:n]


def trace_outer_boundary(mask: np.ndarray, connectivity: int = 8) -> np.ndarray:
    """Outer boundary chain of the single instance in a (J, I) mask, as (n, 2) int64 pixel
    coordinates (x = column i, y = row j), straight runs compressed to their end points.  The
    mask must hold exactly one ``connectivity``-connected component; anything else is traced
    only for the component of its first pixel."""
    if connectivity not in (4, 8):
        raise ValueError("2D connectivity must be 4 or 8")
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.uint8)
    padded[1:-1, 1:-1] = mask != 0
    return _trace_chain(padded, connectivity == 4)


def fill_holes(mask: np.ndarray, connectivity: int = 8) -> np.ndarray:
    """What the written polygon covers: the instance with its holes filled (background uses the
    dual connectivity: 4 for 8-connected instances, 8 for 4-connected ones)."""
    dual = ndimage.generate_binary_structure(2, 1 if connectivity == 8 else 2)
    return ndimage.binary_fill_holes(mask != 0, structure=dual)


@dataclass
class PolygonTable:
    """Polygons of one exam in canonical order (k, class, j0, i0, j1, i1, pixels, text)."""

    k: np.ndarray
    cls: np.ndarray
    points: list          # per instance: (n, 2) int64 boundary pixels (x = i, y = j)
    texts: list           # per instance: its YOLO-seg line
    width: int            # W = size of axis i
    height: int           # H = size of axis j
    slices: int           # K

    def __len__(self) -> int:
        return len(self.k)


def polygon_text(points: np.ndarray, cls: int, width: int, height: int) -> str:
    """One YOLO-seg line ``class x1 y1 x2 y2 ...``: pixel centres (i + 0.5) / W, (j + 0.5) / H,
    six decimals, at least 3 points (the first repeated at the end when there are fewer).

    Each coordinate is a row of a cached table of formatted strings indexed by its numerator
    2i + 1 (``f"{(2i + 1) / 2 / W:.6f}"``, the same float64 as (i + 0.5) / W)."""
    points = np.asarray(points, np.int64)
    if len(points) < MIN_POINTS:
        points = np.concatenate([points] + [points[:1]] * (MIN_POINTS - len(points)))
    buf = np.empty((len(points), 2, DECIMALS + 3), np.uint8)
    buf[:, 0, :-1] = _fixed_width_lut(2 * width + 1, 2.0, float(width))[2 * points[:, 0] + 1]
    buf[:, 1, :-1] = _fixed_width_lut(2 * height + 1, 2.0, float(height))[2 * points[:, 1] + 1]
    buf[:, :, -1] = 32   # ' '
    return f"{cls} " + buf.tobytes()[:-1].decode("ascii") + "\n"


def _slice_instances(sl: np.ndarray, values, structure, connectivity: int, windows=None):
    """Yield (value, i0, i1, j0, j1, pixels, points) for each instance on one (J, I) slice.

    ``windows[value]`` = (i0, i1, j0, j1), when given, bounds every pixel of that value on the
    slice; labelling only that window finds the same components, far faster for small lesions.
    """
    for value in values:
        ci = cj = 0
        region = sl
        if windows is not None:
            ci, i1, cj, j1 = windows[value]
            region = sl[cj:j1 + 1, ci:i1 + 1]
        lab, n = ndimage.label(region == value, structure)
        if n == 0:
            continue
        counts = np.bincount(lab.reshape(-1), minlength=n + 1)
        for idx, obj in enumerate(ndimage.find_objects(lab), start=1):
            rows, cols = obj
            crop = lab[obj] == idx
            pts = trace_outer_boundary(crop, connectivity)
            pts = pts + np.array([ci + cols.start, cj + rows.start], np.int64)
            yield (int(value), ci + cols.start, ci + cols.stop - 1, cj + rows.start,
                   cj + rows.stop - 1, int(counts[idx]), pts)


def _file_values(value: np.ndarray, layers: np.ndarray) -> list[int]:
    """Components carry values as int64 bits; uint64 data >= 2**63 is read back as uint64."""
    value = np.asarray(value, np.int64)
    return (value.view(np.uint64) if layers.dtype == np.uint64 else value).tolist()


def trace_instances(layers: np.ndarray, connectivity: int = 8,
                    where: SliceComponents | None = None):
    """All 2D instances of (L, I, J, K) ``layers`` with their polygons, on the host.

    ``where`` (the backend's components) limits the work to the (layer, slice, value) triples
    that hold something; the instance count is checked against it, so boxes and polygons
    always describe the same instances.
    """
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    if where is not None:
        todo: dict[tuple[int, int], dict] = {}  # (layer, k) -> value -> union of its boxes
        for layer, k, v, i0, i1, j0, j1 in zip(
                where.layer.tolist(), where.k.tolist(), _file_values(where.value, layers),
                where.i0.tolist(), where.i1.tolist(), where.j0.tolist(), where.j1.tolist()):
            w = todo.setdefault((layer, k), {}).get(v)
            todo[(layer, k)][v] = ((i0, i1, j0, j1) if w is None else
                                   (min(w[0], i0), max(w[1], i1), min(w[2], j0), max(w[3], j1)))
        keys = sorted(todo)
    else:
        keys = [(layer, k) for layer in range(layers.shape[0]) for k in range(layers.shape[3])]
        todo = None
    rows = []
    for layer, k in keys:
        sl = layers[layer, :, :, k].T  # (J, I): row j, column i
        windows = None
        if todo is not None:
            windows = todo[(layer, k)]
            values = sorted(windows)
        else:
            values = [v for v in np.unique(sl).tolist() if v != 0]
        for inst in _slice_instances(sl, values, structure, connectivity, windows):
            rows.append((layer, k) + inst)
    if where is not None and len(rows) != len(where):
        raise RuntimeError(f"polygon tracing found {len(rows)} instances but the backend "
                           f"reported {len(where)}")
    comp = SliceComponents(
        layer=np.array([r[0] for r in rows], np.int32), k=np.array([r[1] for r in rows], np.int32),
        value=np.array([r[2] for r in rows], np.uint64 if layers.dtype == np.uint64
                       else np.int64).view(np.int64),  # the components' int64 bits
        i0=np.array([r[3] for r in rows], np.int32), i1=np.array([r[4] for r in rows], np.int32),
        j0=np.array([r[5] for r in rows], np.int32), j1=np.array([r[6] for r in rows], np.int32),
        pixels=np.array([r[7] for r in rows], np.int64))
    return comp, [r[8] for r in rows]


def to_polygon_table(layers: np.ndarray, hdr: VolumeHeader, class_map: ClassMap,
                     connectivity: int = 8, where: SliceComponents | None = None) -> PolygonTable:
    comp, points = trace_instances(layers, connectivity, where)
    cls = assign_classes(comp, hdr, class_map)
    _, W, H, K = layers.shape
    texts = [polygon_text(p, c, W, H) for p, c in zip(points, cls.tolist())]
    order = sorted(range(len(comp)), key=lambda n: (
        int(comp.k[n]), int(cls[n]), int(comp.j0[n]), int(comp.i0[n]), int(comp.j1[n]),
        int(comp.i1[n]), int(comp.pixels[n]), texts[n]))
    idx = np.array(order, np.int64)
    return PolygonTable(k=comp.k[idx], cls=cls[idx], points=[points[n] for n in order],
                        texts=[texts[n] for n in order], width=W, height=H, slices=K)


def polygon_lines_by_slice(table: PolygonTable) -> dict[int, str]:
    """{k: file text} for every slice that has polygons."""
    out: dict[int, list[str]] = {}
    for k, t in zip(table.k.tolist(), table.texts):
        out.setdefault(int(k), []).append(t)
    return {k: "".join(v) for k, v in out.items()}
