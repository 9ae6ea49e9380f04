"""GPU backend: CuPy device arrays driven through the Numba CUDA kernels of ``gpu_device``.

CuPy is imported lazily, so this module imports on a CPU-only machine; ``unavailable_reason``
says why the backend cannot run (``get_backend`` turns that into a fallback or a clear error).
cuCIM is not needed: the kernels label all values and slices in one pass (see gpu_device).

Each worker thread gets its own ``CupyRunner``: a non-blocking CUDA stream and a pinned host
staging buffer.  A volume is copied to the device once per slab from pinned memory, so the copy
of one worker's volume overlaps the kernels of another's.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings

import numpy as np

from gpuconv.backends import kernel_abi
from gpuconv.backends.base import Instances3D, SliceComponents
from gpuconv.backends.numba_compat import cubin_of

# GPUCONV_FAST_LAUNCH=0 launches every kernel through Numba's dispatcher instead of CuPy
# (same kernels, same results; slower by ~0.1 ms per launch).
_FAST_LAUNCH = os.environ.get("GPUCONV_FAST_LAUNCH", "1") != "0"

# gpu_driver (and so numba.cuda) is imported only when a GpuBackend is made: a CPU-only install
# need not have numba-cuda at all.

# Device bytes per voxel of a slab: the slab and its compact copy of occupied rows (2 x itemsize)
# plus parent, root flags and prefix sum (3 x int32).  Budgeted as if every row were occupied,
# so it is an upper bound for calcium maps.
_INT32_ARRAYS_PER_VOXEL = 3
_FREE_MEMORY_FRACTION = 0.5   # leave room for other workers' slabs and CuPy temporaries


def cupy_device_reason() -> str | None:
    """None when CuPy imports and sees a CUDA device, else a one-line reason.  The one check
    behind every GPU path (backend, agreement, CT windowing)."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'gpuconv[gpu]')"
    except Exception as exc:  # a broken CUDA install raises all sorts at import
        return f"CuPy failed to import ({type(exc).__name__}: {exc})"
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when there is no driver
        return f"no CUDA device visible to CuPy ({' '.join(str(exc).split())})"
    if n_devices < 1:
        return "no CUDA device visible to CuPy"
    return None


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """None when CuPy imports, sees a CUDA device and Numba can compile for it; else why not."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return "NUMBA_ENABLE_CUDASIM is set (CUDA simulator); the GPU backend needs a real device"
    reason = cupy_device_reason()
    if reason is not None:
        return reason
    try:
        from gpuconv.backends.numba_compat import restore_numpy_aliases
        restore_numpy_aliases()
        from numba import cuda
        if not cuda.is_available():
            return "Numba cannot use the CUDA device (is numba-cuda installed?)"
        from numba.cuda.cudadrv import nvvm
        if not nvvm.is_available():
            return "Numba CUDA cannot find NVVM (pip install 'numba-cuda[cu13]')"
    except Exception as exc:
        return f"Numba CUDA unavailable ({type(exc).__name__}: {exc})"
    return None


# (kernel, kernel_abi key) -> CuPy Function of Numba's cubin, shared by every runner of the
# process: loading a module costs about a millisecond a kernel, so a runner made per file (the
# benchmark's stage timing did) must not pay it again.  One device per process is assumed, as
# dask-cuda and CUDA_VISIBLE_DEVICES arrange.
_FUNCTIONS: dict = {}
_FUNCTIONS_LOCK = threading.Lock()


def _load_function(kernel, key):
    """Compile ``kernel`` for ``key`` with Numba (its disk cache included) and load the cubin
    into CuPy; see ``kernel_abi`` for why."""
    from cupy.cuda.function import Module
    with _FUNCTIONS_LOCK:
        fn = _FUNCTIONS.get((kernel, key))
        if fn is None:
            compiled = kernel.compile(kernel_abi.signature(key))
            module = Module()
            module.load(cubin_of(compiled))
            fn = module.get_function(compiled.entry_name)  # the Function keeps its module
            _FUNCTIONS[(kernel, key)] = fn
    return fn


class CupyRunner:
    """Runs the ``gpu_driver`` on a device: CuPy arrays, one stream, pinned staging.

    Implements the same methods as ``gpu_driver.Runner`` (the NumPy/simulator one).
    """

    threads = 256
    max_blocks = 8192     # grid-stride loops cover the rest

    def __init__(self):
        import cupy
        from numba import cuda
        self.cupy = cupy
        self.xp = cupy
        self.cuda = cuda
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.nb_stream = cuda.external_stream(self.stream.ptr)
        self.oom_errors = (cupy.cuda.memory.OutOfMemoryError, MemoryError)
        self._pinned = None
        self.fast_launch = _FAST_LAUNCH
        # small grids are expected here (a few occupied rows); Numba would warn on every launch
        warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result in GPU")

    def launch(self, kernel, n, *args):
        if n <= 0:
            return
        blocks = max(1, min(self.max_blocks, -(-n // self.threads)))
        if self.fast_launch:
            fn = None
            try:
                key, params = kernel_abi.pack(args)
                fn = _FUNCTIONS.get((kernel, key)) or _load_function(kernel, key)
            except kernel_abi.Unsupported:
                pass
            except Exception as exc:  # noqa: BLE001 - numba-cuda/CuPy internals of another version
                warnings.warn("gpuconv: launching kernels through CuPy failed "
                              f"({type(exc).__name__}: {exc}); using Numba's launcher (same "
                              "results, slower)", stacklevel=2)
                self.fast_launch = False
            if fn is not None:
                fn((blocks,), (self.threads,), tuple(params), stream=self.stream)
                return
        # Numba's own launch.  CuPy arrays -> Numba views without the per-argument stream sync
        # Numba does by default; ordering is kept because CuPy work and kernels share a stream.
        kernel[blocks, self.threads, self.nb_stream](*map(self._numba_view, args))

    def view(self, a):
        """What the driver passes to several launches: CuPy arrays as they are for the fast
        launch, else Numba views made once."""
        return a if self.fast_launch else self._numba_view(a)

    def _numba_view(self, a):
        if hasattr(a, "__cuda_array_interface__") and not getattr(a, "__cuda_ndarray__", False):
            return self.cuda.as_cuda_array(a, sync=False)
        return a

    def upload(self, host):
        dtype = host.dtype.newbyteorder("=")
        nbytes = host.size * dtype.itemsize
        self.stream.synchronize()  # the previous async copy out of the staging buffer is done
        dev = self.cupy.empty(host.shape, dtype)
        staging = self._staging(nbytes)
        if staging is None:  # no pinned memory to be had: a synchronous pageable copy
            dev.set(np.ascontiguousarray(host, dtype=dtype), stream=self.stream)
            return dev
        staging = staging[:nbytes].view(dtype).reshape(host.shape)
        np.copyto(staging, host)  # one host pass; also makes it contiguous and native-endian
        dev.set(staging, stream=self.stream)
        return dev

    def _staging(self, nbytes):
        """This worker's pinned buffer, grown to ``nbytes``; None when pinning fails."""
        if self._pinned is None or self._pinned.nbytes < nbytes:
            import cupyx
            self._pinned = None
            try:
                self._pinned = cupyx.empty_pinned(max(nbytes, 1), np.uint8)
            except Exception:  # page-locked host memory is a limited resource
                return None
        return self._pinned

    def to_host(self, a):
        return a.get(stream=self.stream)

    def count(self, a):
        return int(a.get(stream=self.stream))

    def slab_slices(self, n_k, n_j, n_i, itemsize):
        free, _total = self.cupy.cuda.runtime.memGetInfo()
        free += self.cupy.get_default_memory_pool().free_bytes()
        per_slice = n_j * n_i * (2 * itemsize + 4 * _INT32_ARRAYS_PER_VOXEL) + n_j
        return max(1, int(free * _FREE_MEMORY_FRACTION) // max(1, per_slice))

    def release_memory(self):
        self.stream.synchronize()
        self.cupy.get_default_memory_pool().free_all_blocks()


class GpuBackend:
    """``Backend`` on a CUDA device; output identical to ``CpuBackend`` (row order aside)."""

    name = "gpu"

    def __init__(self):
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        self._local = threading.local()

    def __getstate__(self):  # picklable (e.g. for Dask); streams and buffers are per process
        return {}

    def __setstate__(self, state):
        self.__init__()

    def runner(self) -> CupyRunner:
        """This thread's runner (stream, pinned staging): for on-device benchmarks."""
        run = getattr(self._local, "runner", None)
        if run is None:
            run = self._local.runner = CupyRunner()
        return run

    def slice_components(self, layers: np.ndarray, connectivity: int = 8) -> SliceComponents:
        from gpuconv.backends import gpu_driver as gk
        run = self.runner()
        with run.stream:  # CuPy allocations and ops go on this worker's stream too
            return gk.slice_components(run, layers, connectivity)

    def instances_3d(self, layers: np.ndarray, connectivity3d: int = 26) -> Instances3D:
        from gpuconv.backends import gpu_driver as gk
        run = self.runner()
        with run.stream:
            return gk.instances_3d(run, layers, connectivity3d)
