"""Numba kernels behind ``boxes.py``: canonical order and YOLO text without per-box temporaries.

Canonical order is (k, class, j0, i0, j1, i1, pixels).  When (class, j0, i0, j1, i1, pixels)
packs into one 64-bit key (512x512 slices with up to 2^7 classes take 62 bits), the kernel
buckets the rows by slice (a counting sort: k < K) and sorts each slice's keys, which are
small arrays that stay in cache; the row is then decoded back from its key.  Two rows with
equal keys are identical rows, so the result equals the stable 7-key ``np.lexsort``
bit for bit (tests/test_perf_contracts.py checks it on adversarial tables).  Measured on
2.4 M boxes (two 512x512x128 maps at 40 % foreground): the lexsort and its gathers took most
of ``to_box_table``; this takes a few tens of ms.

``yolo_text_into`` writes the label text of every box straight into one byte buffer from the
formatted-value tables of ``boxes._fixed_width_lut`` (8 bytes per coordinate), so a box costs
its ~45 bytes of text and nothing else.
"""

from __future__ import annotations

import numpy as np

from gpuconv.conversion.malloc_tuning import skip_numba_blas_probe

skip_numba_blas_probe()  # before the first Numba call (see malloc_tuning.py)
from numba import njit  # noqa: E402


from gpuconv.results.box_kernels_common import bit_length  # noqa: F401,E402 - re-exported


@njit(cache=True, nogil=True)
def packed_canonical(k, cls, i0, i1, j0, j1, px, n_slices, bj, bi, bp):
    """Rows sorted by (k, cls, j0, i0, j1, i1, px) with the last six packed in a uint64 key of
    ``bits(cls) + 2 bj + 2 bi + bp`` <= 64 bits.  Returns the seven sorted columns."""
    n = k.shape[0]
    counts = np.zeros(n_slices + 1, np.int64)
    for r in range(n):
        counts[k[r] + 1] += 1
    for s in range(n_slices):
        counts[s + 1] += counts[s]
    fill = counts[:n_slices].copy()
    keys = np.empty(n, np.uint64)
    sj1 = bi + bp
    si0 = bj + sj1
    sj0 = bi + si0
    sc = bj + sj0
    for r in range(n):
        key = (np.uint64(cls[r]) << np.uint64(sc)) | (np.uint64(j0[r]) << np.uint64(sj0)) \
            | (np.uint64(i0[r]) << np.uint64(si0)) | (np.uint64(j1[r]) << np.uint64(sj1)) \
            | (np.uint64(i1[r]) << np.uint64(bp)) | np.uint64(px[r])
        p = fill[k[r]]
        keys[p] = key
        fill[k[r]] = p + 1
    ok = np.empty(n, np.int32)
    ocls = np.empty(n, np.int32)
    oi0 = np.empty(n, np.int32)
    oi1 = np.empty(n, np.int32)
    oj0 = np.empty(n, np.int32)
    oj1 = np.empty(n, np.int32)
    opx = np.empty(n, np.int64)
    mj = np.uint64((1 << bj) - 1)
    mi = np.uint64((1 << bi) - 1)
    mp = np.uint64((1 << bp) - 1)
    for s in range(n_slices):
        a = counts[s]
        b = counts[s + 1]
        if b - a > 1:
            keys[a:b].sort()
        for r in range(a, b):
            key = keys[r]
            ok[r] = s
            ocls[r] = np.int32(key >> np.uint64(sc))
            oj0[r] = np.int32((key >> np.uint64(sj0)) & mj)
            oi0[r] = np.int32((key >> np.uint64(si0)) & mi)
            oj1[r] = np.int32((key >> np.uint64(sj1)) & mj)
            oi1[r] = np.int32((key >> np.uint64(bp)) & mi)
            opx[r] = np.int64(key & mp)
    return ok, ocls, oi0, oi1, oj0, oj1, opx


@njit(cache=True, nogil=True)
def yolo_text_into(cls, i0, i1, j0, j1, lut_x, lut_y, lut_w, lut_h):
    """(text bytes, line starts): ``class cx cy w h\\n`` per box; ``starts`` has n + 1 entries,
    so box r's line is text[starts[r]:starts[r + 1]]."""
    n = cls.shape[0]
    starts = np.empty(n + 1, np.int64)
    total = 0
    for r in range(n):
        starts[r] = total
        c = cls[r]
        d = 1
        while c >= 10:
            c //= 10
            d += 1
        total += d + 37
    starts[n] = total
    buf = np.empty(total, np.uint8)
    for r in range(n):
        p = starts[r]
        end = starts[r + 1] - 37
        c = cls[r]
        q = end - 1
        while q >= p:                     # class id, last digit first
            buf[q] = 48 + c % 10
            c //= 10
            q -= 1
        p = end
        x = i0[r] + i1[r] + 1
        y = j0[r] + j1[r] + 1
        w = i1[r] - i0[r] + 1
        h = j1[r] - j0[r] + 1
        buf[p] = 32
        for t in range(8):
            buf[p + 1 + t] = lut_x[x, t]
        buf[p + 9] = 32
        for t in range(8):
            buf[p + 10 + t] = lut_y[y, t]
        buf[p + 18] = 32
        for t in range(8):
            buf[p + 19 + t] = lut_w[w, t]
        buf[p + 27] = 32
        for t in range(8):
            buf[p + 28 + t] = lut_h[h, t]
        buf[p + 36] = 10
    return buf, starts


@njit(cache=True, nogil=True)
def class_lut_index(value, vmin, span):
    """(present mask over [vmin, vmin + span), value - vmin as int64)."""
    present = np.zeros(span, np.bool_)
    idx = np.empty(value.shape[0], np.int64)
    for r in range(value.shape[0]):
        v = value[r] - vmin
        idx[r] = v
        present[v] = True
    return present, idx
