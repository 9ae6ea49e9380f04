"""Numba CPU kernels: per-slice connected components with equal-value linking.

Each occupied row is cut into runs of one value, runs are linked to touching runs of equal value
in the row above with a union-find, and every root is reduced to a box and a pixel count.  Empty
rows, and the zero words of occupied rows, are found by reading the slice as 64-bit words (a
calcium map is > 99% zeros), so their pixels are never visited one by one.  Kernels release
the GIL, so several volumes can be labelled at once
from threads.
"""

from __future__ import annotations

import numpy as np

from gpuconv.conversion.malloc_tuning import skip_numba_blas_probe

skip_numba_blas_probe()  # before the first Numba call (see malloc_tuning.py)
from numba import njit  # noqa: E402


@njit(cache=True, nogil=True)
def occupied_rows_words(words):
    """words: (R, W) uint64 view of R rows; True where a row holds any non-zero byte."""
    rows = words.shape[0]
    out = np.zeros(rows, np.bool_)
    for r in range(rows):
        for w in range(words.shape[1]):
            if words[r, w] != 0:
                out[r] = True
                break
    return out


@njit(cache=True, nogil=True)
def occupied_rows_any(rows2d):
    """rows2d: (R, I) of any integer type; True where a row holds any non-zero value."""
    out = np.zeros(rows2d.shape[0], np.bool_)
    for r in range(rows2d.shape[0]):
        for i in range(rows2d.shape[1]):
            if rows2d[r, i] != 0:
                out[r] = True
                break
    return out


@njit(cache=True, nogil=True, inline="always")
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@njit(cache=True, nogil=True, inline="always")
def _union(parent, a, b):
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra < rb:
        parent[rb] = ra
        return ra
    if rb < ra:
        parent[ra] = rb
    return rb


@njit(cache=True, nogil=True)
def _grow(a, n):
    out = np.empty(max(2 * a.shape[0], n), a.dtype)
    out[: a.shape[0]] = a
    return out


@njit(cache=True, nogil=True)
def slice_components(v, occupied, diagonal, words, per_word):
    """Components of every slice of ``v`` (K, J, I); ``occupied`` (K, J) marks non-empty rows.

    Run-based: each row is cut into runs of one non-zero value (inside an occupied row only the
    non-zero ``words`` - the same memory as (K, J, I // per_word) uint64, or an empty array -
    are read pixel by pixel); a run is linked to the runs of equal value in the row above that
    touch it (overlap, or also meet at a corner when ``diagonal``); a union-find over runs then
    reduces every component to its box and pixel count.  Work grows with the number of runs,
    not of pixels, so large dense structures cost little more than sparse ones.
    Returns (k, value, i0, i1, j0, j1, pixels) arrays, one entry per component.
    """
    K, J, I = v.shape
    use_words = words.shape[0] == K
    n_words = words.shape[2]
    reach = 1 if diagonal else 0
    max_runs = J * I   # every pixel its own run: neighbours of different values
    r_start = np.empty(max_runs, np.int32)
    r_stop = np.empty(max_runs, np.int32)    # inclusive
    r_row = np.empty(max_runs, np.int32)
    r_val = np.empty(max_runs, v.dtype)   # v.dtype: int64 vs uint64 would compare as floats
    parent = np.empty(max_runs, np.int32)
    slot = np.empty(max_runs, np.int32)
    cap = 1024
    ok = np.empty(cap, np.int32)
    oval = np.empty(cap, np.int64)
    oi0 = np.empty(cap, np.int32)
    oi1 = np.empty(cap, np.int32)
    oj0 = np.empty(cap, np.int32)
    oj1 = np.empty(cap, np.int32)
    opx = np.empty(cap, np.int64)
    n_out = 0
    for k in range(K):
        n_runs = 0
        prev_first = 0   # runs of the previous occupied row: [prev_first, prev_end)
        prev_end = 0
        prev_row = -2
        for j in range(J):
            if not occupied[k, j]:
                continue
            row_first = n_runs
            # 1. cut the row into runs of equal non-zero value
            w = 0
            while True:
                if use_words:  # next stretch of non-zero words
                    while w < n_words and words[k, j, w] == 0:
                        w += 1
                    if w == n_words:
                        break
                    start = w * per_word
                    while w < n_words and words[k, j, w] != 0:
                        w += 1
                    stop = w * per_word
                else:
                    if w == 1:
                        break
                    start, stop, w = 0, I, 1
                for i in range(start, stop):
                    x = v[k, j, i]
                    if x == 0:
                        continue
                    if n_runs > row_first and r_stop[n_runs - 1] == i - 1 and \
                            r_val[n_runs - 1] == x:
                        r_stop[n_runs - 1] = i
                    else:
                        r_start[n_runs] = i
                        r_stop[n_runs] = i
                        r_row[n_runs] = j
                        r_val[n_runs] = x
                        parent[n_runs] = n_runs
                        n_runs += 1
            # 2. link to touching runs of equal value in the row above (runs sorted by start)
            if prev_row == j - 1:
                q = prev_first
                for r in range(row_first, n_runs):
                    lo = r_start[r] - reach
                    hi = r_stop[r] + reach
                    while q < prev_end and r_stop[q] < lo:
                        q += 1
                    t = q
                    while t < prev_end and r_start[t] <= hi:
                        if r_val[t] == r_val[r]:
                            _union(parent, r, t)
                        t += 1
            prev_first, prev_end, prev_row = row_first, n_runs, j
        if n_runs == 0:
            continue
        # 3. reduce every root to a box and a pixel count (runs come in increasing rows)
        for r in range(n_runs):
            slot[r] = -1
        for r in range(n_runs):
            root = _find(parent, r)
            s = slot[root]
            if s < 0:
                s = n_out
                slot[root] = s
                n_out += 1
                if n_out > ok.shape[0]:
                    ok = _grow(ok, n_out)
                    oval = _grow(oval, n_out)
                    oi0 = _grow(oi0, n_out)
                    oi1 = _grow(oi1, n_out)
                    oj0 = _grow(oj0, n_out)
                    oj1 = _grow(oj1, n_out)
                    opx = _grow(opx, n_out)
                ok[s] = k
                oval[s] = np.int64(r_val[r])
                oi0[s] = r_start[r]
                oi1[s] = r_stop[r]
                oj0[s] = r_row[r]
                oj1[s] = r_row[r]
                opx[s] = 0
            if r_start[r] < oi0[s]:
                oi0[s] = r_start[r]
            if r_stop[r] > oi1[s]:
                oi1[s] = r_stop[r]
            if r_row[r] > oj1[s]:
                oj1[s] = r_row[r]
            opx[s] += r_stop[r] - r_start[r] + 1
    return (ok[:n_out], oval[:n_out], oi0[:n_out], oi1[:n_out], oj0[:n_out], oj1[:n_out],
            opx[:n_out])


@njit(cache=True, nogil=True)
def seen_values_numba(flat, n_values):
    """bool (n_values,): which values a contiguous unsigned array holds (the fallback of
    ``native.seen_values`` where the C kernels are not built)."""
    seen = np.zeros(n_values, np.bool_)
    for x in flat:
        seen[x] = True
    return seen
