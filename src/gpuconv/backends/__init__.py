"""Backend selection.  ``cpu`` always works; ``gpu`` needs CuPy and a CUDA device (own Numba CUDA
kernels, no cuCIM).

The GPU module is imported only when asked for, so a CPU-only install never touches CuPy.
"""

from __future__ import annotations

from gpuconv.backends.base import Backend, Instances3D, SliceComponents
from gpuconv.backends.cpu import CpuBackend
from gpuconv.errors import OptionError

__all__ = ["Backend", "CpuBackend", "Instances3D", "SliceComponents", "backend_from",
           "get_backend", "gpu_unavailable_reason"]

BACKEND_NAMES = ("auto", "cpu", "gpu")


def gpu_unavailable_reason() -> str | None:
    """None when the GPU backend can run here, else a one-line reason."""
    try:
        from gpuconv.backends import gpu
    except ImportError as exc:  # the module itself is missing or broken
        return f"GPU backend unavailable ({exc})"
    return gpu.unavailable_reason()


def backend_from(spec) -> Backend:
    """A backend for ``spec``: a name (see ``get_backend``) or a Backend object, returned as
    it is (the simulator's driver in the tests, a backend a caller already holds)."""
    return get_backend(spec) if isinstance(spec, str) else spec


def get_backend(name: str = "auto") -> Backend:
    """``cpu``, ``gpu`` (fails clearly without a device) or ``auto`` (GPU if usable, else CPU)."""
    if not isinstance(name, str):
        raise OptionError("backend", f"a backend name (auto, cpu, gpu), got {name!r}; "
                                     "backend_from() also takes Backend objects")
    name = name.lower()
    if name not in BACKEND_NAMES:
        raise OptionError("backend", f"unknown backend '{name}' (choose from "
                                     f"{', '.join(BACKEND_NAMES)})")
    if name == "cpu":
        return CpuBackend()
    reason = gpu_unavailable_reason()
    if reason is None:
        from gpuconv.backends.gpu import GpuBackend
        return GpuBackend()
    if name == "gpu":
        raise OptionError("backend", f"'gpu' cannot run here: {reason}")
    return CpuBackend()
