"""The hot CPU kernels as a small C library (``native_kernels.c``), loaded with ctypes.

Why: converting one or two files, a process spent more time importing Numba and setting up its
type system (numba ~0.24 s, the ``scipy.linalg`` it imports ~0.23 s, ~100 MB of memory) than
labelling.  This library loads in about a millisecond, and ctypes releases the GIL around every
call, so the pipeline's threads label in parallel as they do with the Numba kernels.

The C code is the same algorithms, in the same order, as the Numba kernels
(``cpu_kernels.slice_components`` and friends, ``results/box_kernels.py``): outputs are
identical, and tests/test_perf_contracts.py runs both and compares.  It is compiled on first
use with the system C compiler (``cc``, ``$CC``), once per source version, into
``__pycache__`` beside this file (or ``~/.cache/gpuconv`` when that is not writable); without
a compiler, or with ``GPUCONV_NATIVE=0``, ``get()`` returns None and the Numba kernels run.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

_SOURCE = Path(__file__).with_name("native_kernels.c")
_FLAGS = ["-O3", "-shared", "-fPIC", "-std=c99"]
_state: dict = {}


def _library_path() -> list[Path]:
    digest = hashlib.sha256(_SOURCE.read_bytes() + " ".join(_FLAGS).encode()
                            + sys.platform.encode()).hexdigest()[:16]
    name = f"gpuconv_native-{digest}.so"
    return [Path(__file__).with_name("__pycache__") / name,
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpuconv" / name]


def _compile(dest: Path) -> bool:
    import subprocess
    import tempfile
    cc = os.environ.get("CC", "cc")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=dest.parent)
        os.close(fd)
    except OSError:
        return False
    try:
        done = subprocess.run([cc, *_FLAGS, "-o", tmp, str(_SOURCE)], capture_output=True,
                              timeout=120)
        if done.returncode != 0:
            return False
        os.replace(tmp, dest)   # atomic: concurrent processes never load a half-written file
        return True
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load():
    if os.environ.get("GPUCONV_NATIVE", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    candidates = _library_path()
    for path in candidates:
        if path.exists():
            try:
                return _declare(ctypes.CDLL(str(path)))
            except OSError:
                pass
    failed = [p.with_suffix(".failed") for p in candidates]
    if any(f.exists() for f in failed):   # a compiler that failed once is not retried per run
        return None
    for path in candidates:
        if _compile(path):
            try:
                return _declare(ctypes.CDLL(str(path)))
            except OSError:
                pass
    for f in failed:
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text("the C compiler failed on native_kernels.c; the Numba kernels run\n")
            break
        except OSError:
            continue
    return None


def get():
    """The loaded library, or None (no compiler, not Linux, or ``GPUCONV_NATIVE=0``)."""
    if "lib" not in _state:
        _state["lib"] = _load()
    return _state["lib"]


_P = ctypes.c_void_p
_I = ctypes.c_int64


def _declare(lib):
    lib.gc_occupied_rows.argtypes = [_P, _I, _I, _P]
    lib.gc_occupied_rows.restype = None
    lib.gc_slice_components.argtypes = [_P, _P, _I, _I, _I, _I, ctypes.c_int32, _P]
    lib.gc_slice_components.restype = _I
    lib.gc_free.argtypes = [_P]
    lib.gc_free.restype = None
    lib.gc_packed_canonical.argtypes = [_I] + [_P] * 7 + [_I] * 4 + [_P] * 7
    lib.gc_packed_canonical.restype = ctypes.c_int32
    lib.gc_yolo_starts.argtypes = [_I, _P, _P]
    lib.gc_yolo_starts.restype = _I
    lib.gc_yolo_fill.argtypes = [_I] + [_P] * 11
    lib.gc_yolo_fill.restype = None
    lib.gc_class_lut_index.argtypes = [_I, _P, _I, _P, _P]
    lib.gc_class_lut_index.restype = None
    lib.gc_seen_values.argtypes = [_P, _I, _I, _P]
    lib.gc_seen_values.restype = None
    return lib


def _ptr(a: np.ndarray):
    return a.ctypes.data


def _owned(lib, addr: int, n: int, dtype) -> np.ndarray:
    """A NumPy array over ``n`` items at C-allocated ``addr``; freed when the array goes."""
    nbytes = max(1, n) * np.dtype(dtype).itemsize
    base = (ctypes.c_char * nbytes)

    class _Owned(base):
        def __del__(self, _free=lib.gc_free, _addr=addr):
            _free(_addr)
    return np.frombuffer(_Owned.from_address(addr), dtype, count=n)


def occupied_rows(v: np.ndarray) -> np.ndarray:
    """(K, J) bool: rows of the C-contiguous (K, J, I) ``v`` holding any non-zero value."""
    lib = get()
    K, J, I = v.shape
    out = np.empty((K, J), np.bool_)
    lib.gc_occupied_rows(_ptr(v), K * J, I * v.itemsize, _ptr(out))
    return out


def slice_components(v: np.ndarray, occ: np.ndarray, diagonal: bool):
    """``cpu_kernels.slice_components`` for a C-contiguous (K, J, I) unsigned ``v``:
    (k, value, i0, i1, j0, j1, pixels)."""
    lib = get()
    K, J, I = v.shape
    occ = np.ascontiguousarray(occ, np.bool_)
    ptrs = (ctypes.c_void_p * 7)()
    n = lib.gc_slice_components(_ptr(v), _ptr(occ), K, J, I, v.itemsize, int(diagonal), ptrs)
    if n < 0:
        raise MemoryError("native slice_components: out of memory")
    dtypes = (np.int32, np.int64, np.int32, np.int32, np.int32, np.int32, np.int64)
    return tuple(_owned(lib, ptrs[t], n, dt) for t, dt in enumerate(dtypes))


def packed_canonical(k, cls, i0, i1, j0, j1, px, n_slices, bj, bi, bp):
    """``box_kernels.packed_canonical`` (int32 columns, int64 pixels)."""
    lib = get()
    n = len(k)
    outs = [np.empty(n, np.int32) for _ in range(6)] + [np.empty(n, np.int64)]
    ok, ocls, oi0, oi1, oj0, oj1, opx = outs
    if lib.gc_packed_canonical(n, *(_ptr(a) for a in (k, cls, i0, i1, j0, j1, px)),
                               n_slices, bj, bi, bp,
                               *(_ptr(a) for a in (ok, ocls, oi0, oi1, oj0, oj1, opx))):
        raise MemoryError("native packed_canonical: out of memory")
    return ok, ocls, oi0, oi1, oj0, oj1, opx


def yolo_text_into(cls, i0, i1, j0, j1, lut_x, lut_y, lut_w, lut_h):
    """``box_kernels.yolo_text_into``: (uint8 text, n + 1 line starts)."""
    lib = get()
    n = len(cls)
    starts = np.empty(n + 1, np.int64)
    total = lib.gc_yolo_starts(n, _ptr(cls), _ptr(starts))
    buf = np.empty(total, np.uint8)
    luts = [np.ascontiguousarray(t) for t in (lut_x, lut_y, lut_w, lut_h)]
    lib.gc_yolo_fill(n, *(_ptr(a) for a in (cls, i0, i1, j0, j1)), *(_ptr(t) for t in luts),
                     _ptr(starts), _ptr(buf))
    return buf, starts


def class_lut_index(value, vmin, span):
    """``box_kernels.class_lut_index``: (presence over [vmin, vmin + span), value - vmin)."""
    lib = get()
    present = np.zeros(span, np.bool_)
    idx = np.empty(len(value), np.int64)
    lib.gc_class_lut_index(len(value), _ptr(value), vmin, _ptr(present), _ptr(idx))
    return present, idx


def seen_values(flat: np.ndarray) -> np.ndarray:
    """bool (256 or 65536,): which values a contiguous 8/16-bit unsigned array holds (one
    pass, no widening copy; what ``agreement_files._seen_values`` does with Numba)."""
    lib = get()
    flat = np.ascontiguousarray(flat)
    if flat.dtype.kind != "u" or flat.itemsize > 2:
        raise TypeError("seen_values: 8- or 16-bit unsigned data")
    seen = np.zeros(1 << (8 * flat.itemsize), np.bool_)
    lib.gc_seen_values(_ptr(flat), flat.size, flat.itemsize, _ptr(seen))
    return seen
