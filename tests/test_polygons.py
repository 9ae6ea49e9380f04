"""YOLO-seg polygons, read back the way the consumer reads them.

The consumer's rasteriser is re-expressed here from Ultralytics' code (``verify_image_label``:
``np.array(x[1:], dtype=np.float32)``; ``Instances.denormalize``: ``segments[..., 0] *= w`` in
float32; ``polygon2mask``: ``np.asarray(polygons, dtype=np.int32)`` then ``cv2.fillPoly`` at
native size) and fed the written text.  Expected masks come from scipy (``ndimage.label`` and
``binary_fill_holes`` with the dual background connectivity) or from hand-made cases, never
from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import reference_components
from gpuconv.backends import get_backend
from gpuconv.dataset.classes import build_class_map
from gpuconv.io.nrrd_read import read_volume
from gpuconv.results.polygons import (polygon_lines_by_slice, polygon_text, to_polygon_table,
                                      trace_outer_boundary)

cv2 = pytest.importorskip("cv2")   # opencv-python-headless, in the test extra


# --- the consumer ------------------------------------------------------------------------------
def consumer_segment(line: str) -> tuple[int, np.ndarray]:
    """verify_image_label: class and the (n, 2) float32 segment of one YOLO-seg line."""
    parts = line.split()
    return int(float(parts[0])), np.array(parts[1:], dtype=np.float32).reshape(-1, 2)


def resample_segment(s: np.ndarray, n: int = 1000) -> np.ndarray:
    """ultralytics.utils.ops.resample_segments for one segment (closes it, keeps the vertices,
    np.interp in normalised coordinates, float32)."""
    if len(s) == n:
        return s
    s = np.concatenate((s, s[0:1, :]), axis=0)
    x = np.linspace(0, len(s) - 1, n - len(s) if len(s) < n else n)
    xp = np.arange(len(s))
    x = np.insert(x, np.searchsorted(x, xp), xp) if len(s) < n else x
    return np.concatenate([np.interp(x, xp, s[:, i]) for i in range(2)],
                          dtype=np.float32).reshape(2, -1).T


def consumer_mask(line: str, W: int, H: int, resample: bool = False) -> np.ndarray:
    """(H, W) bool: the mask Ultralytics' polygon2mask makes of one line at native size."""
    _, seg = consumer_segment(line)
    if resample:
        seg = resample_segment(seg)
    seg = seg.copy()
    seg[..., 0] *= W                      # float32 times a Python int stays float32
    seg[..., 1] *= H
    mask = np.zeros((H, W), np.uint8)
    polygons = np.asarray([seg.reshape(-1)], dtype=np.int32)   # truncation
    cv2.fillPoly(mask, polygons.reshape((polygons.shape[0], -1, 2)), color=1)
    return mask.astype(bool)


def even_odd(points: np.ndarray, W: int, H: int) -> np.ndarray:
    """(H, W) bool: pixel centres inside a polygon given in pixel-corner coordinates, by the
    even-odd crossing rule (used by test_images.py to find the pixels a polygon covers)."""
    px, py = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    inside = np.zeros((H, W), bool)
    x1, y1 = points[:, 0].astype(float), points[:, 1].astype(float)
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    for a, b, c, d in zip(x1, y1, x2, y2):
        if b == d:
            continue
        crosses = (b > py) != (d > py)
        xcross = a + (py - b) * (c - a) / (d - b)
        inside ^= crosses & (px < xcross)
    return inside


# --- expected values, independent of the tracer ----------------------------------------------
def scipy_instances(sl: np.ndarray, connectivity: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(instance, instance with holes filled) for each instance of a (J, I) slice."""
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    dual = ndimage.generate_binary_structure(2, 2 if connectivity == 4 else 1)
    out = []
    for v in np.unique(sl):
        if v == 0:
            continue
        lab, n = ndimage.label(sl == v, structure)
        for idx in range(1, n + 1):
            inst = lab == idx
            out.append((inst, ndimage.binary_fill_holes(inst, dual)))
    return out


class _Hdr:
    """The header fields to_polygon_table needs, for a plain label map."""

    def __init__(self, shape):
        self.shape = shape
        self.segments = None
        self.path = "mem"
        self.n_layers = shape[0]
        self.dtype = np.dtype(np.uint8)


def table_of(sl_ji: np.ndarray, connectivity: int = 8):
    """Polygon table of one (J, I) slice as a plain label map."""
    layers = np.ascontiguousarray(sl_ji.T[None, :, :, None].astype(np.uint8))
    hdr = _Hdr(layers.shape)
    return to_polygon_table(layers, hdr, build_class_map([hdr]), connectivity)


def assert_consumer_round_trip(sl_ji: np.ndarray, connectivity: int, resample: bool = False):
    """Every instance of the slice: the consumer's mask of some written line is exactly the
    instance with its holes filled (so a hole-free instance comes back pixel for pixel)."""
    H, W = sl_ji.shape
    table = table_of(sl_ji, connectivity)
    masks = [consumer_mask(t, W, H, resample) for t in table.texts]
    expected = scipy_instances(sl_ji, connectivity)
    assert len(masks) == len(expected)
    for t in table.texts:
        assert len(t.split()) > 6            # never read as a box line
    remaining: dict[bytes, int] = {}
    for m in masks:
        key = np.packbits(m).tobytes()
        remaining[key] = remaining.get(key, 0) + 1
    for inst, filled in expected:
        key = np.packbits(filled).tobytes()
        assert remaining.get(key), (f"an instance of {int(inst.sum())} px at "
                                    f"{np.argwhere(inst)[0].tolist()} does not come back exactly")
        remaining[key] -= 1
    return table


# --- hand-made shapes ---------------------------------------------------------------------------
def _canvas(H, W, pixels):
    m = np.zeros((H, W), np.uint8)
    for j, i in pixels:
        m[j, i] = 1
    return m


LINES = {
    "one pixel": [(3, 4)],
    "two pixels": [(3, 4), (3, 5)],
    "horizontal": [(2, i) for i in range(1, 9)],
    "vertical": [(j, 3) for j in range(0, 7)],
    "diagonal down-right": [(k, k + 1) for k in range(6)],
    "diagonal up-right": [(7 - k, k + 2) for k in range(6)],
    "diagonal pair": [(1, 1), (2, 2)],
    "anti-diagonal pair": [(2, 1), (1, 2)],
    "staircase": [(1, 1), (1, 2), (2, 3), (2, 4), (3, 5), (4, 5), (5, 6)],
    "zigzag": [(4, 1), (3, 2), (4, 3), (3, 4), (4, 5), (3, 6)],
    "corner-touching blobs": [(1, 1), (1, 2), (2, 1), (2, 2), (3, 3), (3, 4), (4, 3), (4, 4)],
    "L with a diagonal": [(1, 1), (2, 1), (3, 1), (3, 2), (4, 3)],
    "ring (hole)": [(j, i) for j in range(1, 5) for i in range(2, 6)
                    if j in (1, 4) or i in (2, 5)],
    "diamond ring (4-hole)": [(1, 3), (2, 2), (2, 4), (3, 3)],
    "ring with a diagonal gap": [(1, 1), (1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)],
}


@pytest.mark.parametrize("connectivity", [8, 4])
@pytest.mark.parametrize("name", sorted(LINES))
def test_hand_made_shapes_come_back_exactly(name, connectivity):
    assert_consumer_round_trip(_canvas(9, 10, LINES[name]), connectivity)


def test_one_pixel_lesion_line_repeats_its_pixel():
    """Pixel (i=2, j=3) of a W=7, H=5 slice: its centre 2.5/7, 3.5/5, three times (> 6 fields)."""
    t = table_of(_canvas(5, 7, [(3, 2)]))
    assert t.texts == ["0 0.357143 0.700000 0.357143 0.700000 0.357143 0.700000\n"]


def test_corner_touching_pixels_one_instance_or_two():
    m = _canvas(3, 3, [(0, 0), (1, 1), (2, 2)])
    assert len(table_of(m, 8)) == 1
    assert len(table_of(m, 4)) == 3
    # the 8-connected chain: (0,0) -> (2,2) and back, compressed to its two ends
    assert table_of(m, 8).points[0].tolist() == [[0, 0], [2, 2]]


def test_holes_stay_filled():
    m = np.ones((5, 6), np.uint8)
    m[1:4, 1:5] = 0
    assert trace_outer_boundary(m, 8).tolist() == [[0, 0], [0, 4], [5, 4], [5, 0]]
    H, W = m.shape
    assert consumer_mask(table_of(m).texts[0], W, H).all()


@pytest.mark.parametrize("connectivity", [8, 4])
def test_border_lesions_and_full_slice(connectivity):
    m = np.zeros((12, 10), np.uint8)
    m[0, :] = 1            # the whole top row
    m[:, 9] = 2            # the right column (another class value)
    m[11, 0:3] = 1         # bottom-left corner
    m[5:8, 0] = 1          # left border
    assert_consumer_round_trip(m, connectivity)
    assert_consumer_round_trip(np.ones((7, 5), np.uint8), connectivity)
    assert_consumer_round_trip(np.ones((1, 1), np.uint8), connectivity)


@pytest.mark.parametrize("connectivity", [8, 4])
def test_non_square_500x380_slice(connectivity):
    """W = 500, H = 380: lesions everywhere, the far corners included."""
    rng = np.random.default_rng(3)
    m = np.zeros((380, 500), np.uint8)
    for _ in range(120):
        j, i = rng.integers(0, 380), rng.integers(0, 500)
        r = rng.integers(0, 4)
        blob = rng.random((2 * r + 1, 2 * r + 1)) < 0.6
        blob[r, r] = True
        m[max(j - r, 0):j + r + 1, max(i - r, 0):i + r + 1] |= blob[
            max(r - j, 0):2 * r + 1 - max(j + r + 1 - 380, 0),
            max(r - i, 0):2 * r + 1 - max(i + r + 1 - 500, 0)]
    m[0, 0] = m[379, 499] = m[0, 499] = m[379, 0] = 1
    assert_consumer_round_trip(m, connectivity)


def test_every_size_from_1_to_4096():
    """A W x 2 slice for every W in 1..4096 (2 x H for every 17th): a full-width line on row 0 and a
    one-pixel lesion at the last column of row 1 come back exactly."""
    for size in range(1, 4097):
        m = np.zeros((2, size), np.uint8)
        m[0, :] = 1
        m[1, size - 1] = 2
        texts = table_of(m).texts
        assert len(texts) == 2
        full, last = np.zeros((2, size), bool), np.zeros((2, size), bool)
        full[0, :] = True
        last[1, size - 1] = True
        got = [consumer_mask(t, size, 2) for t in texts]
        assert np.array_equal(got[0], full) and np.array_equal(got[1], last), size
        if size % 17 and size not in (1, 2, 3, 4095, 4096):
            continue                                   # the transposed slice: every 17th size
        got_t = [consumer_mask(t, 2, size) for t in table_of(m.T.copy()).texts]
        assert np.array_equal(got_t[0], full.T) and np.array_equal(got_t[1], last.T), size


def test_number_formatting_survives_float32_for_sizes_1_to_4096():
    """Every vertex of every size: the written text, parsed as float32, times the size in
    float32, truncated to int32, is the vertex's pixel again (8,390,656 vertices)."""
    for W in range(1, 4097):
        i = np.arange(W, dtype=np.int64)
        pts = np.stack([i, i[::-1]], axis=1)
        line = polygon_text(pts, 0, W, W)
        _, seg = consumer_segment(line)
        seg = seg.copy()
        seg *= W
        back = np.asarray(seg, dtype=np.int32)
        assert np.array_equal(back[:W], pts), W    # (W < 3: the first point repeated after)


# --- random maps ------------------------------------------------------------------------------
@pytest.mark.parametrize("connectivity", [8, 4])
@pytest.mark.parametrize("shape,density,seed", [((13, 9), 0.45, 0), ((40, 31), 0.3, 1),
                                                ((64, 48), 0.55, 2), ((97, 130), 0.08, 3)])
def test_random_lesion_maps_round_trip(shape, density, seed, connectivity):
    rng = np.random.default_rng(seed)
    m = ((rng.random(shape) < density) * rng.integers(1, 4, shape)).astype(np.uint8)
    assert_consumer_round_trip(m, connectivity)


def test_vertices_are_what_cv2_findcontours_writes():
    """8-connectivity: the vertex list equals cv2.findContours(RETR_EXTERNAL,
    CHAIN_APPROX_SIMPLE) of the instance's mask, point for point."""
    rng = np.random.default_rng(11)
    n = 0
    for _ in range(300):
        m = rng.random(tuple(rng.integers(1, 14, 2))) < rng.uniform(0.2, 0.8)
        lab, k = ndimage.label(m, np.ones((3, 3)))
        for idx in range(1, k + 1):
            inst = (lab == idx).astype(np.uint8)
            cs, _ = cv2.findContours(inst, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            assert len(cs) == 1
            assert trace_outer_boundary(inst, 8).tolist() == cs[0].reshape(-1, 2).tolist()
            n += 1
    assert n > 500


def test_connectivity_4_edges_are_axis_aligned_and_survive_resampling():
    """--connectivity 4: every edge is horizontal or vertical, so Ultralytics' resampling to
    1000 points (interpolation between vertices) keeps every instance exact as well."""
    rng = np.random.default_rng(4)
    m = ((rng.random((41, 37)) < 0.5) * rng.integers(1, 3, (41, 37))).astype(np.uint8)
    table = assert_consumer_round_trip(m, 4, resample=True)
    for pts in table.points:
        if len(pts) > 1:
            d = np.diff(np.concatenate([pts, pts[:1]]), axis=0)
            assert ((d == 0).sum(axis=1) >= 1).all()


def test_box_from_vertex_extents_is_one_pixel_short():
    """What Ultralytics derives (segments2boxes: vertex extents) spans pixel centres: the
    contract's box of the same instance minus one pixel in each direction."""
    rng = np.random.default_rng(7)
    layers = (rng.random((1, 11, 8, 3)) < 0.5).astype(np.uint8)
    hdr = _Hdr(layers.shape)
    table = to_polygon_table(layers, hdr, build_class_map([hdr]), 8)
    boxes = sorted((k, j0, i0, j1, i1) for k, _, i0, i1, j0, j1, _ in
                   reference_components(layers[0], 8))
    got = []
    for k, text in zip(table.k.tolist(), table.texts):
        _, seg = consumer_segment(text)
        (x0, y0), (x1, y1) = seg.min(axis=0) * [11, 8], seg.max(axis=0) * [11, 8]
        ext = np.array([x1 - x0, y1 - y0])
        assert np.abs(ext - np.rint(ext)).max() < 1e-4          # whole pixels between centres
        got.append((k, int(y0), int(x0), int(y1), int(x1)))
    assert sorted(got) == boxes


def test_lines_sorted_like_boxes_and_never_mixed():
    layers = np.zeros((1, 10, 6, 1), np.uint8)
    layers[0, 6:8, 0, 0] = 1   # starts at j=0, i=6
    layers[0, 1, 0:3, 0] = 1   # starts at j=0, i=1
    layers[0, 0, 4, 0] = 2     # class 1
    hdr = _Hdr(layers.shape)
    table = to_polygon_table(layers, hdr, build_class_map([hdr]))
    heads = [(int(c), pts.min(axis=0)[1], pts.min(axis=0)[0]) for c, pts in
             zip(table.cls, table.points)]
    assert heads == [(0, 0, 1), (0, 0, 6), (1, 4, 0)]
    assert all(len(t.split()) > 6 for t in table.texts)


def test_slicer_segmentation_round_trip(slicer_data):
    """A real Slicer file (7 segments, big lungs with holes): a few slices, both rules, every
    instance equal to its hole-filled self under the consumer's rasteriser."""
    vol = read_volume(slicer_data / "Segmentation.seg.nrrd")
    sub = np.ascontiguousarray(vol.layers[:, :, :, 14:17])
    cm = build_class_map([vol.header])
    _, W, H, _ = sub.shape
    for connectivity in (8, 4):
        table = to_polygon_table(sub, vol.header, cm, connectivity)
        comp = get_backend("cpu").slice_components(sub, connectivity)
        assert len(table) == len(comp)
        for k, text in polygon_lines_by_slice(table).items():
            expected = [f for layer in range(sub.shape[0])
                        for _, f in scipy_instances(sub[layer, :, :, k].T, connectivity)]
            got = [consumer_mask(line, W, H) for line in text.splitlines()]
            assert len(got) == len(expected)
            for f in expected:
                assert any(np.array_equal(g, f) for g in got)
        # labelling only the backend's boxes (what convert does) gives the same polygons
        assert to_polygon_table(sub, vol.header, cm, connectivity, where=comp).texts == table.texts


def test_convert_polygons_same_instances_as_boxes(tmp_path):
    """convert --format polygons: same files, same line order as --format boxes; each polygon
    spans exactly the pixels of its box."""
    import gpuconv
    from conftest import write_seg
    rng = np.random.default_rng(5)
    vol = ((rng.random((9, 7, 3)) < 0.4) * rng.integers(1, 3, (9, 7, 3))).astype(np.uint8)
    vol[:, :, 1] = 0
    vol[4, 3, 1] = 2  # a lone one-pixel lesion
    f = write_seg(tmp_path / "r_1.seg.nrrd", vol, [("a", 0, 1), ("b", 0, 2)])
    kw = dict(val_fraction=0.0, backend="cpu", progress=False)
    gpuconv.convert([str(f)], tmp_path / "b", **kw)
    s = gpuconv.convert([str(f)], tmp_path / "p", fmt="polygons", write_empty=True, **kw)
    assert s["failed"] == 0
    boxes = {p.name: p.read_text().splitlines() for p in (tmp_path / "b/labels/train").iterdir()}
    polys = {p.name: p.read_text().splitlines() for p in (tmp_path / "p/labels/train").iterdir()}
    assert set(boxes) <= set(polys) and len(polys) == 3   # --write-empty: every slice
    for name, lines in polys.items():
        derived = []
        for line in lines:
            assert len(line.split()) > 6
            c, seg = consumer_segment(line)
            px = np.asarray(seg * np.float32([9, 7]), dtype=np.int32)   # pixel indices
            (x0, y0), (x1, y1) = px.min(axis=0), px.max(axis=0)
            derived.append(f"{c} {(x0 + x1 + 1) / 2 / 9:.6f} {(y0 + y1 + 1) / 2 / 7:.6f} "
                           f"{(x1 - x0 + 1) / 9:.6f} {(y1 - y0 + 1) / 7:.6f}")
        assert derived == boxes.get(name, [])
    # pixel (4, 3) of 9 x 7: centre 4.5/9, 3.5/7
    assert polys["1_2.txt"] == ["1 0.500000 0.500000 0.500000 0.500000 0.500000 0.500000"]
    with pytest.raises(Exception, match="cannot go together"):
        gpuconv.convert([str(f)], tmp_path / "x", fmt="boxes,polygons", **kw)
