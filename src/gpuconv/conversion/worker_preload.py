"""Imported once by the forkserver of ``process_pool.py`` before it forks the workers.

Importing gpuconv and compiling (or loading from Numba's cache) the CPU labelling kernels here
means every forked worker starts with them ready, instead of each paying for it.  Nothing here
may touch CUDA: a CUDA context does not survive a fork.
"""

import numpy as np

import signal
import sys

from gpuconv.conversion import exam_unit, exam_writer  # noqa: F401 - imported for the workers
from gpuconv.backends.cpu import CpuBackend

_tiny = np.zeros((1, 8, 8, 2), np.uint8, order="F")
_tiny[0, 1:3, 2:4, 0] = 1
for _conn in (4, 8):
    CpuBackend().slice_components(_tiny, _conn)



def _in_forkserver() -> bool:
    """True inside the forkserver (started as ``python -c "from multiprocessing.forkserver
    import main; main(...)"``), False for any other importer (a test importing every module)."""
    return sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules


# Ctrl-C is the converting process's to handle.  The forkserver records the SIGINT handler in
# force after this module runs and gives it to every worker it forks, so workers ignore the
# terminal's SIGINT from their first instruction on (a worker that got it before its pool
# initializer ran would die and break the pool).  Only there: an ignored SIGINT is inherited
# by every program a process starts.
if _in_forkserver():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
