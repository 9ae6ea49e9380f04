"""Numba CPU kernels: per-slice connected components with equal-value linking.

One raster pass per occupied row with a union-find over provisional labels, then one pass over
the foreground pixels of the slice to reduce each root to a box and a pixel count.  Empty rows are
found first by reading the slice as 64-bit words (a calcium map is > 99% zeros), so their pixels
are never visited one by one.  Kernels release the GIL, so several volumes can be labelled at once
from threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
def K_of(v):
    return v.shape[0]


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

    ``words`` is the same memory as (K, J, I // per_word) uint64 words (or an empty array):
    inside an occupied row only the non-zero words are visited pixel by pixel.
    Returns (k, value, i0, i1, j0, j1, pixels) arrays, one entry per component.
    """
    use_words = words.shape[0] == K_of(v)
    n_words = words.shape[2]
    K, J, I = v.shape
    lab = np.empty((J, I), np.int32)
    parent = np.empty(J * I, np.int32)
    pix = np.empty(J * I, np.int32)       # flat j*I+i of this slice's foreground pixels
    slot = np.empty(J * I, np.int32)      # root -> output row, -1 when not yet seen
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
        n_lab = 0
        n_pix = 0
        for j in range(J):
            if not occupied[k, j]:
                continue
            up = j > 0 and occupied[k, j - 1]
            w = 0
            while True:
                # next run of pixels to visit: a run of non-zero words, or the whole row
                if use_words:
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
                    cur = -1
                    if i > 0 and v[k, j, i - 1] == x:
                        cur = lab[j, i - 1]
                    if up:
                        if v[k, j - 1, i] == x:
                            cur = lab[j - 1, i] if cur < 0 else _union(parent, cur, lab[j - 1, i])
                        if diagonal:
                            if i > 0 and v[k, j - 1, i - 1] == x:
                                cur = (lab[j - 1, i - 1] if cur < 0
                                       else _union(parent, cur, lab[j - 1, i - 1]))
                            if i + 1 < I and v[k, j - 1, i + 1] == x:
                                cur = (lab[j - 1, i + 1] if cur < 0
                                       else _union(parent, cur, lab[j - 1, i + 1]))
                    if cur < 0:
                        cur = n_lab
                        parent[cur] = cur
                        n_lab += 1
                    lab[j, i] = cur
                    pix[n_pix] = j * I + i
                    n_pix += 1
        if n_lab == 0:
            continue
        for t in range(n_lab):
            slot[t] = -1
        for p in range(n_pix):
            j = pix[p] // I
            i = pix[p] - j * I
            r = _find(parent, lab[j, i])
            s = slot[r]
            if s < 0:
                s = n_out
                slot[r] = s
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
                oval[s] = v[k, j, i]
                oi0[s] = i
                oi1[s] = i
                oj0[s] = j
                oj1[s] = j
                opx[s] = 0
            if i < oi0[s]:
                oi0[s] = i
            if i > oi1[s]:
                oi1[s] = i
            if j > oj1[s]:  # rows are visited in increasing j, so j0 is the first one seen
                oj1[s] = j
            opx[s] += 1
    return (ok[:n_out], oval[:n_out], oi0[:n_out], oi1[:n_out], oj0[:n_out], oj1[:n_out],
            opx[:n_out])
