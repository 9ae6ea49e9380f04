"""The host driver of the GPU labelling: launches the kernels of ``gpu_device.py``.

The driver functions take a ``Runner`` that supplies the array module and the launch settings.
The same driver runs with NumPy arrays under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, the
tests) and with CuPy arrays on a device (``gpu.py``), so the simulator tests exercise the real
launch logic.  Slabs too small to be worth a launch go to the CPU kernels (``_label_slice_on_cpu``).
Nothing here imports CuPy.
"""

from __future__ import annotations

import math

import numpy as np

from gpuconv.backends.base import Instances3D, SliceComponents
from gpuconv.backends.gpu_device import (  # noqa: F401 - used and re-exported
    SLICE_ROWS, VOLUME_ROWS, flag_rows, gather_rows, index_rows, init_parent, init_table,
    reduce_slices, reduce_volume, resolve_roots, union_slices, union_volume,
)


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

    def view(self, a):
        """``a`` as a kernel argument; made once for an array several kernels take (on a device
        that wrapping costs more host time than a small kernel's launch)."""
        return a

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
    """The occupied rows of a device slab (ks, J, I), in two host syncs: None when the slab is
    empty, else (rows, rowmap, vr, parent): rows[r] = k*J + j (slab k) of compact row r,
    rowmap[k*J + j] = r or -1, vr (R, I) the rows' values, parent = arange(R * I)."""
    xp = run.xp
    n_k, n_j, n_i = vdev.shape
    vflat = vdev.reshape(-1)
    row_bytes = n_i * vdev.dtype.itemsize
    word = next(w for w in (8, 4, 2, 1) if row_bytes % w == 0)
    words = vflat.view(np.dtype(f"u{word}"))
    flags = xp.zeros(n_k * n_j, np.int32)
    run.launch(flag_rows, words.size, words, row_bytes // word, flags)
    prefix = xp.cumsum(flags, dtype=np.int32)
    n_rows = run.count(prefix[-1])
    if n_rows == 0:
        return None
    if n_rows * n_i >= 2**31 - 1:
        raise MemoryError("too many occupied rows for 32-bit pixel indices")
    rows = xp.empty(n_rows, np.int32)
    rowmap = xp.empty(n_k * n_j, np.int32)
    rows_v = run.view(rows)
    run.launch(index_rows, flags.size, flags, prefix, rows_v, rowmap)
    vr = xp.empty((n_rows, n_i), vdev.dtype)
    parent = xp.empty(n_rows * n_i, np.int32)
    run.launch(gather_rows, n_rows * n_i, vflat, rows_v, vr, parent)
    return rows, rowmap, vr, parent


def _component_table(run: Runner, vr_v, parent_v, first_bound: int, last_bound: int,
                     n_table_rows: int):
    """Compress the union-find forest, number its roots and make the component table with
    ``init_table``'s identities: (slot, table) with slot[root] - 1 = component index."""
    xp = run.xp
    n = parent_v.shape[0]
    is_root = xp.empty(n, np.int32)
    run.launch(resolve_roots, n, vr_v, parent_v, is_root)
    slot = xp.cumsum(is_root, dtype=np.int32)
    n_comp = run.count(slot[-1])
    table = xp.empty((n_table_rows, n_comp), np.int64)
    run.launch(init_table, table.size, table, first_bound, last_bound)
    return slot, table


def label_slab(run: Runner, vdev, diagonal: bool, k_offset: int) -> np.ndarray | None:
    """Components of a device slab (ks, J, I) -> the host table (``SLICE_ROWS``, components),
    or None when the slab is empty.  Three host syncs: the occupied-row count, the component
    count, and the one copy of the table."""
    n_k, n_j, n_i = vdev.shape
    compact = compact_rows(run, vdev)
    if compact is None:
        return None
    rows, rowmap, vr, parent = compact
    del vdev
    n = parent.shape[0]
    rows_v, vr_v, parent_v = run.view(rows), run.view(vr), run.view(parent)
    run.launch(union_slices, n, vr_v, rows_v, rowmap, n_j, diagonal, parent_v)
    slot, table = _component_table(run, vr_v, parent_v, 2, 5, len(SLICE_ROWS))
    run.launch(reduce_slices, n, vr_v, rows_v, n_j, k_offset, parent_v, slot, table)
    return run.to_host(table)


def _label_slice_on_cpu(host_slab: np.ndarray, diagonal: bool, k_offset: int):
    """Last resort when not even one slice fits on the device: the CPU kernel for that slice,
    as a ``SLICE_ROWS`` table."""
    from gpuconv.backends import cpu
    found = cpu.label_slices(np.ascontiguousarray(host_slab, host_slab.dtype.newbyteorder("=")),
                             diagonal)
    if found is None:
        return None
    k, val, i0, i1, j0, j1, px = found
    return np.stack([np.asarray(c, np.int64) for c in (k + k_offset, val, i0, i1, j0, j1, px)])


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
                table = label_slab(run, run.upload(kji[k0:k0 + ks]), diagonal, k0)
            except run.oom_errors:
                run.release_memory()
                if ks > 1:
                    slab = ks // 2
                    continue
                table = _label_slice_on_cpu(kji[k0:k0 + 1], diagonal, k0)
            if table is not None:
                cols = dict(zip(SLICE_ROWS, table))
                parts.append(SliceComponents(
                    layer=np.full(table.shape[1], layer_index, np.int32), **cols))
            k0 += ks
    return SliceComponents.concat(parts)


def _layer_rows(run: Runner, kji: np.ndarray):
    """A whole layer's occupied rows on the device, uploaded slab by slab so only the compact
    rows (not the volume) must fit: (rows with global k*J + j, rowmap, vr, parent) or None."""
    xp = run.xp
    n_k, n_j, n_i = kji.shape
    slab = max(1, min(run.slab_slices(n_k, n_j, n_i, kji.dtype.itemsize), n_k))
    parts = []
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
            parts.append((k0, compact))
        k0 += ks
    if not parts:
        return None
    if len(parts) == 1 and parts[0][0] == 0 and parts[0][1][1].shape[0] == n_k * n_j:
        return parts[0][1]                 # one slab: its rows, rowmap and parent are global
    rows = xp.concatenate([c[0] + np.int32(k * n_j) for k, c in parts])
    vr = xp.concatenate([c[2] for _, c in parts])
    if rows.shape[0] * n_i >= 2**31 - 1:
        raise MemoryError("too many occupied rows for 32-bit voxel indices")
    rowmap = xp.full(n_k * n_j, -1, np.int32)
    rowmap[rows] = xp.arange(rows.shape[0], dtype=np.int32)
    parent = xp.empty(rows.shape[0] * n_i, np.int32)
    run.launch(init_parent, parent.size, parent)
    return rows, rowmap, vr, parent


def _instances_layer(run: Runner, kji: np.ndarray, connectivity3d: int) -> np.ndarray | None:
    """3D components of one layer -> the host table (``VOLUME_ROWS``, components) or None."""
    n_k, n_j, n_i = kji.shape
    compact = _layer_rows(run, kji)
    if compact is None:
        return None
    rows, rowmap, vr, parent = compact
    n = parent.shape[0]
    rows_v, vr_v, parent_v = run.view(rows), run.view(vr), run.view(parent)
    run.launch(union_volume, n, vr_v, rows_v, rowmap, n_j, connectivity3d, parent_v)
    slot, table = _component_table(run, vr_v, parent_v, 2, 7, len(VOLUME_ROWS))
    run.launch(reduce_volume, n, vr_v, rows_v, n_j, parent_v, slot, table)
    return run.to_host(table)


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
            table = _instances_layer(run, layers[layer_index].T, connectivity3d)
        except run.oom_errors:
            run.release_memory()
            from gpuconv.backends.cpu import CpuBackend
            part = CpuBackend().instances_3d(layers[layer_index:layer_index + 1].astype(
                layers.dtype.newbyteorder("="), copy=False), connectivity3d)
            part.layer[:] = layer_index
            parts.append(part)
            continue
        if table is None:
            continue
        parts.append(Instances3D(layer=np.full(table.shape[1], layer_index, np.int32),
                                 **dict(zip(VOLUME_ROWS, table))))
    return Instances3D.concat(parts)
