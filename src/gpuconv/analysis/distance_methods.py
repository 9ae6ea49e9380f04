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
the box (``KDTREE_MAX_SHARE``), else "edt".  ``with_method_choice(ops)`` wraps an
``agreement.ArrayOps`` (CPU only) so every distance ``compare_masks`` asks for goes through
that choice.
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


def nearest_kdtree(target: np.ndarray, at: np.ndarray, spacing) -> np.ndarray:
    """float64 distances from each True voxel of ``at`` (C order) to the nearest True voxel of
    ``target`` (in the units of ``spacing``); inf everywhere when ``target`` is empty."""
    target = np.ascontiguousarray(target, bool)
    at = np.ascontiguousarray(at, bool)
    shape = target.shape
    flat_t = target.reshape(-1)
    at_idx = np.flatnonzero(at)
    out = np.zeros(len(at_idx), np.float64)
    outside = ~flat_t[at_idx]                 # voxels of at that are not in target
    if not outside.any():
        return out
    t_idx = np.flatnonzero(flat_t)
    if len(t_idx) == 0:
        out[:] = np.inf
        return out
    from scipy.spatial import cKDTree
    scale = np.asarray(spacing, np.float64)
    surf = _surface_points(flat_t, t_idx, shape)
    query = np.stack(np.unravel_index(at_idx[outside], shape), axis=1)
    tree = cKDTree(surf * scale, balanced_tree=False, compact_nodes=False)
    _, nn = tree.query(query * scale)
    # the distance from the offsets, as the EDT forms it (every term exact here): the tree's
    # own distance may be rounded differently (pow vs sqrt)
    off = (query - surf[nn]) * scale
    sq = off[:, -1] * off[:, -1]
    for axis in range(off.shape[1] - 2, -1, -1):
        sq = off[:, axis] * off[:, axis] + sq
    out[outside] = np.sqrt(sq)
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


def with_method_choice(ops):
    """``ops`` (an ``agreement.ArrayOps``) whose ``nearest`` picks k-d tree or EDT per call;
    other backends (GPU, the SciPy reference) are returned unchanged."""
    if getattr(ops, "name", None) != "cpu":
        return ops
    edt_nearest = ops.nearest

    def chosen(target, at, spacing):
        return nearest(np.asarray(target), np.asarray(at), spacing, edt_nearest)

    return replace(ops, nearest=chosen)
