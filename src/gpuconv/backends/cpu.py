"""CPU backend: NumPy + Numba kernels (see cpu_kernels.py); the reference for every other backend.

The 2D labelling runs the same algorithm compiled from C (``native.py``) when a C compiler
is available, so converting boxes never imports Numba (its import and type-system set-up cost
~0.5 s and ~100 MB per process); ``GPUCONV_NATIVE=0`` selects the Numba kernels.  Both give
identical output (tests/test_perf_contracts.py).  Numba is imported only when its kernels run.
"""

from __future__ import annotations

import os
import threading
from dataclasses import fields

import numpy as np

from gpuconv.backends import native
from gpuconv.backends.base import INSTANCE_COLUMNS, Instances3D, SliceComponents


def _kern():
    from gpuconv.backends import cpu_kernels
    return cpu_kernels


def slice_major(layer: np.ndarray) -> np.ndarray:
    """(I, J, K) layer -> C-contiguous (K, J, I) view; copies only when the layer is strided."""
    return np.ascontiguousarray(layer.T)


def row_words(v: np.ndarray) -> np.ndarray | None:
    """(K, J, W) uint64 view of the same memory when each row is a whole number of 8-byte
    words (512 uint8 columns: 64 words), else None."""
    K, J, I = v.shape
    row_bytes = I * v.itemsize
    if v.flags.c_contiguous and row_bytes % 8 == 0 and v.itemsize <= 8:
        return v.reshape(-1).view(np.uint64).reshape(K, J, row_bytes // 8)
    return None


def occupied_rows(v: np.ndarray, words: np.ndarray | None = None) -> np.ndarray:
    """(K, J) mask of rows holding any non-zero value, read 8 bytes at a time when possible."""
    K, J, I = v.shape
    if v.flags.c_contiguous and native.get() is not None:
        return native.occupied_rows(v)
    kern = _kern()
    words = row_words(v) if words is None else words
    if words is not None:
        return kern.occupied_rows_words(words.reshape(K * J, -1)).reshape(K, J)
    return kern.occupied_rows_any(v.reshape(K * J, I)).reshape(K, J)


_NO_WORDS = np.zeros((0, 0, 0), np.uint64)


def _unsigned(v: np.ndarray) -> np.ndarray:
    """Kernels compare values for equality only, so signed data can be read as unsigned."""
    if v.dtype.kind == "i":
        return v.view(np.dtype(f"u{v.itemsize}"))
    return v


_SPLIT_MIN_VOXELS = 1 << 23   # a layer this large is labelled on all cores when alone
_in_flight = [0]
_in_flight_lock = threading.Lock()
_split_pool: list = []


def _native_split(v: np.ndarray, occ: np.ndarray, diagonal: bool):
    """``native.slice_components`` of a large layer as slabs of slices on a small thread pool
    (slices are independent; the C kernel releases the GIL), joined in slice order: exactly
    the single call's rows.  Used only when no other layer is being labelled, so a single
    big file uses every core while a batch of files keeps one file per thread."""
    n = min(os.cpu_count() or 1, 4, v.shape[0])
    if not _split_pool:
        from concurrent.futures import ThreadPoolExecutor
        _split_pool.append(ThreadPoolExecutor(4, thread_name_prefix="gpuconv-label"))
    cuts = np.linspace(0, v.shape[0], n + 1).round().astype(int).tolist()
    jobs = [_split_pool[0].submit(native.slice_components, v[a:b], occ[a:b], diagonal)
            for a, b in zip(cuts[:-1], cuts[1:])]
    parts = [j.result() for j in jobs]
    for a, part in zip(cuts[:-1], parts):
        part[0][:] += a
    return tuple(np.concatenate([p[f] for p in parts]) for f in range(7))


def label_slices(v: np.ndarray, diagonal: bool):
    """Per-slice components of one C-contiguous (K, J, I) layer: (k, value, i0, i1, j0, j1,
    pixels) arrays, or None when the layer is empty."""
    if v.flags.c_contiguous and native.get() is not None:
        occ = native.occupied_rows(v)
        if not occ.any():
            return None
        with _in_flight_lock:
            _in_flight[0] += 1
            alone = _in_flight[0] == 1
        try:
            if alone and v.size >= _SPLIT_MIN_VOXELS and (os.cpu_count() or 1) > 1:
                k, val, i0, i1, j0, j1, px = _native_split(v, occ, diagonal)
            else:
                k, val, i0, i1, j0, j1, px = native.slice_components(v, occ, diagonal)
        finally:
            with _in_flight_lock:
                _in_flight[0] -= 1
    else:
        words = row_words(v)
        occ = occupied_rows(v, words)
        if not occ.any():
            return None
        k, val, i0, i1, j0, j1, px = _kern().slice_components(
            _unsigned(v), occ, diagonal, _NO_WORDS if words is None else words,
            8 // v.itemsize)
    if v.dtype.kind == "i":  # report the signed value the file holds
        val = val.astype(np.dtype(f"u{v.itemsize}")).view(v.dtype).astype(np.int64)
    return k, val, i0, i1, j0, j1, px


def _has_concat_dtypes(c: SliceComponents) -> bool:
    """True when ``c``'s columns already have the dtypes ``SliceComponents.concat`` gives."""
    wide = {"value", "pixels"}
    return all(getattr(c, f.name).dtype == (np.int64 if f.name in wide else np.int32)
               for f in fields(c))


class CpuBackend:
    name = "cpu"

    def slice_components(self, layers: np.ndarray, connectivity: int = 8) -> SliceComponents:
        if connectivity not in (4, 8):
            raise ValueError("2D connectivity must be 4 or 8")
        parts = []
        for layer_index in range(layers.shape[0]):
            found = label_slices(slice_major(layers[layer_index]), connectivity == 8)
            if found is None:
                continue
            k, val, i0, i1, j0, j1, px = found
            parts.append(SliceComponents(
                layer=np.full(len(k), layer_index, np.int32), k=k, value=val,
                i0=i0, i1=i1, j0=j0, j1=j1, pixels=px))
        if len(parts) == 1 and _has_concat_dtypes(parts[0]):
            return parts[0]  # one layer (most files): no copy of 40 bytes per component
        return SliceComponents.concat(parts)

    def instances_3d(self, layers: np.ndarray, connectivity3d: int = 26) -> Instances3D:
        """3D components per layer (semantics: ``Instances3D``); no label volume is built."""
        from gpuconv.backends import cpu_kernels3d as kern3d
        same, prev = kern3d.neighbour_offsets(connectivity3d)
        parts = []
        for layer_index in range(layers.shape[0]):
            v = slice_major(layers[layer_index])
            occ = occupied_rows(v)
            if not occ.any():
                continue
            st = kern3d.instances_3d(_unsigned(v), occ, same, prev)
            cols = dict(zip(INSTANCE_COLUMNS, st.T))
            if v.dtype.kind == "i":  # report the signed value the file holds
                cols["value"] = (cols["value"].astype(np.dtype(f"u{v.itemsize}"))
                                 .view(v.dtype).astype(np.int64))
            parts.append(Instances3D(layer=np.full(len(st), layer_index, np.int32), **cols))
        return Instances3D.concat(parts)
