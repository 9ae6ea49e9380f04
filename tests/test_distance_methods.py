"""agree's distance methods (analysis/distance_methods.py): the k-d tree over surface points
gives exactly the EDT path's numbers on random and adversarial masks (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest

from gpuconv.analysis import agreement, distance_methods as dm

EDT = agreement.cpu_ops().nearest


def _pairs():
    rng = np.random.default_rng(4)
    shape = (24, 20, 16)
    z = np.zeros(shape, bool)
    one = z.copy()
    one[3, 4, 5] = True
    other = z.copy()
    other[20, 1, 14] = True
    far = z.copy()
    far[0, 0, 0] = far[23, 19, 15] = True          # two islands at opposite corners
    full = np.ones(shape, bool)
    yield "one voxel each", one, other
    yield "same voxel", one, one.copy()
    yield "far islands", far, one
    yield "full vs one", full, one
    for p in (0.01, 0.1, 0.5):
        a = rng.random(shape) < p
        b = a.copy()
        flip = rng.random(shape) < 0.05
        b[flip] = ~b[flip]
        yield f"random {p}", a, b
        yield f"independent {p}", a, rng.random(shape) < p
    line = z.copy()
    line[:, 10, 8] = True
    plane = z.copy()
    plane[12, :, :] = True
    yield "line vs plane", line, plane
    yield "border slab", full & (np.arange(24)[:, None, None] < 2), plane


SPACINGS = [(1.0, 1.0, 1.0), (0.390625, 0.390625, 0.625), (0.5, 0.5, 2.0), (3.0, 1.0, 0.25)]


@pytest.mark.parametrize("spacing", SPACINGS)
def test_kdtree_distances_equal_the_edt_bit_for_bit(spacing):
    assert dm.exact_spacing(spacing, (24, 20, 16))
    for name, a, b in _pairs():
        if not b.any():
            continue
        want = EDT(b, a, spacing)
        got = dm.nearest_kdtree(b, a, spacing)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert np.array_equal(got, want), name


def test_surface_equals_the_scipy_erosion():
    from scipy import ndimage as ndi
    for _, a, b in _pairs():
        for m in (a, b):
            ero = ndi.binary_erosion(m, structure=ndi.generate_binary_structure(3, 1),
                                     border_value=0)
            assert np.array_equal(dm.surface(m), m & ~ero)


def test_non_dyadic_spacing_keeps_the_edt():
    a = np.zeros((30, 30, 30), bool)
    a[3, 4, 5] = True
    assert dm.choose(a, a, (0.7, 0.7, 3.0)) == "edt"
    assert dm.choose(a, a, (1.0, 1.0, 1.0)) == "kdtree"
    assert dm.choose(np.ones_like(a), a, (1.0, 1.0, 1.0)) == "edt"


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.390625, 0.390625, 0.625),
                                     (0.7, 0.7, 3.0)])
def test_compare_masks_numbers_identical_whichever_method_runs(spacing, monkeypatch):
    defs = ("asoca_challenge", "asoca_mm", "medpy", "surface")
    for name, a, b in _pairs():
        monkeypatch.setattr(dm, "KDTREE_MAX_SHARE", 10.0)    # always the k-d tree if exact
        kd = agreement.compare_masks(a, b, spacing, defs)
        monkeypatch.setattr(dm, "KDTREE_MAX_SHARE", -1.0)    # always the EDT
        edt = agreement.compare_masks(a, b, spacing, defs)
        assert kd == edt, name


def test_empty_target():
    a = np.zeros((5, 5, 5), bool)
    a[1, 1, 1] = True
    assert np.array_equal(dm.nearest_kdtree(np.zeros_like(a), a, (1, 1, 1)), [np.inf])
    assert dm.nearest_kdtree(a, np.zeros_like(a), (1, 1, 1)).size == 0
