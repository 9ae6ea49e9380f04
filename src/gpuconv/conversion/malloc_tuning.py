"""Process-level tuning for bulk decoding: glibc's malloc, set before any thread starts.

- glibc serves every allocation above 32 MiB with a fresh mmap and returns it to the OS on free,
  so each decoded volume page-faults all of its memory again: measured on the build machine,
  decoding a 512x512x128 uint8 map (32 MiB) took 26 ms, 5.2 ms once freed memory is kept for
  reuse.  ``reuse_freed_memory`` tells glibc to serve large blocks from the heap and keep freed
  memory (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD).
- Those settings hold for the main thread's arena only.  Every other thread that allocates gets
  an arena of its own (up to 8 per core), whose heaps are at most 64 MiB: a volume decoded in a
  reader thread was mmapped and unmapped again each time (40 sparse files: 0.12 s to decode in
  the main thread, 0.42 s in a worker thread, 184 k minor faults; MALLOC_ARENA_MAX=1 took the
  warm 40-file convert from 0.81 to 0.49 s).  So it also sets M_ARENA_MAX to 1: every thread
  allocates from the main arena, whose freed memory is reused.  The pipeline's threads hand
  large buffers over and allocate rarely (a few per file), so one arena costs no contention
  that shows.  It takes effect for threads that have not allocated yet: ``gpuconv``'s entry
  point calls it first thing, ``convert`` again before its threads start.  A MALLOC_ARENA_MAX
  in the environment is respected (glibc read it at start-up).

The price is that the process keeps its peak memory, which the pipeline's bounded queue caps.
A no-op where glibc is absent.

``skip_numba_blas_probe``: a lighter first Numba call (see its docstring).
"""

from __future__ import annotations

import ctypes
import importlib.abc
import importlib.machinery
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_done = False


def reuse_freed_memory() -> bool:
    """Keep freed memory for the next volume instead of page-faulting it in anew, in every
    thread (idempotent; call it before threads start)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD,
                                                                        (1 << 31) - 1)
        if ok and "MALLOC_ARENA_MAX" not in os.environ:
            ok = libc.mallopt(_M_ARENA_MAX, 1)
    except (OSError, AttributeError):  # musl or another libc: leave the defaults
        return False
    _done = bool(ok)
    return _done


# ---- a lighter first Numba call -------------------------------------------------------------
# A lighter first Numba call: no ``scipy.linalg`` import at type-system set-up.
#
# The first call of any Numba function loads Numba's typing and lowering registries, and one of
# them (``numba.np.arraymath``) probes for a BLAS at import by importing
# ``scipy.linalg.cython_blas``, which pulls in all of ``scipy.linalg`` (~0.23 s measured on the
# build machine, of a ~0.6 s first call) only to decide whether ``np.dot`` inside jitted code may
# call BLAS.  No gpuconv kernel uses ``np.dot`` or ``np.linalg`` in jitted code, so
# ``skip_numba_blas_probe()`` makes that one probe fail: while ``numba.np.arraymath``
# executes, Numba's ``ensure_blas`` raises ImportError (nothing is removed from or added to
# ``sys.modules``, so no other import can be affected), then it is restored.  The only effect
# on Numba: a jitted ``np.dot`` on floats would use Numba's own loop instead of BLAS.  Nothing
# happens when scipy.linalg is already imported (then the probe costs nothing) or Numba was
# already set up.
# The CLI entry point calls it; ``GPUCONV_NUMBA_BLAS=1`` keeps Numba's probe.

_TARGET = "numba.np.arraymath"


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        import numba.np.linalg as linalg   # imports no SciPy itself
        probe = linalg.ensure_blas
        linalg.ensure_blas = _no_blas      # what arraymath binds and calls at import
        try:
            self.inner.exec_module(module)
        finally:
            linalg.ensure_blas = probe
            if getattr(module, "ensure_blas", None) is _no_blas:
                module.ensure_blas = probe


def _no_blas():
    raise ImportError("gpuconv: BLAS probe skipped (numba_setup.py)")


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)        # once
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def skip_numba_blas_probe() -> bool:
    """Install the one-shot hook (idempotent); True when it will take effect."""
    if os.environ.get("GPUCONV_NUMBA_BLAS") == "1" or _TARGET in sys.modules \
            or "scipy.linalg" in sys.modules:
        return False
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    return True
