"""YOLO-seg polygons: rasterised back (even-odd at pixel centres, written here, independent of the
tracer) they must give back each instance exactly, holes filled (scipy's binary_fill_holes)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import reference_components
from gpuconv.backends import get_backend
from gpuconv.dataset.classes import build_class_map
from gpuconv.io.nrrd_read import read_volume
from gpuconv.results.polygons import polygon_lines_by_slice, to_polygon_table, trace_outer_boundary


def even_odd(points: np.ndarray, W: int, H: int) -> np.ndarray:
    """(H, W) bool: pixel centres inside the polygon by the even-odd crossing rule."""
    px, py = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    inside = np.zeros((H, W), bool)
    x1, y1 = points[:, 0].astype(float), points[:, 1].astype(float)
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    for a, b, c, d in zip(x1, y1, x2, y2):
        if b == d:
            continue  # horizontal edges never cross a ray through a pixel centre
        crosses = (b > py) != (d > py)
        xcross = a + (py - b) * (c - a) / (d - b)
        inside ^= crosses & (px < xcross)
    return inside


def parse_polygon_line(line: str, W: int, H: int):
    parts = line.split()
    xy = np.array([float(v) for v in parts[1:]]).reshape(-1, 2) * [W, H]
    corners = np.rint(xy)
    assert np.abs(xy - corners).max() < 1e-3  # corner coordinates, printed with 6 decimals
    return int(parts[0]), corners.astype(np.int64)


def filled_instances(layers, connectivity):
    """{k: [filled (J, I) mask of each instance]} via scipy, holes filled with the dual
    background connectivity."""
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    dual = ndimage.generate_binary_structure(2, 2 if connectivity == 4 else 1)
    out: dict[int, list] = {}
    for layer in range(layers.shape[0]):
        for k in range(layers.shape[3]):
            sl = layers[layer, :, :, k].T
            for v in np.unique(sl):
                if v == 0:
                    continue
                lab, n = ndimage.label(sl == v, structure)
                for idx in range(1, n + 1):
                    out.setdefault(k, []).append(ndimage.binary_fill_holes(lab == idx, dual))
    return out


def check_round_trip(layers, hdr, connectivity):
    cm = build_class_map([hdr])
    table = to_polygon_table(layers, hdr, cm, connectivity)
    _, W, H, _ = layers.shape
    expected = filled_instances(layers, connectivity)
    got: dict[int, list] = {}
    for k, text in polygon_lines_by_slice(table).items():
        for line in text.splitlines():
            _, pts = parse_polygon_line(line, W, H)
            assert len(pts) >= 4
            got.setdefault(k, []).append(even_odd(pts, W, H))
    assert sorted(got) == sorted(expected)
    for k in expected:
        remaining = list(got[k])
        assert len(remaining) == len(expected[k])
        for mask in expected[k]:
            # IoU = 1: some polygon rasterises to exactly this filled instance
            hit = [n for n, r in enumerate(remaining) if np.array_equal(r, mask)]
            assert hit, f"slice {k}: an instance has no polygon that rasterises to it"
            remaining.pop(hit[0])
    return table


class _Hdr:
    """The header fields to_polygon_table needs, for a plain label map."""

    def __init__(self, shape):
        self.shape = shape
        self.segments = None
        self.path = "mem"
        self.n_layers = shape[0]


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_masks_round_trip(connectivity, seed):
    rng = np.random.default_rng(seed)
    layers = (rng.random((1, 13, 9, 4)) < 0.45) * rng.integers(1, 4, (1, 13, 9, 4))
    layers = layers.astype(np.uint8)
    check_round_trip(layers, _Hdr(layers.shape), connectivity)


def test_one_pixel_lesion_is_the_four_corner_square():
    layers = np.zeros((1, 7, 5, 1), np.uint8)
    layers[0, 2, 3, 0] = 1
    table = to_polygon_table(layers, _Hdr(layers.shape), build_class_map([_Hdr(layers.shape)]))
    # corners (2,3) (3,3) (3,4) (2,4), x / W=7, y / H=5, clockwise on screen
    assert table.texts == ["0 0.285714 0.600000 0.428571 0.600000 0.428571 0.800000 "
                           "0.285714 0.800000\n"]


@pytest.mark.parametrize("connectivity,n_polygons", [(8, 1), (4, 3)])
def test_diagonal_join(connectivity, n_polygons):
    mask = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.uint8)  # (J, I)
    layers = mask.T[None, :, :, None].copy()
    table = check_round_trip(layers, _Hdr(layers.shape), connectivity)
    assert len(table) == n_polygons
    if connectivity == 8:  # one polygon touching itself at (1,1) and (2,2)
        pts = table.points[0].tolist()
        assert pts[0] == [0, 0] and pts.count([1, 1]) == 2 and pts.count([2, 2]) == 2


def test_holes_are_filled_and_only_corners_kept():
    mask = np.ones((5, 6), np.uint8)
    mask[1:4, 1:5] = 0  # a ring: the outer boundary is the 4-corner rectangle
    pts = trace_outer_boundary(mask, 8)
    assert pts.tolist() == [[0, 0], [6, 0], [6, 5], [0, 5]]


@pytest.mark.parametrize("connectivity", [4, 8])
def test_corner_points_only_and_box_matches(connectivity):
    """Every point is a turn (no collinear points), every edge is axis-aligned, and min/max of
    the points is the contract's box of the same instance (computed by scipy in conftest)."""
    rng = np.random.default_rng(7)
    layers = (rng.random((1, 11, 8, 3)) < 0.5).astype(np.uint8)
    table = to_polygon_table(layers, _Hdr(layers.shape), build_class_map([_Hdr(layers.shape)]),
                             connectivity)
    boxes = sorted((k, j0, i0, j1, i1) for k, _, i0, i1, j0, j1, _ in
                   reference_components(layers[0], connectivity))
    got = []
    for k, pts in zip(table.k.tolist(), table.points):
        nxt = np.roll(pts, -1, axis=0)
        prv = np.roll(pts, 1, axis=0)
        e_in, e_out = pts - prv, nxt - pts
        assert ((e_in == 0).sum(axis=1) == 1).all()  # axis-aligned, non-zero edges
        cross = e_in[:, 0] * e_out[:, 1] - e_in[:, 1] * e_out[:, 0]
        assert (cross != 0).all()                      # every point is a corner
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        got.append((k, y0, x0, y1 - 1, x1 - 1))
    assert sorted(got) == boxes


def test_lines_sorted_like_boxes_and_never_mixed(tmp_path):
    layers = np.zeros((1, 10, 6, 1), np.uint8)
    layers[0, 6:8, 0, 0] = 1   # starts at j=0, i=6
    layers[0, 1, 0:3, 0] = 1   # starts at j=0, i=1
    layers[0, 0, 4, 0] = 2     # class 1
    table = to_polygon_table(layers, _Hdr(layers.shape), build_class_map([_Hdr(layers.shape)]))
    heads = [(int(c), pts.min(axis=0)[1], pts.min(axis=0)[0]) for c, pts in
             zip(table.cls, table.points)]
    assert heads == [(0, 0, 1), (0, 0, 6), (1, 4, 0)]
    assert all(len(t.split()) > 6 for t in table.texts)


def test_slicer_segmentation_round_trip(slicer_data):
    """A real Slicer file (7 segments, big lungs with holes): a few slices, both rules."""
    vol = read_volume(slicer_data / "Segmentation.seg.nrrd")
    sub = np.ascontiguousarray(vol.layers[:, :, :, 14:17])
    for connectivity in (8, 4):
        table = check_round_trip(sub, vol.header, connectivity)
        comp = get_backend("cpu").slice_components(sub, connectivity)
        assert len(table) == len(comp)
        # labelling only the backend's boxes (what convert does) gives the same polygons
        cm = build_class_map([vol.header])
        assert to_polygon_table(sub, vol.header, cm, connectivity, where=comp).texts == table.texts


def test_convert_polygons_same_instances_as_boxes(tmp_path):
    """convert --format polygons: same files, same line order as --format boxes, and the box
    Ultralytics derives from each polygon (min/max of its points) is the written box."""
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
            assert len(line.split()) >= 1 + 8            # >= 4 points, never a box line
            c, pts = parse_polygon_line(line, 9, 7)
            (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
            derived.append(f"{c} {(x0 + x1) / 2 / 9:.6f} {(y0 + y1) / 2 / 7:.6f} "
                           f"{(x1 - x0) / 9:.6f} {(y1 - y0) / 7:.6f}")
        assert derived == boxes.get(name, [])
    assert polys["1_2.txt"] == ["1 0.444444 0.428571 0.555556 0.428571 0.555556 0.571429 "
                                "0.444444 0.571429"]
    with pytest.raises(Exception, match="cannot go together"):
        gpuconv.convert([str(f)], tmp_path / "x", fmt="boxes,polygons", **kw)
