"""``compare_masks`` on Fortran-ordered masks (as decoded NRRD volumes are) works on their
C-ordered transposes instead of copying them (issue 15): every number must be bit for bit what
the C-ordered masks give, and what the ASOCA challenge's own cKDTree computation gives; the
union box without the OR temporary must equal the OR-based one; a 0/1 uint8 layer is used as
its own mask."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from gpuconv.analysis import agreement
from gpuconv.analysis.agreement_files import _value_mask

ALL = ("asoca_challenge", "asoca_mm", "medpy", "surface")


def _challenge(a, b):
    """evaluation.py's hausdorff_95, written out here."""
    sub = np.array(np.where(a > 0.5), dtype=np.uint16).T
    gt = np.array(np.where(b > 0.5), dtype=np.uint16).T
    d1, _ = cKDTree(sub).query(gt)
    d2, _ = cKDTree(gt).query(sub)
    return float(max(np.quantile(d1, 0.95), np.quantile(d2, 0.95)))


def _cases():
    rng = np.random.default_rng(11)
    shape = (23, 17, 9)
    yield "random", rng.random(shape) < 0.05, rng.random(shape) < 0.05
    a = np.zeros(shape, bool)
    b = np.zeros(shape, bool)
    a[1, 2, 3] = True
    b[20, 15, 7] = True
    yield "one voxel each, far apart", a, b
    a2 = np.zeros(shape, bool)
    a2[2:6, 3:9, 1:4] = True
    a2[18:22, 12:16, 6:9] = True      # far islands
    b2 = a2.copy()
    b2[18:22, 12:16, 6:9] = False
    b2[10, 8, 4] = True
    yield "far islands", a2, b2
    yield "thin slab", rng.random((40, 3, 2)) < 0.3, rng.random((40, 3, 2)) < 0.3


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.390625, 0.48828125, 0.625)])
def test_fortran_ordered_masks_give_the_same_numbers(spacing):
    for name, a, b in _cases():
        c = agreement.compare_masks(a, b, spacing, ALL, backend="cpu")
        f = agreement.compare_masks(np.asfortranarray(a), np.asfortranarray(b), spacing, ALL,
                                    backend="cpu")
        assert f == c, name
        assert c["hd95_asoca_challenge"] == _challenge(a, b), name
        assert f["hd95_asoca_challenge"] == _challenge(a, b), name


def test_non_dyadic_spacing_keeps_the_axis_order():
    """0.7 mm is not exact in float64: there the masks are not transposed, so the sums run in
    the same order as for C-ordered input and the numbers stay identical."""
    for name, a, b in _cases():
        c = agreement.compare_masks(a, b, (0.7, 0.7, 1.3), ALL, backend="cpu")
        f = agreement.compare_masks(np.asfortranarray(a), np.asfortranarray(b),
                                    (0.7, 0.7, 1.3), ALL, backend="cpu")
        assert f == c, name


def test_empty_masks_in_fortran_order():
    z = np.asfortranarray(np.zeros((5, 6, 7), bool))
    one = z.copy(order="F")
    one[2, 3, 4] = True
    both = agreement.compare_masks(z, z, (1, 1, 1), ALL, backend="cpu")
    assert both["dice"] == 1.0 and both["hd95_asoca_challenge"] == 0.0
    half = agreement.compare_masks(one, z, (1, 1, 1), ALL, backend="cpu")
    assert half["dice"] == 0.0 and half["hd95_asoca_challenge"] == float("inf")


def test_union_box_equals_the_or_based_box():
    rng = np.random.default_rng(3)
    for _ in range(40):
        shape = tuple(int(n) for n in rng.integers(1, 12, size=3))
        a = rng.random(shape) < rng.choice([0.0, 0.01, 0.2])
        b = rng.random(shape) < rng.choice([0.0, 0.01, 0.2])
        both = a | b
        if not both.any():
            assert agreement.union_box(a, b) is None
            continue
        idx = np.argwhere(both)
        expected = tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(idx.min(0), idx.max(0)))
        assert agreement.union_box(a, b) == expected
        assert agreement.union_box(np.asfortranarray(a), b) == expected


def test_binary_layer_is_its_own_mask():
    rng = np.random.default_rng(4)
    layer = np.asfortranarray((rng.random((8, 9, 10)) < 0.3).astype(np.uint8))
    m = _value_mask(layer, 1)
    assert m.dtype == bool and np.shares_memory(m, layer)
    assert np.array_equal(m, layer == 1)
    layer[0, 0, 0] = 2                         # not binary any more: a real comparison
    m2 = _value_mask(layer, 1)
    assert not np.shares_memory(m2, layer) and np.array_equal(m2, layer == 1)
    assert np.array_equal(_value_mask(layer, 2), layer == 2)
