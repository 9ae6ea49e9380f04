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
"""

from __future__ import annotations

import ctypes
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
