"""YOLO-seg polygons: the outer boundary of each 2D instance, traced on pixel edges.

Rules (tested in tests/test_polygons.py, written down in docs/datasets.md):
- Vertices are pixel *corners*: pixel (i, j) is the square [i, i+1] x [j, j+1], so a one-pixel
  lesion is the 4-corner square and every instance gives a closed polygon of >= 4 points.
  Points are normalised x = i / W, y = j / H (W = size of axis i, H = size of axis j), the same
  frame as the boxes, so the box Ultralytics derives from a polygon (min/max of its points) is
  exactly the box ``--format boxes`` writes.
- Only corners are kept: points in the middle of a straight run of edges are dropped.
- Holes are filled: only the outer boundary is written.  A hole is background that cannot reach
  the outside through the background's own connectivity (4 when instances are 8-connected, 8
  when they are 4-connected), i.e. ``scipy.ndimage.binary_fill_holes`` with that structure.
- Diagonal joins: at a corner where only two diagonally opposite pixels are foreground, the
  tracer crosses to the other pixel when instances are 8-connected (so an 8-connected instance
  is ONE polygon that touches itself at that corner) and stays on its pixel when they are
  4-connected.  Either way the polygon, filled with the even-odd rule, is the filled instance.
- Order: the first point is the top-left corner of the instance's first pixel in raster order
  (smallest j, then smallest i); points run clockwise on screen (y down).  Lines of a file are
  sorted like boxes (class, j0, i0, j1, i1, pixel count) and then by text, so output is
  deterministic and identical for every backend (polygons are always traced on the host).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy import ndimage

from gpuconv.backends.base import SliceComponents
from gpuconv.results.boxes import assign_classes
from gpuconv.dataset.classes import ClassMap
from gpuconv.io.nrrd_read import VolumeHeader

@numba.njit(cache=True, nogil=True)
def _trace_outer(padded, connect_diagonal):
    """Corner vertices of the outer boundary of the foreground in ``padded`` (uint8, (H+2, W+2),
    zero border).  Returns an (n, 2) int64 array of (x, y) in unpadded corner coordinates.

    Walks pixel edges with the foreground on the right-hand side.  At each vertex the two pixels
    ahead decide the turn; the saddle case (only the ahead-left pixel is foreground) turns left
    into the diagonal pixel when ``connect_diagonal`` (8-connectivity), else right.
    """
    H = padded.shape[0] - 2
    W = padded.shape[1] - 2
    sx = -1
    sy = -1
    for y in range(H):
        for x in range(W):
            if padded[y + 1, x + 1]:
                sx = x
                sy = y
                break
        if sx >= 0:
            break
    out = np.empty((2 * (H + 1) * (W + 1) + 4, 2), np.int64)
    if sx < 0:
        return out[:0]
    dx = (1, 0, -1, 0)
    dy = (0, 1, 0, -1)
    # pixel ahead-left / ahead-right of vertex (x, y) when moving in direction d, as offsets
    # of the pixel's top-left corner from the vertex
    alx = (0, 0, -1, -1)
    aly = (-1, 0, 0, -1)
    arx = (0, -1, -1, 0)
    ary = (0, 0, -1, -1)
    n = 0
    x = sx
    y = sy
    d = 0
    out[n, 0] = x
    out[n, 1] = y
    n += 1
    while True:
        x += dx[d]
        y += dy[d]
        if x == sx and y == sy:
            break
        fl = padded[y + aly[d] + 1, x + alx[d] + 1] != 0
        fr = padded[y + ary[d] + 1, x + arx[d] + 1] != 0
        if fl and fr:
            nd = (d + 3) % 4
        elif fr:
            nd = d
        elif fl:
            nd = (d + 3) % 4 if connect_diagonal else (d + 1) % 4
        else:
            nd = (d + 1) % 4
        if nd != d:
            out[n, 0] = x
            out[n, 1] = y
            n += 1
            d = nd
    return out[:n]


def trace_outer_boundary(mask: np.ndarray, connectivity: int = 8) -> np.ndarray:
    """Outer boundary of the single instance in a (J, I) mask, as (n, 2) int64 corner points
    (x = column i, y = row j).  The mask must hold exactly one ``connectivity``-connected
    component; anything else is traced only for the component of its first pixel."""
    if connectivity not in (4, 8):
        raise ValueError("2D connectivity must be 4 or 8")
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.uint8)
    padded[1:-1, 1:-1] = mask != 0
    return _trace_outer(padded, connectivity == 8)


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
    points: list          # per instance: (n, 2) int64 corner points (x = i, y = j)
    texts: list           # per instance: its YOLO-seg line
    width: int            # W = size of axis i
    height: int           # H = size of axis j
    slices: int           # K

    def __len__(self) -> int:
        return len(self.k)


def polygon_text(points: np.ndarray, cls: int, width: int, height: int) -> str:
    """One YOLO-seg line: ``class x1 y1 x2 y2 ...`` normalised by W, H, six decimals."""
    xy = points.astype(np.float64) / np.array([width, height], np.float64)
    return f"{cls} " + " ".join(f"{v:.6f}" for v in xy.reshape(-1).tolist()) + "\n"


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
                where.layer.tolist(), where.k.tolist(), where.value.tolist(),
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
        value=np.array([r[2] for r in rows], np.int64),
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
