"""Numba CUDA device code for per-slice (2D) and 3D connected components: the kernels only.

Why our own kernels rather than cupyx/cuCIM ``label``: those label one binary mask at a time
(one launch per label value) and link across slices unless given a 2D structure; here one set of
launches labels every occupied slice of every value at once, linking only equal non-zero values.

The algorithm is union-find with atomic hooking (Playne & Hawick 2018, after Oliveira & Lotufo):
every foreground pixel starts as its own root; each pixel unions itself with the equal-valued
neighbours that precede it (left, up, and the two upper corners for 8-connectivity) by
``atomic.min`` on the parent array, so a component's root is always its smallest index.  A
compression pass points every pixel at its root, roots are numbered by a prefix sum, and one more
pass reduces the pixels to boxes, values and counts with atomics.

Calcium volumes are > 99% background, so the first kernel flags rows (k, j) holding any non-zero
value, and everything after works on a compact (rows, I) copy of those rows only: memory and
work scale with the occupied rows, not with the volume.

The host side that launches them is ``gpu_driver.py``; the same kernel source runs under the CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``, the tests) and on a device.
"""

from __future__ import annotations

from gpuconv.backends.base import INSTANCE_COLUMNS, SLICE_COLUMNS
from gpuconv.backends.numba_compat import restore_numpy_aliases

restore_numpy_aliases()  # before numba.cuda compiles anything

from numba import cuda, int32, int64  # noqa: E402

# ----------------------------------------------------------------------------- device functions


@cuda.jit(device=True)
def _find(parent, x):
    """Root of ``x``; parents only ever decrease, so reading while others hook is safe."""
    p = parent[x]
    while p != x:
        x = p
        p = parent[x]
    return x


@cuda.jit(device=True)
def _union(parent, a, b):
    """Hook the larger root under the smaller one; retry when another thread got there first."""
    done = False
    while not done:
        a = _find(parent, a)
        b = _find(parent, b)
        if a < b:
            old = cuda.atomic.min(parent, b, int32(a))
            done = old == b
            b = old
        elif b < a:
            old = cuda.atomic.min(parent, a, int32(b))
            done = old == a
            a = old
        else:
            done = True


@cuda.jit(device=True)
def _cell(vr, t, n_i):
    """Flat index t of the compact (rows, I) array -> (row r, column i, value)."""
    r = t // n_i
    i = t - r * n_i
    return r, i, vr[r, i]


@cuda.jit(device=True)
def _member(vr, rows, parent, slot, t, n_i):
    """Flat index t -> (value, column i, volume row, component s, is the root); value 0 is
    background (then nothing else is read).  ``slot`` is the inclusive prefix sum of the root
    flags, so component s = slot[root] - 1."""
    r, i, x = _cell(vr, t, n_i)
    if x == 0:
        return x, i, 0, -1, False
    root = parent[t]
    return x, i, rows[r], slot[root] - 1, root == t


@cuda.jit(device=True)
def _widen(table, lo, s, v):
    """Widen the inclusive bounds table[lo, s] .. table[lo + 1, s] of component s to hold v."""
    cuda.atomic.min(table, (lo, s), int64(v))
    cuda.atomic.max(table, (lo + 1, s), int64(v))


@cuda.jit(device=True)
def _union_left(vr, parent, t, n_i):
    """Cell t -> (row r, column i, value), after uniting a foreground cell with its equal left
    neighbour (i - 1, same row): the first predecessor of every connectivity."""
    r, i, x = _cell(vr, t, n_i)
    if x != 0 and i > 0 and vr[r, i - 1] == x:
        _union(parent, t, t - 1)
    return r, i, x


# ----------------------------------------------------------------------------- kernels


@cuda.jit(cache=True)
def flag_rows(words, words_per_row, flags):
    """flags[r] = 1 where row r of the volume holds a non-zero value.

    ``words`` is the flat volume viewed as the widest unsigned integer that divides a row's bytes
    (uint64 for 512-pixel uint8 rows): one coalesced 8-byte load per thread, not eight 1-byte
    ones, is what makes this full pass over the volume run near memory bandwidth.
    """
    for t in range(cuda.grid(1), words.shape[0], cuda.gridsize(1)):
        if words[t] != 0:
            flags[t // words_per_row] = 1


@cuda.jit(cache=True)
def index_rows(flags, prefix, rows, rowmap):
    """From the row flags and their inclusive prefix sum: rows[r] = the r-th occupied row and
    rowmap[row] = r, or -1 for an empty row (replaces nonzero + a scatter, with no extra sync)."""
    for t in range(cuda.grid(1), flags.shape[0], cuda.gridsize(1)):
        if flags[t] != 0:
            r = prefix[t] - 1
            rows[r] = t
            rowmap[t] = r
        else:
            rowmap[t] = -1


@cuda.jit(cache=True)
def gather_rows(vflat, rows, out, parent):
    """out[r, i] = row ``rows[r]`` of the flat volume (the compact copy of the occupied rows), and
    every pixel starts as its own root: parent[t] = t."""
    width = out.shape[1]
    for t in range(cuda.grid(1), out.shape[0] * width, cuda.gridsize(1)):
        r = t // width
        i = t - r * width
        out[r, i] = vflat[rows[r] * width + i]
        parent[t] = t


@cuda.jit(cache=True)
def init_parent(parent):
    for t in range(cuda.grid(1), parent.shape[0], cuda.gridsize(1)):
        parent[t] = t


@cuda.jit(cache=True)
def union_slices(vr, rows, rowmap, n_j, diagonal, parent):
    """Union each pixel with its equal-valued predecessors in the same slice.

    vr (R, I) compact rows; rows[r] = k*J + j of compact row r; rowmap[k*J + j] = r or -1.
    """
    n_i = vr.shape[1]
    for t in range(cuda.grid(1), vr.shape[0] * n_i, cuda.gridsize(1)):
        r, i, x = _union_left(vr, parent, t, n_i)
        if x == 0:
            continue
        row = rows[r]
        if row % n_j == 0:  # first row of its slice: nothing above
            continue
        ru = rowmap[row - 1]
        if ru < 0:
            continue
        q = ru * n_i + i
        if vr[ru, i] == x:
            _union(parent, t, q)
        if diagonal:
            if i > 0 and vr[ru, i - 1] == x:
                _union(parent, t, q - 1)
            if i + 1 < n_i and vr[ru, i + 1] == x:
                _union(parent, t, q + 1)


@cuda.jit(cache=True)
def resolve_roots(vr, parent, is_root):
    """Point every foreground pixel straight at its root; is_root[t] = 1 for the roots, else 0.

    Safe in one pass once all unions are done: a parent chain only ever gets shorter, so a thread
    that walks through a pixel another thread is compressing sees a valid ancestor either way.
    """
    n_i = vr.shape[1]
    for t in range(cuda.grid(1), vr.shape[0] * n_i, cuda.gridsize(1)):
        r = t // n_i
        root = -1
        if vr[r, t - r * n_i] != 0:
            root = _find(parent, t)
            parent[t] = root
        is_root[t] = 1 if root == t else 0


_MIN_IDENTITY = 2**62


@cuda.jit(cache=True)
def init_table(table, first_bound, last_bound):
    """Identities before the atomics of a reduction: rows first_bound..last_bound alternate
    (min, max) -> (2**62, -1); every other row 0 (counts and sums; the rest the roots write)."""
    n = table.shape[1]
    for t in range(cuda.grid(1), table.shape[0] * n, cuda.gridsize(1)):
        c = t // n
        v = int64(0)
        if first_bound <= c <= last_bound:
            v = int64(_MIN_IDENTITY) if (c - first_bound) % 2 == 0 else int64(-1)
        table[c, t - c * n] = v


# rows of the component table the 2D reduction fills (one array, so one copy back to the host):
# base.SLICE_COLUMNS, which the kernel below writes by position
SLICE_ROWS = SLICE_COLUMNS


@cuda.jit(cache=True)
def reduce_slices(vr, rows, n_j, k_offset, parent, slot, table):
    """Per component s, table[:, s] = (slice, value, i0, i1, j0, j1, pixel count), bounds
    inclusive; ``table`` comes from ``init_table(table, 2, 5)``.

    ``slot`` is the inclusive prefix sum of the root flags, so component s = slot[root] - 1.
    """
    n_i = vr.shape[1]
    for t in range(cuda.grid(1), vr.shape[0] * n_i, cuda.gridsize(1)):
        x, i, row, s, is_root = _member(vr, rows, parent, slot, t, n_i)
        if x == 0:
            continue
        j = row % n_j
        if is_root:
            table[0, s] = row // n_j + k_offset
            table[1, s] = x
        _widen(table, 2, s, i)
        _widen(table, 4, s, j)
        cuda.atomic.add(table, (6, s), int64(1))


@cuda.jit(cache=True)
def union_volume(vr, rows, rowmap, n_j, connectivity, parent):
    """3D: union each voxel with its equal-valued predecessors among the 6/18/26 neighbours.

    Predecessors in raster order (k, j, i): (k, j, i-1), row j-1 of slice k, all of slice k-1;
    an offset is a neighbour when its count of non-zero steps is 1 (6), <= 2 (18) or any (26).
    """
    n_i = vr.shape[1]
    n_k = rowmap.shape[0] // n_j
    for t in range(cuda.grid(1), vr.shape[0] * n_i, cuda.gridsize(1)):
        r, i, x = _union_left(vr, parent, t, n_i)
        if x == 0:
            continue
        row = rows[r]
        k = row // n_j
        j = row - k * n_j
        for dk in range(-1, 1):
            kk = k + dk
            if kk < 0 or kk >= n_k:
                continue
            for dj in range(-1, 2):
                if dk == 0 and dj >= 0:
                    continue  # same row is the i-1 case above; later rows come later
                jj = j + dj
                if jj < 0 or jj >= n_j:
                    continue
                ru = rowmap[kk * n_j + jj]
                if ru < 0:
                    continue
                for di in range(-1, 2):
                    steps = (dk != 0) + (dj != 0) + (di != 0)
                    if (connectivity == 6 and steps > 1) or (connectivity == 18 and steps > 2):
                        continue
                    ii = i + di
                    if ii < 0 or ii >= n_i:
                        continue
                    if vr[ru, ii] == x:
                        _union(parent, t, ru * n_i + ii)


# rows of the 3D instance table (value, voxel count, inclusive bounds, index sums for the
# centroids): base.INSTANCE_COLUMNS, which the kernel below writes by position
VOLUME_ROWS = INSTANCE_COLUMNS


@cuda.jit(cache=True)
def reduce_volume(vr, rows, n_j, parent, slot, table):
    """Per 3D component s, table[:, s] = the ``VOLUME_ROWS``; ``table`` comes from
    ``init_table(table, 2, 7)``."""
    n_i = vr.shape[1]
    for t in range(cuda.grid(1), vr.shape[0] * n_i, cuda.gridsize(1)):
        x, i, row, s, is_root = _member(vr, rows, parent, slot, t, n_i)
        if x == 0:
            continue
        k = row // n_j
        j = row - k * n_j
        if is_root:
            table[0, s] = x
        cuda.atomic.add(table, (1, s), int64(1))
        _widen(table, 2, s, i)
        _widen(table, 4, s, j)
        _widen(table, 6, s, k)
        cuda.atomic.add(table, (8, s), int64(i))
        cuda.atomic.add(table, (9, s), int64(j))
        cuda.atomic.add(table, (10, s), int64(k))
