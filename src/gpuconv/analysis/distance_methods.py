"""Nearest-voxel distances for agreement, with the method chosen by the data.

``nearest_kdtree(target, at, spacing)`` returns, for every True voxel of ``at`` (C order, as
``at[mask]`` lists them), the Euclidean distance to the nearest True voxel of ``target``:
exactly what the EDT path of ``agreement.py`` returns (``sqrt(squared_distance_to(target)[at])``),
computed from points instead of over the whole box:

- a voxel of ``at`` inside ``target`` is at distance 0 (no query);
- the nearest target voxel of any other voxel is a *surface* voxel of the target (one with a
  6-neighbour outside it, the array border counting as outside): if the nearest one q had all
  six neighbours inside, the neighbour of q one step towards p would be nearer.  So the k-d
  tree holds the target's surface voxels only, and only voxels of ``at`` outside ``target``
  are queried.  For a vessel pair at 0.2-2 % foreground and Dice ~0.8 that is a few percent
  of the points the plain cKDTree script builds and queries.

Exactly equal, not just close: both paths compute sums of squared per-axis offsets times the
spacing.  When every spacing is a dyadic number (k / 2^m with small m: 1.0 for voxel units, and
the usual CT spacings 0.390625, 0.48828125, 0.625, 0.5 ...) every term and every sum is exact
in float64 in both paths, so both take the square root of the same exact number, whatever
nearest voxel either picks among ties.  For other spacings (0.7 mm) the two paths could round
differently, so ``choose`` keeps the EDT there.

``choose(target, at, spacing)`` picks "kdtree" when it is exact and the points are few next to
the box (``KDTREE_MAX_SHARE``), else "edt".  For the all-voxel HD95 only a percentile of the
distances is needed: ``all_voxel_hd95`` / ``directed_p95`` run the offset search of
``nearest_shells`` first when the spacing is exact (it usually finishes on its own: no tree, no
EDT, no SciPy import) and give what it leaves open to ``choose``'s method (``choose_p95``).
``with_method_choice(ops)`` wraps an ``agreement.ArrayOps`` (CPU only) so every distance
``compare_masks`` asks for goes through these choices.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

KDTREE_MAX_SHARE = 1 / 4    # kdtree when the two masks hold at most this share of the box
_DYADIC_BITS = 12           # spacing * 2**12 must be an integer ...
_EXACT_LIMIT = 2.0 ** 50    # ... and every squared distance * 2**(2*12) below this


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a 6-neighbour outside it (the array border is outside): the
    same set as ``mask & ~binary_erosion(mask, 6-neighbourhood, border_value=0)``."""
    mask = np.asarray(mask, bool)
    inner = mask.copy()
    for axis in range(mask.ndim):
        n = mask.shape[axis]
        if n < 3:
            inner[...] = False
            break
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        mid = [slice(None)] * mask.ndim
        lo[axis], mid[axis], hi[axis] = slice(0, n - 2), slice(1, n - 1), slice(2, n)
        edge = [slice(None)] * mask.ndim
        edge[axis] = [0, n - 1]
        inner[tuple(edge)] = False
        inner[tuple(mid)] &= mask[tuple(lo)] & mask[tuple(hi)]
    return mask & ~inner


def exact_spacing(spacing, shape) -> bool:
    """True when every squared distance on this grid is exact in float64 in both paths."""
    scale = 2.0 ** _DYADIC_BITS
    reach = 0.0
    for s, n in zip(spacing, shape):
        if not (math.isfinite(s) and s > 0) or (s * scale) != math.floor(s * scale):
            return False
        reach += ((n - 1) * s * scale) ** 2
    return reach < _EXACT_LIMIT


def choose(target: np.ndarray, at: np.ndarray, spacing, n_target: int | None = None,
           n_at: int | None = None) -> str:
    """'kdtree' or 'edt' for the distances from ``at`` to ``target`` (same-shape masks)."""
    if not exact_spacing(spacing, target.shape) or target.ndim > 3:
        return "edt"
    n_target = int(np.count_nonzero(target)) if n_target is None else n_target
    n_at = int(np.count_nonzero(at)) if n_at is None else n_at
    return "kdtree" if (n_target + n_at) <= KDTREE_MAX_SHARE * target.size else "edt"


def _surface_points(flat_target: np.ndarray, idx: np.ndarray, shape) -> np.ndarray:
    """Coordinates (n, ndim) of the surface voxels among the target voxels at flat C-order
    indices ``idx`` (see ``surface``), from 2 x ndim gathers instead of passes over the box."""
    coords = np.stack(np.unravel_index(idx, shape), axis=1)
    on = np.zeros(len(idx), bool)
    stride = 1
    for axis in range(len(shape) - 1, -1, -1):
        c = coords[:, axis]
        border = (c == 0) | (c == shape[axis] - 1)
        on |= border
        inner = ~on
        sel = idx[inner]
        on[inner] = ~(flat_target[sel - stride] & flat_target[sel + stride])
        stride *= shape[axis]
    return coords[on]


def _kdtree_at(flat_t: np.ndarray, shape, query_idx: np.ndarray, spacing) -> np.ndarray:
    """float64 distances from the voxels at flat C-order indices ``query_idx`` (none of them in
    the target) to the nearest True voxel of ``flat_t``; inf when the target is empty."""
    out = np.empty(len(query_idx), np.float64)
    t_idx = np.flatnonzero(flat_t)
    if len(t_idx) == 0:
        out[:] = np.inf
        return out
    if len(query_idx) == 0:
        return out
    from scipy.spatial import cKDTree
    scale = np.asarray(spacing, np.float64)
    surf = _surface_points(flat_t, t_idx, shape)
    query = np.stack(np.unravel_index(query_idx, shape), axis=1)
    tree = cKDTree(surf * scale, balanced_tree=False, compact_nodes=False)
    _, nn = tree.query(query * scale)
    # the distance from the offsets, as the EDT forms it (every term exact here): the tree's
    # own distance may be rounded differently (pow vs sqrt)
    off = (query - surf[nn]) * scale
    sq = off[:, -1] * off[:, -1]
    for axis in range(off.shape[1] - 2, -1, -1):
        sq = off[:, axis] * off[:, axis] + sq
    return np.sqrt(sq)


def nearest_kdtree(target: np.ndarray, at: np.ndarray, spacing) -> np.ndarray:
    """float64 distances from each True voxel of ``at`` (C order) to the nearest True voxel of
    ``target`` (in the units of ``spacing``); inf everywhere when ``target`` is empty."""
    target = np.ascontiguousarray(target, bool)
    at = np.ascontiguousarray(at, bool)
    flat_t = target.reshape(-1)
    at_idx = np.flatnonzero(at)
    out = np.zeros(len(at_idx), np.float64)
    outside = ~flat_t[at_idx]                 # voxels of at that are not in target
    if not outside.any():
        return out
    out[outside] = _kdtree_at(flat_t, target.shape, at_idx[outside], spacing)
    return out


def nearest(target: np.ndarray, at: np.ndarray, spacing, edt_nearest) -> np.ndarray:
    """``edt_nearest(target, at, spacing)`` or the k-d tree, whichever ``choose`` picks."""
    if choose(target, at, spacing) == "kdtree":
        return nearest_kdtree(target, at, spacing)
    return edt_nearest(target, at, spacing)


def keep_whole(box, shape, ops, share: float = 0.5):
    """``box``, or the whole array when ``box`` holds more than ``share`` of it and ``ops`` runs
    on the host: cropping then copies both masks (two volumes of memory and time) and changes
    no distance (every foreground voxel lies inside the box either way)."""
    if getattr(ops, "xp", None) is not np:
        return box
    inside = float(np.prod([b.stop - b.start for b in box]))
    if inside > share * float(np.prod(shape)):
        return tuple(slice(0, n) for n in shape)
    return box


# Tests set these: FORCE_METHOD one of METHODS (else the choice below), SHELL_BUDGET the
# look-ups the offset search may make before handing over (None: nearest_shells' rule), TRACE
# a list each directed percentile appends how it was computed to.
METHODS = ("shells+kdtree", "shells+edt", "kdtree", "edt")
FORCE_METHOD: str | None = None
SHELL_BUDGET: float | None = None
TRACE: list | None = None


def choose_p95(target: np.ndarray, at: np.ndarray, spacing, n_target: int,
               n_at: int) -> str:
    """The method for one directed 95th percentile (a name of METHODS): the offset search
    (nearest_shells) whenever it is exact, with the k-d tree or EDT (``choose``) for what it
    leaves open; otherwise the EDT."""
    base = choose(target, at, spacing, n_target, n_at)
    if not exact_spacing(spacing, target.shape) or target.ndim > 3:
        return base
    return f"shells+{base}"


def directed_p95(target: np.ndarray, at: np.ndarray, spacing, edt_nearest,
                 method: str | None = None) -> float:
    """``np.quantile(d, 0.95)`` of the distances ``d`` from every True voxel of ``at`` to the
    nearest True voxel of ``target`` (both non-empty, same shape), by ``method`` (default
    FORCE_METHOD, else ``choose_p95``): the same number whichever runs."""
    target = np.ascontiguousarray(target, bool)
    at = np.ascontiguousarray(at, bool)
    flat_t = target.reshape(-1)
    return _directed_p95(target, at, np.flatnonzero(at), int(np.count_nonzero(flat_t)),
                         spacing, edt_nearest, method)


def all_voxel_hd95(a: np.ndarray, b: np.ndarray, spacing, edt_nearest,
                   method: str | None = None) -> float:
    """max(directed_p95(b, a), directed_p95(a, b)): the ASOCA construction, each mask's voxel
    list made once."""
    a = np.ascontiguousarray(a, bool)
    b = np.ascontiguousarray(b, bool)
    ia, ib = np.flatnonzero(a), np.flatnonzero(b)
    return max(_directed_p95(b, a, ia, len(ib), spacing, edt_nearest, method),
               _directed_p95(a, b, ib, len(ia), spacing, edt_nearest, method))


def _directed_p95(target, at, at_idx, n_target: int, spacing, edt_nearest,
                  method: str | None) -> float:
    from gpuconv.analysis.nearest_shells import QUANTILE, directed_quantile
    flat_t = target.reshape(-1)
    method = method or FORCE_METHOD or choose_p95(target, at, spacing, n_target, len(at_idx))
    if method not in METHODS:
        raise ValueError(f"unknown distance method '{method}'")
    if method != "edt" and (not exact_spacing(spacing, target.shape) or target.ndim > 3):
        method = "edt"          # only the EDT is exact for this spacing (and any rank)
    how = method
    if method.startswith("shells+"):
        if method == "shells+kdtree":
            def leftover(idx):
                return _kdtree_at(flat_t, target.shape, idx, spacing)
        else:
            def leftover(idx):
                m = np.zeros(flat_t.shape, bool)
                m[idx] = True
                return edt_nearest(target, m.reshape(target.shape), spacing)
        value, ended = directed_quantile(flat_t, target.shape, at_idx, spacing, leftover,
                                         n_target, QUANTILE, budget=SHELL_BUDGET)
        how = "shells" if ended == "shells" else method
    else:
        d = (nearest_kdtree(target, at, spacing) if method == "kdtree"
             else edt_nearest(target, at, spacing))
        value = float(np.quantile(d, QUANTILE))
    if TRACE is not None:
        TRACE.append(how)
    return value


def with_method_choice(ops):
    """``ops`` (an ``agreement.ArrayOps``) whose ``nearest`` picks k-d tree or EDT per call;
    other backends (GPU, the SciPy reference) are returned unchanged."""
    if getattr(ops, "name", None) != "cpu":
        return ops
    edt_nearest = ops.nearest

    def chosen(target, at, spacing):
        return nearest(np.asarray(target), np.asarray(at), spacing, edt_nearest)

    def hd95_all(a, b, spacing):
        return all_voxel_hd95(np.asarray(a), np.asarray(b), spacing, edt_nearest)

    return replace(ops, nearest=chosen, hd95_all=hd95_all)
