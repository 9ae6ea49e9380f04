"""Exact Euclidean distance transform on anisotropic 3D grids (Numba, CPU, float64).

Why not just SciPy: ``scipy.ndimage.distance_transform_edt`` builds the full feature
transform (three int arrays) and measured 0.7 us per voxel here, ~40 s for one 512x512x224
volume; agreement needs two to four of them per class.  This is the separable
Felzenszwalb-Huttenlocher algorithm (exact squared distances, one lower envelope of parabolas
per line and axis) over lines in parallel; the tests check it against SciPy's EDT.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_INF = np.inf


@njit(cache=True, nogil=True)
def _envelope_line(f, w, out, v, z):
    """out[p] = min_q ((p - q) w)^2 + f[q] over finite f[q]; all-inf input stays inf."""
    n = f.shape[0]
    k = -1
    for q in range(n):
        fq = f[q]
        if fq == _INF:
            continue
        xq = q * w
        if k < 0:
            k = 0
            v[0] = q
            z[0] = -_INF
            z[1] = _INF
            continue
        while True:  # z[0] = -inf ends the loop at k = 0 at the latest
            xv = v[k] * w
            s = ((fq + xq * xq) - (f[v[k]] + xv * xv)) / (2.0 * (xq - xv))
            if s <= z[k]:
                k -= 1
            else:
                break
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = _INF
    if k < 0:
        for p in range(n):
            out[p] = _INF
        return
    j = 0
    for p in range(n):
        xp = p * w
        while z[j + 1] < xp:
            j += 1
        dx = (p - v[j]) * w  # integer difference first: no cancellation of large positions
        out[p] = dx * dx + f[v[j]]


@njit(cache=True, nogil=True, parallel=True)
def _last_axis(target, w, out):
    """Squared distance along axis 2 to the nearest target voxel of the same line."""
    n_i, n_j, n_k = target.shape
    for ij in prange(n_i * n_j):
        i = ij // n_j
        j = ij % n_j
        last = -1
        for k in range(n_k):
            if target[i, j, k]:
                last = k
            if last < 0:
                out[i, j, k] = _INF
            else:
                d = (k - last) * w
                out[i, j, k] = d * d
        last = -1
        for k in range(n_k - 1, -1, -1):
            if target[i, j, k]:
                last = k
            if last >= 0:
                d = (last - k) * w
                if d * d < out[i, j, k]:
                    out[i, j, k] = d * d


_BLOCK = 16  # lines gathered together: reads of 16 neighbours along axis 2 share cache lines


@njit(cache=True, nogil=True, parallel=True)
def _middle_axis(sq, w):
    """In place: lower envelope along axis 1 of ``sq`` (a view; axis 0 is made axis 1 by
    passing a transposed view).  Lines are gathered in blocks of _BLOCK along axis 2."""
    n_a, n_b, n_c = sq.shape
    n_blocks = (n_c + _BLOCK - 1) // _BLOCK
    for ab in prange(n_a * n_blocks):
        a = ab // n_blocks
        c0 = (ab % n_blocks) * _BLOCK
        width = min(_BLOCK, n_c - c0)
        block = np.empty((n_b, width))
        for b in range(n_b):
            for cc in range(width):
                block[b, cc] = sq[a, b, c0 + cc]
        f = np.empty(n_b)
        out = np.empty(n_b)
        v = np.empty(n_b, np.int64)
        z = np.empty(n_b + 1)
        for cc in range(width):
            for b in range(n_b):
                f[b] = block[b, cc]
            _envelope_line(f, w, out, v, z)
            for b in range(n_b):
                block[b, cc] = out[b]
        for b in range(n_b):
            for cc in range(width):
                sq[a, b, c0 + cc] = block[b, cc]


def squared_distance_to(target: np.ndarray, spacing) -> np.ndarray:
    """Squared distance (mm^2) from every voxel to the nearest True voxel of ``target``
    (inf everywhere when ``target`` is empty).  ``spacing``: voxel size per axis in mm."""
    target = np.ascontiguousarray(target, dtype=bool)
    if target.ndim != 3:
        raise ValueError("distance transform needs a 3D mask")
    s0, s1, s2 = (float(s) for s in spacing)
    sq = np.empty(target.shape, np.float64)
    _last_axis(target, s2, sq)
    _middle_axis(sq, s1)
    _middle_axis(sq.transpose(1, 0, 2), s0)
    return sq


def distance_to(target: np.ndarray, spacing) -> np.ndarray:
    """Like ``scipy.ndimage.distance_transform_edt(~target, sampling=spacing)``."""
    return np.sqrt(squared_distance_to(target, spacing))
