"""The fast paths of issue 15 against their plain reference implementations (exact equality).

Speed and memory targets live in the benchmark (``gpuconv bench``), never here: these tests
only pin that the fast paths give the same bytes as the obvious code.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpuconv.backends.base import SliceComponents
from gpuconv.results import boxes


class _Hdr:
    """The few VolumeHeader fields ``to_box_table`` reads."""

    def __init__(self, W, H, K, n_layers=1):
        self.shape = (n_layers, W, H, K)
        self.n_layers = n_layers
        self.path = "x.nrrd"
        self.segments = None
        self.dtype = np.dtype(np.uint8)


class _PlainMap:
    """Plain label maps: value v is class v - 1."""

    def ids_for(self, hdr):
        return None

    def class_of_value(self, v, path):
        return v - 1

    def check_plain_values(self, values, path):
        pass


def _random_components(rng, n, W, H, K, n_values, n_layers=1, dup_share=0.3):
    i0 = rng.integers(0, W, n)
    i1 = np.minimum(i0 + rng.integers(0, 4, n), W - 1)
    j0 = rng.integers(0, H, n)
    j1 = np.minimum(j0 + rng.integers(0, 4, n), H - 1)
    k = rng.integers(0, K, n)
    value = rng.integers(1, n_values + 1, n)
    px = rng.integers(1, 5, n)
    layer = rng.integers(0, n_layers, n)
    m = int(n * dup_share)   # exact duplicates and rows differing only in pixels
    src = rng.integers(0, n, m)
    dst = rng.integers(0, n, m)
    for a in (i0, i1, j0, j1, k, value, layer):
        a[dst] = a[src]
    px[dst[: m // 2]] = px[src[: m // 2]]
    return SliceComponents(layer=layer.astype(np.int32), k=k.astype(np.int32),
                           value=value.astype(np.int64), i0=i0.astype(np.int32),
                           i1=i1.astype(np.int32), j0=j0.astype(np.int32),
                           j1=j1.astype(np.int32), pixels=px.astype(np.int64))


def _reference(comp, cls):
    order = np.lexsort((comp.pixels, comp.i1, comp.j1, comp.i0, comp.j0, cls, comp.k))
    return [a[order] for a in (comp.k, cls, comp.i0, comp.i1, comp.j0, comp.j1, comp.pixels)]


@pytest.mark.parametrize("W,H,K,n,n_values", [(512, 512, 64, 20000, 100), (7, 5, 3, 400, 3),
                                              (1, 1, 1, 5, 1), (512, 512, 1, 3000, 1),
                                              (4096, 4096, 8, 2000, 5000)])
def test_canonical_order_equals_the_7_key_lexsort(W, H, K, n, n_values):
    rng = np.random.default_rng(n + W)
    comp = _random_components(rng, n, W, H, K, n_values)
    hdr = _Hdr(W, H, K)
    t = boxes.to_box_table(comp, hdr, _PlainMap())
    ref = _reference(comp, comp.value.astype(np.int32) - 1)
    for name, want in zip(("k", "cls", "i0", "i1", "j0", "j1", "pixels"), ref):
        assert np.array_equal(getattr(t, name), want), name


def test_empty_table_and_one_box():
    hdr = _Hdr(16, 16, 4)
    t = boxes.to_box_table(SliceComponents.empty(), hdr, _PlainMap())
    assert len(t) == 0 and boxes.yolo_text(t) == b"" and boxes.yolo_lines_by_slice(t) == {}
    one = SliceComponents(layer=np.zeros(1, np.int32), k=np.array([3], np.int32),
                          value=np.array([12], np.int64), i0=np.array([0], np.int32),
                          i1=np.array([15], np.int32), j0=np.array([2], np.int32),
                          j1=np.array([2], np.int32), pixels=np.array([16], np.int64))
    t = boxes.to_box_table(one, hdr, _PlainMap())
    assert boxes.yolo_lines_by_slice(t) == {3: "11 0.500000 0.156250 1.000000 0.062500\n"}


def test_label_text_equals_line_by_line_formatting():
    rng = np.random.default_rng(5)
    W, H, K = 500, 333, 9
    comp = _random_components(rng, 5000, W, H, K, 123456)
    t = boxes.to_box_table(comp, _Hdr(W, H, K), _PlainMap())
    nb = boxes.normalised_boxes(t)
    want: dict[int, str] = {}
    for r in range(len(t)):
        line = f"{t.cls[r]} {nb[r, 0]:.6f} {nb[r, 1]:.6f} {nb[r, 2]:.6f} {nb[r, 3]:.6f}\n"
        want[int(t.k[r])] = want.get(int(t.k[r]), "") + line
    assert boxes.yolo_lines_by_slice(t) == want
    assert boxes.yolo_text(t) == "".join(want[k] for k in sorted(want)).encode()
    views = boxes.yolo_views_by_slice(t)
    assert {k: bytes(v).decode() for k, v in views.items()} == want


def test_class_lookup_equals_unique_and_reports_the_same_mismatch():
    values = np.array([7, 3, 3, 9, 7, 1_000_000_000, 3], np.int64)
    got_v, got_i = boxes._unique_inverse(values)
    want_v, want_i = np.unique(values, return_inverse=True)
    assert np.array_equal(got_v, want_v) and np.array_equal(got_i, want_i.reshape(-1))
    small = np.array([5, -2, 5, 0, 11], np.int64)
    got_v, got_i = boxes._unique_inverse(small)
    want_v, want_i = np.unique(small, return_inverse=True)
    assert np.array_equal(got_v, want_v) and np.array_equal(got_i, want_i.reshape(-1))


# ---- the C kernels (backends/native.py) against the Numba kernels they stand in for -------

native = pytest.importorskip("gpuconv.backends.native")
needs_native = pytest.mark.skipif(native.get() is None, reason="no C compiler here")


def _volumes():
    rng = np.random.default_rng(11)
    for dtype, shape in ((np.uint8, (5, 64, 64)), (np.uint8, (3, 17, 13)), (np.uint16, (4, 32, 40)),
                         (np.int16, (2, 9, 7)), (np.uint32, (3, 16, 16)), (np.int64, (2, 8, 11)),
                         (np.uint64, (2, 6, 8))):
        v = np.zeros(shape, dtype)
        for density, values in ((0.05, 2), (0.4, 3), (0.9, 1)):
            m = rng.random(shape) < density
            v2 = v.copy()
            v2[m] = rng.integers(1, values + 1, int(m.sum())).astype(dtype)
            if np.dtype(dtype).kind == "i":
                v2[m & (rng.random(shape) < 0.3)] = -1
            if dtype == np.uint64:
                v2[m & (rng.random(shape) < 0.3)] = np.uint64(2**64 - 1)
            yield v2
        yield v   # all empty


@needs_native
@pytest.mark.parametrize("diagonal", [False, True])
def test_native_labelling_equals_numba(diagonal):
    from gpuconv.backends import cpu, cpu_kernels
    for v in _volumes():
        u = cpu._unsigned(v)
        words = cpu.row_words(v)
        occ = cpu_kernels.occupied_rows_any(v.reshape(-1, v.shape[2])).reshape(v.shape[:2])
        assert np.array_equal(native.occupied_rows(v), occ)
        if not occ.any():
            continue
        want = cpu_kernels.slice_components(u, occ, diagonal,
                                            cpu._NO_WORDS if words is None else words,
                                            8 // v.itemsize)
        got = native.slice_components(u, occ, diagonal)
        for a, b in zip(got, want):
            assert np.array_equal(a, b)


@needs_native
def test_native_box_kernels_equal_numba():
    from gpuconv.results import box_kernels as bk
    rng = np.random.default_rng(3)
    comp = _random_components(rng, 30000, 512, 512, 40, 120)
    cls = (comp.value - 1).astype(np.int32)
    args = (comp.k, cls, comp.i0, comp.i1, comp.j0, comp.j1, comp.pixels, 40, 9, 9, 3)
    for a, b in zip(native.packed_canonical(*args), bk.packed_canonical(*args)):
        assert np.array_equal(a, b)
    luts = [boxes._fixed_width_lut(n, s, d) for n, s, d in
            ((1025, 2.0, 512.0), (1025, 2.0, 512.0), (513, 1.0, 512.0), (513, 1.0, 512.0))]
    cols = (cls, comp.i0, comp.i1, comp.j0, comp.j1)
    for a, b in zip(native.yolo_text_into(*cols, *luts), bk.yolo_text_into(*cols, *luts)):
        assert np.array_equal(a, b)
    for a, b in zip(native.class_lut_index(comp.value, 1, 120),
                    bk.class_lut_index(comp.value, 1, 120)):
        assert np.array_equal(a, b)


@needs_native
def test_a_large_layer_labelled_in_slabs_equals_one_call():
    from gpuconv.backends import cpu
    rng = np.random.default_rng(8)
    v = (rng.random((23, 40, 48)) < 0.4).astype(np.uint8) * rng.integers(1, 4, (23, 40, 48),
                                                                         dtype=np.uint8)
    occ = native.occupied_rows(v)
    for diagonal in (False, True):
        want = native.slice_components(v, occ, diagonal)
        got = cpu._native_split(v, occ, diagonal)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and np.array_equal(a, b)


@needs_native
def test_native_seen_values():
    rng = np.random.default_rng(2)
    for dtype, n in ((np.uint8, 256), (np.uint16, 65536)):
        a = rng.integers(0, 300 if dtype == np.uint16 else 200, 10000).astype(dtype)
        want = np.zeros(n, bool)
        want[np.unique(a)] = True
        assert np.array_equal(native.seen_values(a), want)
