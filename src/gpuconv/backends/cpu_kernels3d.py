"""Numba CPU kernel: 3D connected components with equal-value linking, reduced to per-instance
voxel counts, bounds and index sums (the fields of ``Instances3D``).

Why not a label volume: a 512x512x300 map is 79 M voxels and > 99% background, so a dense int32
label volume (300 MB) would dwarf the data.  The scan keeps only two label planes (the current
slice and the previous one, 2 MB at 512x512), a union-find ``parent`` array over provisional
labels, and per-provisional-label statistics.  Statistics are accumulated while scanning, then
merged into the root of each set in one pass over the labels (never over the voxels again).
Empty rows are skipped via the ``occupied`` mask (read 64 bits at a time, see cpu.py).

Neighbours visited for a voxel (k, j, i) - only those already scanned (raster order k, j, i),
listed by ``neighbour_offsets``:
- same slice: (j, i-1), (j-1, i); plus the corners (j-1, i-1), (j-1, i+1) for 18 and 26;
- previous slice k-1: (j, i); plus (j, i+-1), (j+-1, i) for 18 and 26; plus the four corners
  (j+-1, i+-1) for 26.
Cold Numba compile of this kernel is ~10 s per input dtype (cached on disk afterwards).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gpuconv.backends.base import INSTANCE_COLUMNS
from gpuconv.backends.cpu_kernels import _find, _grow, _union

# columns of the statistics array (one row per provisional label, later per instance): the one
# order of base.INSTANCE_COLUMNS, shared with the GPU's table
N_STATS = len(INSTANCE_COLUMNS)
VAL, VOX, I0, I1, J0, J1, K0, K1, SI, SJ, SK = range(N_STATS)


@njit(cache=True, nogil=True)
def _link(parent, cur, other):
    """``other`` when nothing is linked yet, else the union of both sets."""
    if cur < 0:
        return other
    return _union(parent, cur, other)


@njit(cache=True, nogil=True)
def _grow2(a, n):
    out = np.empty((max(2 * a.shape[0], n), a.shape[1]), a.dtype)
    out[: a.shape[0]] = a
    return out


def neighbour_offsets(connectivity: int):
    """(dj, di) of the already-scanned neighbours: in the same slice, and in slice k-1.

    One table per connectivity keeps the neighbour sets in one auditable place (the GPU kernel
    must use the same sets); an unrolled variant measured no faster on sparse calcium maps.
    """
    if connectivity not in (6, 18, 26):
        raise ValueError("3D connectivity must be 6, 18 or 26")
    same = [(0, -1), (-1, 0)]
    prev = [(0, 0)]
    if connectivity >= 18:
        same += [(-1, -1), (-1, 1)]
        prev += [(0, -1), (0, 1), (-1, 0), (1, 0)]
    if connectivity == 26:
        prev += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    return np.array(same, np.int64), np.array(prev, np.int64)


@njit(cache=True, nogil=True)
def instances_3d(v, occupied, same, prev):
    """Components of ``v`` (K, J, I); ``occupied`` (K, J) marks non-empty rows; ``same`` and
    ``prev`` are the (dj, di) neighbour tables of ``neighbour_offsets``.

    Returns an (n, N_STATS) int64 array, one row per instance, columns ``INSTANCE_COLUMNS``
    (the value as int64, voxels, bounds I0..K1, index sums SI, SJ, SK).
    """
    K, J, I = v.shape
    lab_cur = np.empty((J, I), np.int32)
    lab_prev = np.empty((J, I), np.int32)
    cap = 1024
    parent = np.empty(cap, np.int32)
    st = np.empty((cap, N_STATS), np.int64)
    n_lab = 0
    for k in range(K):
        lab_cur, lab_prev = lab_prev, lab_cur
        for j in range(J):
            if not occupied[k, j]:
                continue
            for i in range(I):
                x = v[k, j, i]
                if x == 0:
                    continue
                cur = -1
                # a neighbour with the same value was labelled already (it lies in an
                # occupied row scanned before), so its plane entry is valid
                for n in range(same.shape[0]):
                    jj = j + same[n, 0]
                    ii = i + same[n, 1]
                    if jj >= 0 and 0 <= ii < I and v[k, jj, ii] == x:
                        cur = _link(parent, cur, lab_cur[jj, ii])
                if k > 0:
                    for n in range(prev.shape[0]):
                        jj = j + prev[n, 0]
                        ii = i + prev[n, 1]
                        if 0 <= jj < J and 0 <= ii < I and occupied[k - 1, jj] and \
                                v[k - 1, jj, ii] == x:
                            cur = _link(parent, cur, lab_prev[jj, ii])
                if cur < 0:
                    cur = n_lab
                    n_lab += 1
                    if n_lab > parent.shape[0]:
                        parent = _grow(parent, n_lab)
                        st = _grow2(st, n_lab)
                    parent[cur] = cur
                    st[cur, VOX] = 0
                    st[cur, I0] = i
                    st[cur, I1] = i
                    st[cur, J0] = j
                    st[cur, J1] = j
                    st[cur, K0] = k
                    st[cur, K1] = k
                    st[cur, SI] = 0
                    st[cur, SJ] = 0
                    st[cur, SK] = 0
                    st[cur, VAL] = x
                lab_cur[j, i] = cur
                st[cur, VOX] += 1
                if i < st[cur, I0]:
                    st[cur, I0] = i
                if i > st[cur, I1]:
                    st[cur, I1] = i
                if j < st[cur, J0]:
                    st[cur, J0] = j
                if j > st[cur, J1]:
                    st[cur, J1] = j
                if k > st[cur, K1]:  # slices are visited in increasing k: K0 is the first one
                    st[cur, K1] = k
                st[cur, SI] += i
                st[cur, SJ] += j
                st[cur, SK] += k
    # merge every provisional label's statistics into its set's root
    slot = np.full(n_lab, -1, np.int32)
    out = np.empty((n_lab, N_STATS), np.int64)
    n_out = 0
    for t in range(n_lab):
        r = _find(parent, t)
        s = slot[r]
        if s < 0:
            s = n_out
            slot[r] = s
            n_out += 1
            for c in range(N_STATS):
                out[s, c] = st[t, c]
            continue
        out[s, VOX] += st[t, VOX]
        out[s, SI] += st[t, SI]
        out[s, SJ] += st[t, SJ]
        out[s, SK] += st[t, SK]
        for c in (I0, J0, K0):
            if st[t, c] < out[s, c]:
                out[s, c] = st[t, c]
        for c in (I1, J1, K1):
            if st[t, c] > out[s, c]:
                out[s, c] = st[t, c]
    return out[:n_out]
