"""The GPU backend's Numba CUDA kernels and launch driver, run under the CUDA simulator.

NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported, and other test modules
import numba first; so in a normal run this module's only test re-runs this file in a
subprocess with the simulator on, where the real tests below are defined.  Expected values come
from scipy.ndimage.label per value and slice (``reference_components`` in conftest.py).  The
simulator runs every CUDA thread as a Python thread: inputs stay tiny.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

if not SIM:

    def test_kernels_under_cuda_simulator():
        pytest.importorskip("numba.cuda")
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
             "-x", "-ra"], env=env, capture_output=True, text=True, timeout=300,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        assert " passed" in proc.stdout and "skipped" not in proc.stdout.split("\n")[-2]

else:
    from conftest import reference_components

    from gpuconv.backends import gpu_driver as gk
    from gpuconv.backends.base import Instances3D, SliceComponents
    from gpuconv.backends.cpu import CpuBackend

    def as_rows(c: SliceComponents) -> list[tuple]:
        return sorted(zip(*(getattr(c, f).tolist() for f in
                            ("layer", "k", "value", "i0", "i1", "j0", "j1", "pixels"))))

    def reference(layers, connectivity) -> list[tuple]:
        return sorted((layer, *row) for layer in range(layers.shape[0])
                      for row in reference_components(layers[layer], connectivity))

    def check(layers, connectivity, run=None, cpu=True):
        got = gk.slice_components(run or gk.Runner(), layers, connectivity)
        for name, dt in (("layer", np.int32), ("k", np.int32), ("value", np.int64),
                         ("i0", np.int32), ("pixels", np.int64)):
            assert getattr(got, name).dtype == dt, name
        expected = reference(layers, connectivity)
        assert as_rows(got) == expected
        if cpu:
            assert as_rows(CpuBackend().slice_components(layers, connectivity)) == expected
        return got

    def test_unavailable_under_simulator():
        from gpuconv.backends import get_backend, gpu
        assert "simulator" in gpu.unavailable_reason()
        assert get_backend("auto").name == "cpu"

    @pytest.mark.parametrize("connectivity", [4, 8])
    def test_random_multilabel_two_layers(connectivity):
        """Dense random values 0..3 on non-square slices: many touching components of
        different values, long snakes that exercise concurrent unions, empty slice 1."""
        rng = np.random.default_rng(connectivity)
        layers = rng.integers(0, 4, size=(2, 9, 6, 3)).astype(np.uint8)
        layers[:, :, :, 1] = 0
        layers = np.asfortranarray(layers)
        got = check(layers, connectivity)
        assert 1 not in got.k.tolist() and set(got.layer.tolist()) == {0, 1}

    def test_diagonal_neighbours_4_vs_8():
        v = np.zeros((1, 4, 3, 1), np.uint8)   # I=4, J=3
        v[0, 0, 0, 0] = v[0, 1, 1, 0] = 5      # corner-touching, same value
        v[0, 3, 0, 0] = 7
        v[0, 2, 1, 0] = 6                      # corner-touches the 7 but another value
        c4 = check(v, 4)
        c8 = check(v, 8)
        assert len(c4) == 4 and len(c8) == 3
        five = c8.take(np.flatnonzero(c8.value == 5))
        assert (five.i0[0], five.i1[0], five.j0[0], five.j1[0], five.pixels[0]) == (0, 1, 0, 1, 2)

    def test_no_link_across_slices_or_row_wrap():
        """Last row of slice 0 and first row of slice 1 are neighbours in memory (flat row ids
        k*J + j), and the last pixel of a row precedes the first of the next: none may link."""
        I, J, K = 3, 2, 2
        v = np.zeros((1, I, J, K), np.int16)
        v[0, 0, 0, 0] = 9       # slice 0, row 0: 9 . 4
        v[0, 2, 0, 0] = 4
        v[0, 0, 1, 0] = 4       # slice 0, row 1: 4 . .  (its first pixel follows the 4 above)
        v[0, :, 0, 1] = 4       # slice 1, row 0: 4 4 4  (follows slice 0's last row)
        got = check(v, 8)
        assert sorted(got.k.tolist()) == [0, 0, 0, 1]

    def test_signed_and_wide_values():
        v = np.zeros((1, 5, 4, 2), np.int16)
        v[0, 0:2, 0, 0] = -1
        v[0, 2:4, 0, 0] = -32768
        v[0, 4, 3, 1] = 32767
        got = check(v, 4)
        assert sorted(got.value.tolist()) == [-32768, -1, 32767]
        w = np.zeros((1, 3, 2, 1), np.uint32)
        w[0, :, 0, 0] = 4_000_000_000
        assert check(w, 8).value.tolist() == [4_000_000_000]

    def test_big_endian_input():
        v = np.zeros((1, 4, 3, 2), ">u2")
        v[0, 1:3, 1, 1] = 300
        got = check(v, 8, cpu=False)  # nrrdio hands the CPU backend native byte order
        assert got.value.tolist() == [300] and got.k.tolist() == [1]

    def test_empty_volume():
        got = gk.slice_components(gk.Runner(), np.zeros((2, 4, 3, 2), np.uint8), 8)
        assert len(got) == 0 and got.value.dtype == np.int64

    @pytest.mark.parametrize("slab", [1, 2])
    def test_slabs_give_the_same_result(slab):
        rng = np.random.default_rng(7)
        layers = (rng.random((1, 5, 4, 5)) < 0.5).astype(np.uint8) * 2
        got = check(layers, 8, gk.Runner(slab_slices=slab))
        assert set(got.k.tolist()) == set(range(5)) - {k for k in range(5)
                                                       if not layers[0, :, :, k].any()}

    class OomRunner(gk.Runner):
        """A device that cannot hold more than ``fits`` slices: upload raises MemoryError."""

        def __init__(self, fits):
            super().__init__()
            self.fits, self.released, self.sizes = fits, 0, []

        def upload(self, host):
            self.sizes.append(host.shape[0])
            if host.shape[0] > self.fits:
                raise MemoryError("simulated out-of-memory")
            return super().upload(host)

        def release_memory(self):
            self.released += 1

    def test_out_of_memory_halves_the_slab():
        rng = np.random.default_rng(3)
        layers = rng.integers(0, 3, size=(1, 4, 3, 5)).astype(np.uint8)
        run = OomRunner(fits=2)
        check(layers, 8, run)
        assert run.sizes[:3] == [5, 2, 2] and run.released == 1

    def test_out_of_memory_for_one_slice_falls_back_to_cpu():
        rng = np.random.default_rng(4)
        layers = rng.integers(0, 3, size=(1, 4, 3, 3)).astype(np.int8) - 1
        run = OomRunner(fits=0)
        check(layers, 4, run)
        assert run.released >= 3

    # --------------------------------------------------------------------------- 3D instances

    def inst_rows(x: Instances3D) -> list[tuple]:
        return sorted(zip(*(getattr(x, f).tolist() for f in (
            "layer", "value", "voxels", "i0", "i1", "j0", "j1", "k0", "k1",
            "sum_i", "sum_j", "sum_k"))))

    def reference_3d(layers, connectivity3d) -> list[tuple]:
        from scipy import ndimage
        rank = {6: 1, 18: 2, 26: 3}[connectivity3d]
        structure = ndimage.generate_binary_structure(3, rank)
        out = []
        for layer in range(layers.shape[0]):
            vol = layers[layer]
            for value in np.unique(vol):
                if value == 0:
                    continue
                lab, n = ndimage.label(vol == value, structure)
                for idx in range(1, n + 1):
                    ii, jj, kk = np.nonzero(lab == idx)
                    out.append((layer, int(value), len(ii), ii.min(), ii.max(), jj.min(),
                                jj.max(), kk.min(), kk.max(), ii.sum(), jj.sum(), kk.sum()))
        return sorted(tuple(int(x) for x in row) for row in out)

    @pytest.mark.parametrize("connectivity3d", [6, 18, 26])
    def test_instances_3d_random(connectivity3d):
        if not hasattr(gk, "instances_3d"):
            pytest.skip("GPU instances_3d not implemented")
        rng = np.random.default_rng(connectivity3d)
        layers = rng.integers(0, 3, size=(2, 5, 4, 4)).astype(np.int16)
        layers[1] = np.where(rng.random((5, 4, 4)) < 0.3, -2, 0)
        layers[:, :, :, 2] = 0
        got = gk.instances_3d(gk.Runner(), np.asfortranarray(layers), connectivity3d)
        expected = reference_3d(layers, connectivity3d)
        assert inst_rows(got) == expected
        assert inst_rows(CpuBackend().instances_3d(layers, connectivity3d)) == expected

    def test_instances_3d_diagonals():
        """Two voxels touching by an edge link under 18/26, by a corner only under 26."""
        if not hasattr(gk, "instances_3d"):
            pytest.skip("GPU instances_3d not implemented")
        v = np.zeros((1, 3, 3, 3), np.uint8)
        v[0, 0, 0, 0] = v[0, 1, 1, 0] = 1      # edge neighbours in one slice
        v[0, 2, 2, 1] = 1                      # corner neighbour of (1, 1, 0)
        v[0, 0, 2, 2] = 3
        counts = {c: len(gk.instances_3d(gk.Runner(), v, c)) for c in (6, 18, 26)}
        assert counts == {6: 4, 18: 3, 26: 2}

    @pytest.mark.parametrize("runner", ["slab1", "oom2", "oom0"])
    def test_instances_3d_slabs_and_out_of_memory(runner):
        """Slab-wise upload must link across slab borders; a layer that never fits falls back
        to the CPU kernel."""
        run = {"slab1": lambda: gk.Runner(slab_slices=1), "oom2": lambda: OomRunner(fits=2),
               "oom0": lambda: OomRunner(fits=0)}[runner]()
        rng = np.random.default_rng(21)
        layers = np.where(rng.random((1, 4, 3, 5)) < 0.55, 6, 0).astype(np.uint8)
        layers[0, 1, 1, :] = 6                   # a column through every slice
        got = gk.instances_3d(run, layers, 6)
        assert inst_rows(got) == reference_3d(layers, 6)
        assert any(k0 == 0 and k1 == 4 for k0, k1 in zip(got.k0, got.k1))

    class SimGpuBackend:
        """The GPU driver on the simulator, behind the Backend interface the pipeline uses."""

        name = "gpu"

        def slice_components(self, layers, connectivity=8):
            return gk.slice_components(gk.Runner(slab_slices=2), layers, connectivity)

        def instances_3d(self, layers, connectivity3d=26):
            return gk.instances_3d(gk.Runner(slab_slices=2), layers, connectivity3d)

    def test_convert_through_the_driver_is_byte_identical(tmp_path):
        """The whole pipeline (read, label, boxes, writers) with the GPU driver vs the CPU."""
        import importlib.util
        from pathlib import Path

        import gpuconv
        from gpuconv.dataset.synth import synth_corpus
        root = Path(__file__).resolve().parents[1]
        spec = importlib.util.spec_from_file_location("gpu_parity",
                                                      root / "benchmarks" / "gpu_parity.py")
        parity = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(parity)
        synth_corpus(tmp_path / "in", n=2, shape=(14, 11, 4), seed=2)
        outs = []
        for name, be in (("cpu", "cpu"), ("sim", SimGpuBackend())):
            s = gpuconv.convert([str(tmp_path / "in")], tmp_path / name, backend=be,
                                workers=1, progress=False, split_csv=tmp_path / "in" / "split.csv")
            assert s["failed"] == 0 and s["boxes"] > 0
            outs.append(tmp_path / name)
        assert parity.compare_trees(*outs) == []
