"""Launching Numba-compiled CUDA kernels through CuPy: the argument layout Numba compiles to.

Why: on the H100, an on-device labelling call of a 512x512x64 volume took 1.48 ms, and cProfile
put all of it in numba-cuda's launch path (``as_cuda_array`` views of CuPy arrays and the
dispatcher's per-argument preparation, about 0.1 ms per launch of a few arrays), not in the
kernels.  The kernels stay Numba kernels (the simulator tests run the same source); only the
launch changes: Numba compiles a kernel once per argument-type key, CuPy loads its cubin, and
each launch passes the arguments as the flat parameter list Numba's kernel ABI expects:

- an array: meminfo (0), parent (0), number of items, item size, data pointer, shape[ndim],
  strides[ndim] in bytes: all 64-bit;
- an ``int``: int64; a ``bool``: one byte.

``tests/test_gpu_kernels_ptx.py`` checks this layout against the ``.param`` list of the PTX that
Numba emits for every kernel of ``gpu_device`` (no GPU needed).
"""

from __future__ import annotations

import numpy as np

_ZERO = np.uint64(0)


class Unsupported(Exception):
    """An argument the fast path does not handle (the caller launches through Numba instead)."""


def _c_strides(shape, itemsize: int) -> tuple:
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def pack(args) -> tuple[tuple, list]:
    """(type key, flat kernel parameters as NumPy scalars) for ``args``: device arrays exposing
    ``__cuda_array_interface__`` (C-contiguous), Python ints and bools."""
    key, flat = [], []
    for a in args:
        cai = getattr(a, "__cuda_array_interface__", None)
        if cai is not None:
            shape = tuple(cai["shape"])
            dtype = np.dtype(cai["typestr"])
            strides = _c_strides(shape, dtype.itemsize)
            if cai.get("strides") not in (None, strides) and int(np.prod(shape)) > 1:
                raise Unsupported("not C-contiguous")
            key.append((dtype.str, len(shape)))
            flat += [_ZERO, _ZERO, np.int64(int(np.prod(shape))), np.int64(dtype.itemsize),
                     np.uint64(cai["data"][0])]
            flat += [np.int64(s) for s in shape]
            flat += [np.int64(s) for s in strides]
        elif isinstance(a, (bool, np.bool_)):
            key.append("b")
            flat.append(np.uint8(bool(a)))
        elif isinstance(a, (int, np.integer)):
            key.append("i")
            flat.append(np.int64(a))
        else:
            raise Unsupported(f"argument of type {type(a).__name__}")
    return tuple(key), flat


def signature(key: tuple) -> tuple:
    """The Numba argument types a ``pack`` key stands for (what the kernel is compiled for)."""
    from numba import types
    from numba.np import numpy_support
    out = []
    for k in key:
        if k == "b":
            out.append(types.boolean)
        elif k == "i":
            out.append(types.int64)
        else:
            dtype, ndim = k
            out.append(types.Array(numpy_support.from_dtype(np.dtype(dtype)), ndim, "C"))
    return tuple(out)
