"""GPU backend: selection and fallback (run everywhere) and CPU/GPU parity (``gpu`` marker,
skipped without CuPy and a CUDA device).

Parity is byte-for-byte on ``convert`` outputs, compared by ``compare_trees`` from
benchmarks/gpu_parity.py (itself checked here on two CPU runs, so the comparison that certifies
the GPU can be trusted to see a difference).  The kernels' correctness against scipy is covered
without a device by test_gpu_kernels_sim.py.
"""

from __future__ import annotations

import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

import gpuconv
from gpuconv.errors import InputError
from gpuconv.backends import get_backend, gpu_unavailable_reason

ROOT = Path(__file__).resolve().parents[1]
REASON = gpu_unavailable_reason()
needs_gpu = pytest.mark.skipif(REASON is not None, reason=f"no GPU backend: {REASON}")


def _parity_module():
    spec = importlib.util.spec_from_file_location("gpu_parity",
                                                  ROOT / "benchmarks" / "gpu_parity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_missing_cupy_falls_back(monkeypatch):
    from gpuconv.backends import gpu
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    monkeypatch.setitem(sys.modules, "cupy", None)   # makes ``import cupy`` raise ImportError
    gpu.unavailable_reason.cache_clear()
    try:
        assert get_backend("auto").name == "cpu"
        with pytest.raises(InputError, match=r"backend: 'gpu' cannot run here: CuPy is not "):
            get_backend("gpu")
        with pytest.raises(RuntimeError, match="CuPy is not installed"):
            gpu.GpuBackend()
    finally:
        gpu.unavailable_reason.cache_clear()


def test_auto_follows_availability():
    if REASON is None:
        assert get_backend("auto").name == "gpu"
    else:
        assert get_backend("auto").name == "cpu"
        with pytest.raises(InputError, match="backend: 'gpu' cannot run here"):
            get_backend("gpu")


def test_compare_trees_sees_a_changed_byte(tmp_path):
    from gpuconv.dataset.synth import synth_corpus
    synth_corpus(tmp_path / "in", n=2, shape=(40, 32, 6), seed=3)
    outs = [tmp_path / name for name in ("a", "b")]
    for o in outs:
        gpuconv.convert([str(tmp_path / "in")], o, backend="cpu", progress=False,
                        split_csv=tmp_path / "in" / "split.csv")
    mod = _parity_module()
    assert mod.compare_trees(*outs) == []
    label = sorted((outs[1] / "labels").rglob("*.txt"))[0]
    text = label.read_text()
    label.write_text(text[:-2] + ("0" if text[-2] != "0" else "1") + text[-1])
    assert mod.compare_trees(*outs) == [f"content differs: {label.relative_to(outs[1]).as_posix()}"]


# ------------------------------------------------------------------------------- on a device


def _table(obj) -> np.ndarray:
    t = np.stack([np.asarray(getattr(obj, f.name), np.int64) for f in fields(obj)], 1)
    return t[np.lexsort(t.T[::-1])]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("connectivity", [8, 4])
def test_convert_parity_synthetic(tmp_path, connectivity):
    from gpuconv.dataset.synth import synth_corpus
    synth_corpus(tmp_path / "in", n=4, shape=(160, 128, 24), seed=11)
    outs = []
    for be in ("cpu", "gpu"):
        o = tmp_path / be
        s = gpuconv.convert([str(tmp_path / "in")], o, backend=be, progress=False,
                            connectivity=connectivity, split_csv=tmp_path / "in" / "split.csv")
        assert s["backend"] == be and s["failed"] == 0 and s["boxes"] > 0
        outs.append(o)
    assert _parity_module().compare_trees(*outs) == []


@pytest.mark.gpu
@needs_gpu
def test_convert_parity_gpu_worker_processes(tmp_path):
    """--pool process with --backend gpu: a CUDA context per worker process (forkserver, so none
    is inherited across a fork); the files equal the CPU backend's."""
    from gpuconv.dataset.synth import synth_corpus
    synth_corpus(tmp_path / "in", n=6, shape=(160, 128, 24), seed=12)
    outs = []
    for be, pool in (("cpu", "thread"), ("gpu", "process")):
        o = tmp_path / f"{be}-{pool}"
        s = gpuconv.convert([str(tmp_path / "in")], o, backend=be, pool=pool, workers=3,
                            progress=False, fmt="boxes,table", instances=True,
                            split_csv=tmp_path / "in" / "split.csv")
        assert s["pool"] == pool and s["failed"] == 0 and s["boxes"] > 0, s["failures"]
        outs.append(o)
    assert _parity_module().compare_trees(*outs) == []


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", ["Segmentation.seg.nrrd", "SegmentationOverlapping.seg.nrrd"])
def test_convert_parity_slicer_files(tmp_path, slicer_data, name):
    outs = []
    for be in ("cpu", "gpu"):
        o = tmp_path / be
        s = gpuconv.convert([str(slicer_data / name)], o, backend=be, progress=False,
                            val_fraction=0.0)
        assert s["failed"] == 0 and s["boxes"] > 0
        outs.append(o)
    assert _parity_module().compare_trees(*outs) == []


def _random_layers(rng, dtype, shape=(2, 67, 45, 9)):
    layers = rng.integers(0, 4, size=shape).astype(dtype)
    layers[rng.random(shape) < 0.6] = 0
    layers[:, :, :, 3] = 0                                   # an empty slice
    if np.dtype(dtype).kind == "i":
        layers[layers == 3] = -3
    return np.asfortranarray(layers)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint32])
def test_backend_calls_match_cpu(dtype):
    rng = np.random.default_rng(5)
    layers = _random_layers(rng, dtype)
    cpu, gpu = get_backend("cpu"), get_backend("gpu")
    for conn in (4, 8):
        assert np.array_equal(_table(gpu.slice_components(layers, conn)),
                              _table(cpu.slice_components(layers, conn)))
    for conn in (6, 18, 26):
        assert np.array_equal(_table(gpu.instances_3d(layers, conn)),
                              _table(cpu.instances_3d(layers, conn)))


@pytest.mark.gpu
@needs_gpu
def test_small_slabs_and_threads_match_cpu(monkeypatch):
    """One slice per slab (as on a nearly full device) and four worker threads sharing the
    backend, each with its own stream and pinned buffer."""
    from gpuconv.backends import gpu as gpu_mod
    monkeypatch.setattr(gpu_mod.CupyRunner, "slab_slices", lambda self, *a: 1)
    rng = np.random.default_rng(9)
    vols = [_random_layers(rng, np.uint8, (1, 120, 90, 7)) for _ in range(8)]
    cpu, gpu = get_backend("cpu"), get_backend("gpu")
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda v: gpu.slice_components(v, 8), vols))
        got3 = list(pool.map(lambda v: gpu.instances_3d(v, 26), vols))
    for v, g, g3 in zip(vols, got, got3):
        assert np.array_equal(_table(g), _table(cpu.slice_components(v, 8)))
        assert np.array_equal(_table(g3), _table(cpu.instances_3d(v, 26)))


@pytest.mark.gpu
@needs_gpu
def test_kernels_launched_through_cupy_match_numba_launches():
    """kernel_abi's CuPy launch of the Numba kernels is what runs by default: it must really be
    used (no silent fallback) and give what Numba's own launcher and the CPU backend give."""
    from gpuconv.backends import gpu_driver as gk
    from gpuconv.backends.gpu import CupyRunner
    rng = np.random.default_rng(5)
    layers = np.zeros((1, 190, 150, 9), np.uint8, order="F")
    layers[0][rng.random(layers.shape[1:]) < 0.04] = rng.integers(1, 5, 1)
    layers[0, 20:60, 30:90, 2:7] = 3
    fast, numba_launch = CupyRunner(), CupyRunner()
    numba_launch.fast_launch = False
    got = {}
    for name, run in (("fast", fast), ("numba", numba_launch)):
        with run.stream:
            got[name] = (_table(gk.slice_components(run, layers, 8)),
                         _table(gk.instances_3d(run, layers, 26)))
    from gpuconv.backends import gpu as gpu_module
    assert fast.fast_launch and len(gpu_module._FUNCTIONS) >= 8
    cpu = get_backend("cpu")
    expected = (_table(cpu.slice_components(layers, 8)), _table(cpu.instances_3d(layers, 26)))
    for name in got:
        assert all(np.array_equal(a, b) for a, b in zip(got[name], expected)), name
