"""The CPU backend against scipy on volumes built to hit its fast paths: rows read as 64-bit
words (widths that are whole words for each dtype), runs of zero words inside occupied rows,
components straddling word boundaries, and widths where the word view is not possible."""

import numpy as np
import pytest

from gpuconv.backends.cpu import CpuBackend
from conftest import reference_components


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
@pytest.mark.parametrize("width", [8, 16, 72, 13])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_matches_scipy_on_sparse_rows(dtype, width, connectivity):
    rng = np.random.default_rng(width * 7 + np.dtype(dtype).itemsize)
    vol = np.zeros((width, 9, 6), dtype)                  # (I, J, K)
    mask = rng.random(vol.shape) < 0.08
    vol[mask] = rng.integers(1, 4, mask.sum()).astype(dtype)
    vol[6:10, 2, 1] = 2                                   # a bar across a uint8 word boundary
    vol[width - 1, 8, 5] = 3                              # the last pixel of the last row
    if np.dtype(dtype).kind == "i":
        vol[0, 0, 0] = -5
    layers = np.asfortranarray(vol[None])
    got = CpuBackend().slice_components(layers, connectivity)
    rows = sorted(zip(got.k.tolist(), got.value.tolist(), got.i0.tolist(), got.i1.tolist(),
                      got.j0.tolist(), got.j1.tolist(), got.pixels.tolist()))
    assert rows == sorted(reference_components(vol, connectivity))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_worst_case_every_pixel_its_own_run(connectivity):
    """Alternating values on every pixel: as many runs as pixels, and diagonal links only."""
    I, J = 16, 6
    ii, jj = np.meshgrid(np.arange(I), np.arange(J), indexing="ij")
    vol = ((ii + jj) % 2 + 1).astype(np.uint8)[:, :, None]   # a checkerboard of 1 and 2
    got = CpuBackend().slice_components(np.asfortranarray(vol[None]), connectivity)
    rows = sorted(zip(got.k.tolist(), got.value.tolist(), got.i0.tolist(), got.i1.tolist(),
                      got.j0.tolist(), got.j1.tolist(), got.pixels.tolist()))
    assert rows == sorted(reference_components(vol, connectivity))
    assert len(rows) == (2 if connectivity == 8 else I * J)
