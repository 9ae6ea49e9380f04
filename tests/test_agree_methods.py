"""Every way ``compare_masks`` can compute the all-voxel HD95 gives exactly the number of an
independent reference written here the ASOCA challenge's way (``np.where`` -> uint16 indices,
scipy ``cKDTree`` both ways, ``np.quantile(., 0.95)``, max of the two) -- issue 15.

The methods (``distance_methods.METHODS``): the offset search of ``nearest_shells`` finishing on
its own, or handing what it leaves open to the k-d tree or to the EDT (forced with a small
look-up budget), and the k-d tree or the EDT alone; plus the SciPy backend and Fortran-ordered
input.  Cases: random masks, empty A / B / both, one voxel, far-apart islands, a tail of >5 %
far voxels (the percentile falls in it), masks on the array border, anisotropic shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial import cKDTree

from gpuconv.analysis import agreement, distance_methods as dm, nearest_shells

MM = (0.390625, 0.48828125, 0.625)       # dyadic CT spacings: the exact methods apply


def challenge_hd95(a, b) -> float:
    """evaluation.py's hausdorff_95 (voxel units); gpuconv's rule for empty masks."""
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return math.inf
    sub = np.array(np.where(a > 0.5), dtype=np.uint16).T
    gt = np.array(np.where(b > 0.5), dtype=np.uint16).T
    d1, _ = cKDTree(sub).query(gt)
    d2, _ = cKDTree(gt).query(sub)
    return float(max(np.quantile(d1, 0.95), np.quantile(d2, 0.95)))


def mm_hd95(a, b, spacing) -> float:
    """The same in mm: cKDTree picks the nearest voxel, the distance is recomputed from the
    offsets (exact for dyadic spacings, so no rounding of the tree's own enters)."""
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return math.inf
    s = np.asarray(spacing, float)
    pa, pb = np.argwhere(a) * s, np.argwhere(b) * s

    def directed(src, dst):
        _, nn = cKDTree(dst).query(src)
        off = src - dst[nn]
        return np.sqrt(off[:, 0] ** 2 + (off[:, 1] ** 2 + off[:, 2] ** 2))
    return float(max(np.quantile(directed(pa, pb), 0.95), np.quantile(directed(pb, pa), 0.95)))


def dice_ref(a, b) -> float:
    na, nb = int(a.sum()), int(b.sum())
    return 1.0 if na + nb == 0 else 2.0 * int((a & b).sum()) / (na + nb)


def _cases():
    rng = np.random.default_rng(15)
    for shape in [(24, 20, 16), (40, 7, 3), (5, 61, 9), (1, 30, 33), (64, 2, 2)]:
        for p in (0.01, 0.1, 0.5):
            a = rng.random(shape) < p
            b = a.copy()
            flip = rng.random(shape) < 0.05
            b[flip] = ~b[flip]
            yield f"near copy {shape} {p}", a, b
            yield f"independent {shape} {p}", a, rng.random(shape) < p
    shape = (30, 26, 18)
    z = np.zeros(shape, bool)
    one = z.copy()
    one[3, 4, 5] = True
    other = z.copy()
    other[27, 1, 16] = True
    yield "empty A", z, one
    yield "empty B", one, z
    yield "both empty", z, z.copy()
    yield "one voxel each", one, other
    yield "same voxel", one, one.copy()
    far = z.copy()
    far[0, 0, 0] = far[29, 25, 17] = True
    yield "far corners vs one", far, one
    blob = z.copy()
    blob[4:12, 5:13, 3:9] = True
    islands = blob.copy()
    islands[24:28, 20:24, 13:17] = True             # 64 of 448 voxels far away: > 5 %
    yield "far island tail", blob, islands
    yield "far island tail, reversed", islands, blob
    shifted = np.roll(blob, 3, axis=1)
    shifted[0, :, 0] = True                          # a line on the border
    yield "shifted blob + border line", blob, shifted
    yield "full vs one", np.ones(shape, bool), one
    plane = z.copy()
    plane[15] = True
    line = z.copy()
    line[:, 13, 9] = True
    yield "line vs plane", line, plane


# (method, look-up budget): None = the default budget; 0 = hand everything over at once;
# 200 = a few offset groups, then hand over
RUNS = [("shells+kdtree", None), ("shells+kdtree", 0), ("shells+kdtree", 200),
        ("shells+edt", None), ("shells+edt", 0), ("shells+edt", 200),
        ("kdtree", None), ("edt", None)]


def _run(monkeypatch, method, budget, a, b, spacing, defs, trace):
    monkeypatch.setattr(dm, "FORCE_METHOD", method)
    monkeypatch.setattr(dm, "SHELL_BUDGET", budget)
    monkeypatch.setattr(dm, "TRACE", trace)
    return agreement.compare_masks(a, b, spacing, defs, backend="cpu")


def test_every_method_gives_the_challenges_number_exactly(monkeypatch):
    seen = set()
    for name, a, b in _cases():
        want = challenge_hd95(a, b)
        for method, budget in RUNS:
            trace = []
            r = _run(monkeypatch, method, budget, a, b, 1.0, ("asoca_challenge",), trace)
            seen.update(trace)
            assert r["hd95_asoca_challenge"] == want, (name, method, budget)
            assert r["dice"] == dice_ref(a, b), name
            f = _run(monkeypatch, method, budget, np.asfortranarray(a), np.asfortranarray(b),
                     1.0, ("asoca_challenge",), trace)
            assert f == r, (name, method, budget, "Fortran order")
        monkeypatch.setattr(dm, "FORCE_METHOD", None)
        monkeypatch.setattr(dm, "SHELL_BUDGET", None)
        default = agreement.compare_masks(a, b, 1.0, ("asoca_challenge",))
        assert default["hd95_asoca_challenge"] == want, name
        scipy = agreement.compare_masks(a, b, 1.0, ("asoca_challenge",), backend="scipy")
        assert scipy["hd95_asoca_challenge"] == want, name
        assert agreement.hd95_asoca_challenge(a.astype(np.float32), b.astype(np.uint8)) == want
    # each route really ran somewhere
    assert {"shells", "shells+kdtree", "shells+edt", "kdtree", "edt"} <= seen


def test_the_default_choice_hands_far_islands_over_and_stays_exact(monkeypatch):
    """No forcing: far-apart islands with a tiny budget make the search hand over by itself."""
    trace = []
    monkeypatch.setattr(dm, "TRACE", trace)
    monkeypatch.setattr(nearest_shells, "BUDGET_BASE", 0)
    monkeypatch.setattr(nearest_shells, "BUDGET_PER_POINT", 1)
    for name, a, b in _cases():
        assert agreement.compare_masks(a, b, 1.0, ("asoca_challenge",))[
            "hd95_asoca_challenge"] == challenge_hd95(a, b), name
    assert "shells+kdtree" in trace and "shells" in trace


@pytest.mark.parametrize("spacing", [MM, (0.5, 0.5, 2.0), (3.0, 1.0, 0.25)])
def test_every_method_gives_the_same_mm_number(monkeypatch, spacing):
    for name, a, b in _cases():
        want = mm_hd95(a, b, spacing)
        got = {(m, bud): _run(monkeypatch, m, bud, a, b, spacing, ("asoca_mm",), [])
               ["hd95_asoca_mm"] for m, bud in RUNS}
        assert set(got.values()) == {want}, (name, got, want)


def test_non_dyadic_spacing_always_takes_the_edt(monkeypatch):
    """0.7 mm is not exact in float64: whatever is forced, only the EDT runs."""
    spacing = (0.7, 0.7, 1.3)
    for name, a, b in list(_cases())[:12]:
        if not (a.any() and b.any()):
            continue
        results = set()
        for m, bud in RUNS:
            trace = []
            results.add(_run(monkeypatch, m, bud, a, b, spacing, ("asoca_mm",), trace)
                        ["hd95_asoca_mm"])
            assert set(trace) == {"edt"}, (name, m)
        assert len(results) == 1, name


def test_offset_groups_are_every_offset_in_order_of_length():
    spacing = (0.5, 1.0, 2.0)
    groups = nearest_shells.offset_groups(spacing, (50, 50, 50), 4.0)
    lengths = [sq for sq, _ in groups]
    assert lengths == sorted(set(lengths))
    got = sorted(tuple(int(x) for x in o) for _, offs in groups for o in offs)
    want = sorted((i, j, k) for i in range(-8, 9) for j in range(-4, 5) for k in range(-2, 3)
                  if 0 < (i * 0.5) ** 2 + j ** 2 + (k * 2.0) ** 2 <= 16.0)
    assert got == want
    for sq, offs in groups:
        assert all(((o * np.asarray(spacing)) ** 2).sum() == sq for o in offs)


def test_needed_ranks_cover_what_np_quantile_reads():
    """Values past the needed ranks may be anything larger: np.quantile does not change."""
    rng = np.random.default_rng(2)
    for n in list(range(1, 60)) + [997, 10_000]:
        d = np.sort(rng.integers(0, 5, n).astype(float))
        k = nearest_shells.needed_ranks(n)
        e = d.copy()
        e[k:] = 1e300
        assert np.quantile(e, 0.95) == np.quantile(d, 0.95), n


def test_2d_masks_every_method(monkeypatch):
    rng = np.random.default_rng(7)
    for shape, p in [((40, 33), 0.05), ((3, 90), 0.2), ((25, 25), 0.5)]:
        a = rng.random(shape) < p
        b = rng.random(shape) < p
        want = challenge_hd95(a, b)
        for method, budget in RUNS:
            r = _run(monkeypatch, method, budget, a, b, 1.0, ("asoca_challenge",), [])
            assert r["hd95_asoca_challenge"] == want, (shape, method, budget)
