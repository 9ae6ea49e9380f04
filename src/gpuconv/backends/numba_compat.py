"""Every use of numba-cuda beyond its public API, in one place (each has a test that fails loudly
when numba-cuda changes: tests/test_gpu_kernels_ptx.py).

1. ``restore_numpy_aliases``: keeps numba-cuda working on NumPy releases newer than it knows.

numba-cuda 0.30.4 (the newest at the time of writing) registers, when it compiles its first
kernel, an overload for ``np.row_stack`` whenever NumPy >= 2.0, but NumPy 2.5 removed that alias
of ``np.vstack``: every kernel compilation then fails with ``AttributeError: module 'numpy' has
no attribute 'row_stack'`` (seen on the GPU machine with NumPy 2.5.2).  Restoring the alias,
only when it is missing, is all it needs; nothing in gpuconv uses it.

2. ``cubin_of``: the cubin of a compiled kernel, so CuPy can launch Numba's kernels
(``backends/kernel_abi.py`` says why).  numba-cuda keeps it on the private ``_codelibrary`` of
a compiled kernel.
"""

from __future__ import annotations

import os

import numpy as np


def restore_numpy_aliases() -> None:
    """Put back the NumPy names numba-cuda still overloads; a no-op where they exist."""
    try:
        np.row_stack  # noqa: B018 - the attribute lookup is the test
    except AttributeError:
        np.row_stack = np.vstack


def cubin_of(compiled) -> bytes:
    """The cubin bytes of a kernel compiled by ``Dispatcher.compile(signature)``.  Older
    numba-cuda returns bytes, newer a cuda.core ObjectCode (bytes or a file name in ``code``)."""
    cubin = compiled._codelibrary.get_cubin()
    if isinstance(cubin, (bytes, bytearray, memoryview)):
        return bytes(cubin)
    code = getattr(cubin, "code", None)
    if isinstance(code, (bytes, bytearray, memoryview)):
        return bytes(code)
    if isinstance(code, str) and os.path.isfile(code):
        with open(code, "rb") as fh:
            return fh.read()
    raise TypeError(f"cannot get the cubin bytes out of {type(cubin).__name__}")
