"""Compile every GPU kernel to PTX with the real Numba CUDA compiler (NVVM), no device needed.

The simulator (test_gpu_kernels_sim.py) runs the kernels as Python, so it cannot catch what only
the CUDA compiler rejects: typing of mixed int widths, atomics on a dtype, bool arithmetic.  This
compiles them for sm_90 with the signatures the driver launches.  Skips without NVVM and NVRTC
(``pip install 'gpuconv[gpu-compile]'``) or under the simulator.
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("simulator active", allow_module_level=True)

cuda = pytest.importorskip("numba.cuda")


def _compiler_available() -> bool:
    try:
        from numba.cuda.cudadrv import nvrtc, nvvm
        return bool(nvvm.is_available() and nvrtc.get_supported_ccs())
    except Exception:  # NVVM/NVRTC libraries missing, or another numba-cuda layout
        return False


pytestmark = pytest.mark.skipif(
    not _compiler_available(),
    reason="NVVM/NVRTC not installed (pip install 'gpuconv[gpu-compile]')")


class _H100:
    compute_capability = (9, 0)


@pytest.fixture
def no_device_needed(monkeypatch):
    """Device functions are typed for the current device's compute capability; without a
    device, say sm_90."""
    if not cuda.is_available():
        import numba.cuda.dispatcher as dispatcher
        monkeypatch.setattr(dispatcher, "get_current_device", lambda: _H100())


def _signatures(vdt):
    from numba import types
    A = lambda dt, nd: types.Array(dt, nd, "C")  # noqa: E731
    i32, i64 = A(types.int32, 1), types.int64
    i64t = A(types.int64, 2)
    return {
        "flag_rows": (A(types.uint64, 1), i64, i32),
        "index_rows": (i32, i32, i32, i32),
        "gather_rows": (A(vdt, 1), i32, A(vdt, 2), i32),
        "init_parent": (i32,),
        "union_slices": (A(vdt, 2), i32, i32, i64, types.boolean, i32),
        "resolve_roots": (A(vdt, 2), i32, i32),
        "init_table": (i64t, i64, i64),
        "reduce_slices": (A(vdt, 2), i32, i64, i64, i32, i32, i64t),
        "union_volume": (A(vdt, 2), i32, i32, i64, i64, i32),
        "reduce_volume": (A(vdt, 2), i32, i64, i32, i32, i64t),
    }


@pytest.mark.parametrize("dtype", ["uint8", "int16"])
def test_kernels_compile_to_ptx(no_device_needed, dtype):
    from numba import types

    from gpuconv.backends import gpu_device as gk
    for name, sig in _signatures(getattr(types, dtype)).items():
        ptx, _ = cuda.compile_ptx(getattr(gk, name).py_func, sig, cc=(9, 0))
        assert ".entry" in ptx, name
        if name.startswith(("union", "reduce")):
            assert "atom.global" in ptx, name


def test_numpy_alias_shim_restores_row_stack(monkeypatch):
    """NumPy 2.5 removed np.row_stack, which numba-cuda 0.30.4 overloads at its first kernel
    compilation (seen failing on the GPU machine); the shim must put it back, and only then."""
    import numpy as np

    from gpuconv.backends.numba_compat import restore_numpy_aliases
    original = getattr(np, "row_stack", None)
    if original is not None:
        restore_numpy_aliases()
        assert np.row_stack is original          # present: left alone
    monkeypatch.delattr(np, "row_stack", raising=False)
    with pytest.raises(AttributeError):
        np.row_stack  # noqa: B018
    restore_numpy_aliases()
    assert np.row_stack is np.vstack


class _DeviceArray:
    """Anything exposing __cuda_array_interface__, as CuPy arrays do (no GPU needed)."""

    def __init__(self, shape, dtype, ptr=0x7F0000001000, strides=None):
        import numpy as np
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": np.dtype(dtype).str,
                                         "data": (ptr, False), "strides": strides,
                                         "version": 3}


def _driver_calls():
    """One call per kernel as the driver (``gpu_driver``) makes it (argument kinds and ranks)."""
    D = _DeviceArray
    vr, i4 = D((5, 7), "u1"), D((35,), "i4")
    return {
        "flag_rows": (D((70,), "u8"), 4, D((20,), "i4")),
        "index_rows": (D((20,), "i4"),) * 4,
        "gather_rows": (D((140,), "u1"), D((5,), "i4"), vr, i4),
        "init_parent": (i4,),
        "union_slices": (vr, D((5,), "i4"), D((20,), "i4"), 4, True, i4),
        "resolve_roots": (vr, i4, i4),
        "init_table": (D((7, 3), "i8"), 2, 5),
        "reduce_slices": (vr, D((5,), "i4"), 4, 0, i4, i4, D((7, 3), "i8")),
        "union_volume": (D((5, 7), "i2"), D((5,), "i4"), D((20,), "i4"), 4, 26, i4),
        "reduce_volume": (D((5, 7), "i2"), D((5,), "i4"), 4, i4, i4, D((11, 3), "i8")),
    }


@pytest.mark.parametrize("name", sorted(_driver_calls()))
def test_fast_launch_arguments_match_the_kernel_parameters(no_device_needed, name):
    """kernel_abi packs the arguments of a CuPy launch of a Numba kernel; every value must land
    in the parameter Numba compiled for it: same count, same widths (read from the PTX)."""
    import re

    from gpuconv.backends import gpu_device as gk
    from gpuconv.backends import kernel_abi
    args = _driver_calls()[name]
    key, params = kernel_abi.pack(args)
    ptx, _ = cuda.compile_ptx(getattr(gk, name).py_func, kernel_abi.signature(key), cc=(9, 0))
    entry = ptx[ptx.index(".entry"):]
    entry = entry[:entry.index(")")]
    widths = [int(w) for w in re.findall(r"\.param \.[usb](\d+) ", entry)]
    assert widths == [p.itemsize * 8 for p in params]
    # an array's data pointer and shape sit where Numba's array struct puts them
    first = args[0].__cuda_array_interface__
    ndim = len(first["shape"])
    assert int(params[4]) == first["data"][0]
    assert [int(p) for p in params[5:5 + ndim]] == list(first["shape"])


def test_fast_launch_refuses_what_it_cannot_pack():
    from gpuconv.backends import kernel_abi
    with pytest.raises(kernel_abi.Unsupported):
        kernel_abi.pack([_DeviceArray((4, 6), "u1", strides=(1, 4))])   # Fortran order
    with pytest.raises(kernel_abi.Unsupported):
        kernel_abi.pack([1.5])
    key, params = kernel_abi.pack([_DeviceArray((4, 6), "u1", strides=(6, 1)), 3, False])
    assert key == (("|u1", 2), "i", "b") and [int(p) for p in params[2:4]] == [24, 1]
    assert [int(p) for p in params[7:9]] == [6, 1]     # C strides in bytes


def test_numba_cuda_still_keeps_the_cubin_where_cubin_of_reads_it(no_device_needed, tmp_path):
    """``numba_compat.cubin_of`` is the one use of numba-cuda's private ``_codelibrary``: fail
    here, loudly, when an upgrade moves it (the GPU backend's CuPy launches would break)."""
    import inspect

    from numba.cuda import dispatcher

    from gpuconv.backends.numba_compat import cubin_of
    kernel_cls = getattr(dispatcher, "_Kernel", None)
    assert kernel_cls is not None, "numba.cuda.dispatcher._Kernel is gone"
    assert "_codelibrary" in inspect.getsource(kernel_cls), "_Kernel no longer has _codelibrary"

    class Lib:
        def __init__(self, cubin):
            self.cubin = cubin

        def get_cubin(self):
            return self.cubin

    class Compiled:
        def __init__(self, cubin):
            self._codelibrary = Lib(cubin)

    class ObjectCode:
        def __init__(self, code):
            self.code = code

    path = tmp_path / "k.cubin"
    path.write_bytes(b"\x7fELF-from-file")
    assert cubin_of(Compiled(b"\x7fELF")) == b"\x7fELF"
    assert cubin_of(Compiled(ObjectCode(b"\x7fELF2"))) == b"\x7fELF2"
    assert cubin_of(Compiled(ObjectCode(str(path)))) == b"\x7fELF-from-file"
    with pytest.raises(TypeError):
        cubin_of(Compiled(ObjectCode(None)))
