"""Keeps numba-cuda working on NumPy releases newer than it knows.

numba-cuda 0.30.4 (the newest at the time of writing) registers, when it compiles its first
kernel, an overload for ``np.row_stack`` whenever NumPy >= 2.0, but NumPy 2.5 removed that alias
of ``np.vstack``: every kernel compilation then fails with ``AttributeError: module 'numpy' has
no attribute 'row_stack'`` (seen on the GPU machine with NumPy 2.5.2).  Restoring the alias,
only when it is missing, is all it needs; nothing in gpuconv uses it.
"""

from __future__ import annotations

import numpy as np


def restore_numpy_aliases() -> None:
    """Put back the NumPy names numba-cuda still overloads; a no-op where they exist."""
    try:
        np.row_stack  # noqa: B018 - the attribute lookup is the test
    except AttributeError:
        np.row_stack = np.vstack
