"""Numba CUDA kernels and the launch driver for per-slice (2D) connected components.

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

The driver functions take a ``Runner`` that supplies the array module and the launch settings.
The same driver runs with NumPy arrays under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, the
tests) and with CuPy arrays on a device (``gpu.py``), so the simulator tests exercise the real
launch logic.  Nothing here imports CuPy.
"""

from __future__ import annotations

import math

import numpy as np

from .numba_compat import restore_numpy_aliases

restore_numpy_aliases()  # before numba.cuda compiles anything

from numba import cuda, int32, int64  # noqa: E402

from .base import Instances3D, SliceComponents  # noqa: E402

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


# ----------------------------------------------------------------------------- kernels


@cuda.jit(cache=True)
def flag_rows(vflat, width, flags):
    """flags[r] = 1 where row r (``width`` values of the flat volume) holds a non-zero value."""
    for t in range(cuda.grid(1), vflat.shape[0], cuda.gridsize(1)):
        if vflat[t] != 0:
            flags[t // width] = 1


@cuda.jit(cache=True)
def gather_rows(vflat, rows, out):
    """out[r, i] = row ``rows[r]`` of the flat volume: the compact copy of the occupied rows."""
    width = out.shape[1]
    for t in range(cuda.grid(1), out.shape[0] * width, cuda.gridsize(1)):
        r = t // width
        i = t - r * width
        out[r, i] = vflat[rows[r] * width + i]


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
        r = t // n_i
        i = t - r * n_i
        x = vr[r, i]
        if x == 0:
            continue
        if i > 0 and vr[r, i - 1] == x:
            _union(parent, t, t - 1)
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
def compress(vr, parent):
    """Point every foreground pixel straight at its root."""
    n_i = vr.shape[1]
    for t in range(cuda.grid(1), vr.shape[0] * n_i, cuda.gridsize(1)):
        r = t // n_i
        if vr[r, t - r * n_i] != 0:
            parent[t] = _find(parent, t)


@cuda.jit(cache=True)
def mark_roots(vr, parent, is_root):
    n_i = vr.shape[1]
    for t in range(cuda.grid(1), vr.shape[0] * n_i, cuda.gridsize(1)):
        r = t // n_i
        if vr[r, t - r * n_i] != 0 and parent[t] == t:
            is_root[t] = 1


@cuda.jit(cache=True)
def reduce_slices(vr, rows, n_j, k_offset, parent, slot, ok, oval, oi0, oi1, oj0, oj1, opx):
    """Per component: slice, value, inclusive i/j bounds, pixel count.

    ``slot`` is the inclusive prefix sum of the root flags, so component s = slot[root] - 1.
    """
    n_i = vr.shape[1]
    for t in range(cuda.grid(1), vr.shape[0] * n_i, cuda.gridsize(1)):
        r = t // n_i
        i = t - r * n_i
        x = vr[r, i]
        if x == 0:
            continue
        root = parent[t]
        s = slot[root] - 1
        row = rows[r]
        j = row % n_j
        if root == t:
            ok[s] = row // n_j + k_offset
            oval[s] = x
        cuda.atomic.min(oi0, s, int32(i))
        cuda.atomic.max(oi1, s, int32(i))
        cuda.atomic.min(oj0, s, int32(j))
        cuda.atomic.max(oj1, s, int32(j))
        cuda.atomic.add(opx, s, int32(1))


@cuda.jit(cache=True)
def union_volume(vr, rows, rowmap, n_j, connectivity, parent):
    """3D: union each voxel with its equal-valued predecessors among the 6/18/26 neighbours.

    Predecessors in raster order (k, j, i): (k, j, i-1), row j-1 of slice k, all of slice k-1;
    an offset is a neighbour when its count of non-zero steps is 1 (6), <= 2 (18) or any (26).
    """
    n_i = vr.shape[1]
    n_k = rowmap.shape[0] // n_j
    for t in range(cuda.grid(1), vr.shape[0] * n_i, cuda.gridsize(1)):
        r = t // n_i
        i = t - r * n_i
        x = vr[r, i]
        if x == 0:
            continue
        if i > 0 and vr[r, i - 1] == x:
            _union(parent, t, t - 1)
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


@cuda.jit(cache=True)
def reduce_volume(vr, rows, n_j, parent, slot, oval, ovox, obox, osum):
    """Per 3D component: value, voxel count, bounds obox[s] = (i0, i1, j0, j1, k0, k1) and
    index sums osum[s] = (sum_i, sum_j, sum_k)."""
    n_i = vr.shape[1]
    for t in range(cuda.grid(1), vr.shape[0] * n_i, cuda.gridsize(1)):
        r = t // n_i
        i = t - r * n_i
        x = vr[r, i]
        if x == 0:
            continue
        root = parent[t]
        s = slot[root] - 1
        row = rows[r]
        k = row // n_j
        j = row - k * n_j
        if root == t:
            oval[s] = x
        cuda.atomic.add(ovox, s, int64(1))
        cuda.atomic.min(obox, (s, 0), int32(i))
        cuda.atomic.max(obox, (s, 1), int32(i))
        cuda.atomic.min(obox, (s, 2), int32(j))
        cuda.atomic.max(obox, (s, 3), int32(j))
        cuda.atomic.min(obox, (s, 4), int32(k))
        cuda.atomic.max(obox, (s, 5), int32(k))
        cuda.atomic.add(osum, (s, 0), int64(i))
        cuda.atomic.add(osum, (s, 1), int64(j))
        cuda.atomic.add(osum, (s, 2), int64(k))


# ----------------------------------------------------------------------------- driver


class Runner:
    """What the driver needs from an array library; this one runs NumPy under the simulator.

    ``gpu.CupyRunner`` implements the same methods with CuPy arrays, a stream and pinned memory.
    """

    xp = np
    threads = 32          # simulator: every thread is a Python thread, keep blocks small
    max_blocks = 4        # grid-stride loops make any grid correct; small grids test that
    oom_errors: tuple = (MemoryError,)

    def __init__(self, slab_slices: int | None = None):
        self._slab = slab_slices

    def launch(self, kernel, n: int, *args) -> None:
        """Run ``kernel`` over ``n`` work items with a grid-stride grid."""
        if n <= 0:
            return
        blocks = max(1, min(self.max_blocks, math.ceil(n / self.threads)))
        kernel[blocks, self.threads](*args)

    def upload(self, host: np.ndarray):
        """(ks, J, I) host slab -> C-contiguous device array of native byte order."""
        return np.ascontiguousarray(host, dtype=host.dtype.newbyteorder("="))

    def to_host(self, a) -> np.ndarray:
        return np.asarray(a)

    def count(self, a) -> int:
        """A device scalar as a Python int (a host sync on a device)."""
        return int(a)

    def slab_slices(self, n_k: int, n_j: int, n_i: int, itemsize: int) -> int:
        """How many slices to put on the device at once."""
        return n_k if self._slab is None else max(1, self._slab)

    def release_memory(self) -> None:
        """Called after an out-of-memory error, before retrying with a smaller slab."""


def compact_rows(run: Runner, vdev):
    """Occupied rows of a device slab (ks, J, I): (rows, vr) with rows[r] = k*J + j (slab k) and
    vr (R, I) their values; None when the slab is empty."""
    xp = run.xp
    n_k, n_j, n_i = vdev.shape
    vflat = vdev.reshape(-1)
    flags = xp.zeros(n_k * n_j, np.uint8)
    run.launch(flag_rows, vflat.size, vflat, n_i, flags)
    rows = xp.flatnonzero(flags).astype(np.int32)
    n_rows = int(rows.size)
    if n_rows == 0:
        return None
    if n_rows * n_i >= 2**31 - 1:
        raise MemoryError("too many occupied rows for 32-bit pixel indices")
    vr = xp.empty((n_rows, n_i), vdev.dtype)
    run.launch(gather_rows, n_rows * n_i, vflat, rows, vr)
    return rows, vr


def _roots(run: Runner, vr, parent):
    """Compress, then number the roots: (slot = inclusive prefix sum of root flags, count)."""
    n = parent.shape[0]
    run.launch(compress, n, vr, parent)
    is_root = run.xp.zeros(n, np.int32)
    run.launch(mark_roots, n, vr, parent, is_root)
    slot = run.xp.cumsum(is_root, dtype=np.int32)
    return slot, run.count(slot[-1])


def label_slab(run: Runner, vdev, diagonal: bool, k_offset: int) -> tuple | None:
    """Components of a device slab (ks, J, I) -> host arrays (k, value, i0, i1, j0, j1, pixels)."""
    xp = run.xp
    n_k, n_j, n_i = vdev.shape
    compact = compact_rows(run, vdev)
    if compact is None:
        return None
    rows, vr = compact
    del vdev
    n_rows = rows.shape[0]
    rowmap = xp.full(n_k * n_j, -1, np.int32)
    rowmap[rows] = xp.arange(n_rows, dtype=np.int32)
    n = n_rows * n_i
    parent = xp.empty(n, np.int32)
    run.launch(init_parent, n, parent)
    run.launch(union_slices, n, vr, rows, rowmap, n_j, diagonal, parent)
    slot, n_comp = _roots(run, vr, parent)
    ok = xp.empty(n_comp, np.int32)
    oval = xp.empty(n_comp, np.int64)
    oi0 = xp.full(n_comp, n_i, np.int32)
    oi1 = xp.full(n_comp, -1, np.int32)
    oj0 = xp.full(n_comp, n_j, np.int32)
    oj1 = xp.full(n_comp, -1, np.int32)
    opx = xp.zeros(n_comp, np.int32)
    run.launch(reduce_slices, n, vr, rows, n_j, k_offset, parent, slot,
               ok, oval, oi0, oi1, oj0, oj1, opx)
    return tuple(run.to_host(a) for a in (ok, oval, oi0, oi1, oj0, oj1, opx))


def _label_slice_on_cpu(host_slab: np.ndarray, diagonal: bool, k_offset: int) -> tuple:
    """Last resort when not even one slice fits on the device: the CPU kernel for that slice."""
    from . import cpu
    found = cpu.label_slices(np.ascontiguousarray(host_slab, host_slab.dtype.newbyteorder("=")),
                             diagonal)
    if found is None:
        return None
    k, val, i0, i1, j0, j1, px = found
    return (k + k_offset, val, i0, i1, j0, j1, px)


def slice_components(run: Runner, layers: np.ndarray, connectivity: int = 8) -> SliceComponents:
    """The backend call: layers (L, I, J, K) on the host -> SliceComponents on the host.

    Each layer goes to the device in slabs of whole slices (per-slice labelling makes slabs
    exact); an out-of-memory error halves the slab and retries, so a volume larger than the
    device is slower, never a crash.
    """
    if connectivity not in (4, 8):
        raise ValueError("2D connectivity must be 4 or 8")
    diagonal = connectivity == 8
    parts = []
    for layer_index in range(layers.shape[0]):
        kji = layers[layer_index].T          # (K, J, I) view; contiguous for Fortran input
        n_k, n_j, n_i = kji.shape
        slab = run.slab_slices(n_k, n_j, n_i, kji.dtype.itemsize)
        slab = max(1, min(slab, n_k, (2**31 - 1) // max(1, n_j * n_i)))
        k0 = 0
        while k0 < n_k:
            ks = min(slab, n_k - k0)
            try:
                res = label_slab(run, run.upload(kji[k0:k0 + ks]), diagonal, k0)
            except run.oom_errors:
                run.release_memory()
                if ks > 1:
                    slab = ks // 2
                    continue
                res = _label_slice_on_cpu(kji[k0:k0 + 1], diagonal, k0)
            if res is not None:
                k, val, i0, i1, j0, j1, px = res
                parts.append(SliceComponents(
                    layer=np.full(len(k), layer_index, np.int32), k=k, value=val,
                    i0=i0, i1=i1, j0=j0, j1=j1, pixels=px))
            k0 += ks
    return SliceComponents.concat(parts)


def _layer_rows(run: Runner, kji: np.ndarray):
    """A whole layer's occupied rows on the device, uploaded slab by slab so only the compact
    rows (not the volume) must fit: (rows with global k*J + j, vr) or None when empty."""
    xp = run.xp
    n_k, n_j, n_i = kji.shape
    slab = max(1, min(run.slab_slices(n_k, n_j, n_i, kji.dtype.itemsize), n_k))
    rows_parts, vr_parts = [], []
    k0 = 0
    while k0 < n_k:
        ks = min(slab, n_k - k0)
        try:
            compact = compact_rows(run, run.upload(kji[k0:k0 + ks]))
        except run.oom_errors:
            run.release_memory()
            if ks == 1:
                raise
            slab = ks // 2
            continue
        if compact is not None:
            rows_parts.append(compact[0] + np.int32(k0 * n_j))
            vr_parts.append(compact[1])
        k0 += ks
    if not rows_parts:
        return None
    rows = rows_parts[0] if len(rows_parts) == 1 else xp.concatenate(rows_parts)
    vr = vr_parts[0] if len(vr_parts) == 1 else xp.concatenate(vr_parts)
    if rows.shape[0] * n_i >= 2**31 - 1:
        raise MemoryError("too many occupied rows for 32-bit voxel indices")
    return rows, vr


def _instances_layer(run: Runner, kji: np.ndarray, connectivity3d: int) -> tuple | None:
    xp = run.xp
    n_k, n_j, n_i = kji.shape
    compact = _layer_rows(run, kji)
    if compact is None:
        return None
    rows, vr = compact
    n_rows = rows.shape[0]
    rowmap = xp.full(n_k * n_j, -1, np.int32)
    rowmap[rows] = xp.arange(n_rows, dtype=np.int32)
    n = n_rows * n_i
    parent = xp.empty(n, np.int32)
    run.launch(init_parent, n, parent)
    run.launch(union_volume, n, vr, rows, rowmap, n_j, connectivity3d, parent)
    slot, n_comp = _roots(run, vr, parent)
    oval = xp.empty(n_comp, np.int64)
    ovox = xp.zeros(n_comp, np.int64)
    obox = xp.empty((n_comp, 6), np.int32)
    obox[:, 0::2] = xp.asarray([n_i, n_j, n_k], dtype=np.int32)
    obox[:, 1::2] = -1
    osum = xp.zeros((n_comp, 3), np.int64)
    run.launch(reduce_volume, n, vr, rows, n_j, parent, slot, oval, ovox, obox, osum)
    return tuple(run.to_host(a) for a in (oval, ovox, obox, osum))


def instances_3d(run: Runner, layers: np.ndarray, connectivity3d: int = 26) -> Instances3D:
    """The backend call: layers (L, I, J, K) -> Instances3D (semantics in ``base.Instances3D``).

    A layer whose occupied rows do not fit on the device falls back to the CPU kernel for that
    layer (exact, slower) rather than failing.
    """
    if connectivity3d not in (6, 18, 26):
        raise ValueError("3D connectivity must be 6, 18 or 26")
    parts = []
    for layer_index in range(layers.shape[0]):
        try:
            res = _instances_layer(run, layers[layer_index].T, connectivity3d)
        except run.oom_errors:
            run.release_memory()
            from .cpu import CpuBackend
            part = CpuBackend().instances_3d(layers[layer_index:layer_index + 1].astype(
                layers.dtype.newbyteorder("="), copy=False), connectivity3d)
            part.layer[:] = layer_index
            parts.append(part)
            continue
        if res is None:
            continue
        val, vox, box, sums = res
        parts.append(Instances3D(
            layer=np.full(len(val), layer_index, np.int32), value=val, voxels=vox,
            i0=box[:, 0], i1=box[:, 1], j0=box[:, 2], j1=box[:, 3], k0=box[:, 4], k1=box[:, 5],
            sum_i=sums[:, 0], sum_j=sums[:, 1], sum_k=sums[:, 2]))
    return Instances3D.concat(parts)
