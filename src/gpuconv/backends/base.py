"""The seam between orchestration and compute: what every backend takes and returns.

A backend sees only integer arrays and returns only plain NumPy arrays (host memory), so writers
never know which backend ran.  Row order inside a result is unspecified; ``canonical_order``
in ``gpuconv.results.boxes`` sorts it, which is what makes CPU and GPU output byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np

#: The one column order of a component table wherever it travels as one array (the GPU's
#: (columns, n) tables, the CPU 3D kernel's (n, columns) array); the names are the fields of
#: ``SliceComponents`` and ``Instances3D`` (tests/test_architecture.py checks they agree).
SLICE_COLUMNS = ("k", "value", "i0", "i1", "j0", "j1", "pixels")
INSTANCE_COLUMNS = ("value", "voxels", "i0", "i1", "j0", "j1", "k0", "k1", "sum_i", "sum_j",
                    "sum_k")


@dataclass
class SliceComponents:
    """One row per 2D connected component (pixels of one label value on one slice).

    Coordinates are voxel indices, bounds inclusive: the component covers columns i0..i1 and
    rows j0..j1 of slice k of layer ``layer``.
    """

    layer: np.ndarray   # int32
    k: np.ndarray       # int32, slice index
    value: np.ndarray   # int64, the label value the component carries
    i0: np.ndarray      # int32
    i1: np.ndarray
    j0: np.ndarray
    j1: np.ndarray
    pixels: np.ndarray  # int64, pixel count

    def __len__(self) -> int:
        return len(self.k)

    @classmethod
    def empty(cls) -> "SliceComponents":
        return cls.concat([])

    @classmethod
    def concat(cls, parts: list["SliceComponents"]) -> "SliceComponents":
        dtypes = {"layer": np.int32, "k": np.int32, "value": np.int64, "pixels": np.int64}
        out = {}
        for f in fields(cls):
            dt = dtypes.get(f.name, np.int32)
            arrays = [getattr(p, f.name) for p in parts]
            out[f.name] = (np.concatenate(arrays).astype(dt, copy=False) if arrays
                           else np.zeros(0, dt))
        return cls(**out)

    def take(self, index: np.ndarray) -> "SliceComponents":
        return SliceComponents(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass
class Instances3D:
    """One row per 3D connected component (voxels of one label value in one layer).

    Semantics every backend must reproduce exactly (the CPU kernel in ``cpu_kernels3d.py`` is
    the reference; tests/test_instances3d.py checks it against scipy.ndimage.label):
    - a component is a maximal set of voxels of one layer holding the same non-zero value,
      linked through neighbours of ``connectivity3d``: 6 = faces, 18 = faces + edges,
      26 = faces + edges + corners (default).  Different values never link, even when touching;
      different layers never link;
    - ``value`` is the value as the file holds it (signed types stay signed);
    - bounds are inclusive voxel indices on the (I, J, K) axes; ``sum_*`` are exact int64 sums
      of the member voxels' indices (centroid = sum / voxels, computed by the caller);
    - row order is unspecified: ``gpuconv.results.instances`` sorts rows canonically, which is what
      makes CPU and GPU instance files byte-identical.
    """

    layer: np.ndarray   # int32
    value: np.ndarray   # int64
    voxels: np.ndarray  # int64
    i0: np.ndarray      # int32 bounds, inclusive
    i1: np.ndarray
    j0: np.ndarray
    j1: np.ndarray
    k0: np.ndarray
    k1: np.ndarray
    sum_i: np.ndarray   # int64 sums of voxel indices, for exact centroids
    sum_j: np.ndarray
    sum_k: np.ndarray

    _DTYPES = {"layer": np.int32, "value": np.int64, "voxels": np.int64, "sum_i": np.int64,
               "sum_j": np.int64, "sum_k": np.int64}  # every other field is int32

    def __len__(self) -> int:
        return len(self.voxels)

    @classmethod
    def empty(cls) -> "Instances3D":
        return cls.concat([])

    @classmethod
    def concat(cls, parts: list["Instances3D"]) -> "Instances3D":
        out = {}
        for f in fields(cls):
            dt = cls._DTYPES.get(f.name, np.int32)
            arrays = [getattr(p, f.name) for p in parts]
            out[f.name] = (np.concatenate(arrays).astype(dt, copy=False) if arrays
                           else np.zeros(0, dt))
        return cls(**out)

    def take(self, index: np.ndarray) -> "Instances3D":
        return Instances3D(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


class Backend(Protocol):
    """What a compute backend provides.  ``layers`` is (L, I, J, K) as read (see nrrdio)."""

    name: str

    def slice_components(self, layers: np.ndarray, connectivity: int = 8) -> SliceComponents:
        """2D components on every slice k, linking only equal non-zero values.

        ``connectivity`` is 4 (edges) or 8 (edges and corners).
        """
        ...

    def instances_3d(self, layers: np.ndarray, connectivity3d: int = 26) -> Instances3D:
        """3D components of every layer, linking only equal non-zero values (see Instances3D).

        ``connectivity3d`` is 6 (faces), 18 (faces, edges) or 26 (faces, edges, corners).
        """
        ...
