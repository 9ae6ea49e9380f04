"""GPU backend (CuPy + cuCIM labelling, Numba CUDA reductions).  Not implemented yet: see issue 3.

Until it lands, ``--backend auto`` uses the CPU and ``--backend gpu`` says why it cannot run.
"""

from __future__ import annotations


def unavailable_reason() -> str | None:
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy is not installed (pip install 'gpuconv[gpu]')"
    return "the GPU backend is not implemented in this version"


class GpuBackend:  # pragma: no cover - placeholder replaced by the GPU issue
    name = "gpu"

    def __init__(self):
        raise RuntimeError(unavailable_reason())
