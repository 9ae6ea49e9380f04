"""Segmentation agreement: Dice and 95th-percentile Hausdorff distances, CPU or GPU.

Why: the ASOCA coronary dataset validates its labels by comparing each annotator with the
majority-vote consensus by Dice and HD95, and its challenge ranks methods the same way.  HD95
is computed differently by different tools, so each definition has a name (sources and
formulas in docs/agreement.md):

``asoca_challenge`` (voxel units)
    Exactly the ASOCA challenge's ``evaluation.py`` (ramtingh/ASOCA_MICCAI2020_Evaluation,
    ``hausdorff_95``): both volumes thresholded ``> 0.5``, **all** foreground voxel *indices*
    (``np.where``, cast to uint16), nearest neighbours both ways (cKDTree there, an exact
    distance transform with unit sampling here: the same Euclidean index distances),
    HD95 = max(np.quantile(A->B, 0.95), np.quantile(B->A, 0.95)).  The spacing is never
    applied, so on anisotropic grids the number is in voxel steps, not mm.
``asoca_mm``
    The same construction in mm (``sampling = spacing``).  ``asoca`` is a deprecated alias of
    it (gpuconv's ``hd95_asoca`` before the definitions were split).
``medpy``
    ``medpy.metric.binary.hd95``: surface voxels only (mask XOR its erosion by the
    6-neighbourhood, voxels on the array border count as surface), distances (mm) from A's
    surface voxels to the nearest surface voxel of B and vice versa; HD95 = P95 of the two
    sets pooled.
``surface``
    The same surface distances (mm), HD95 = max(P95(A->B), P95(B->A)).

P95 is ``numpy.quantile(d, 0.95)`` (linear interpolation; = ``numpy.percentile(d, 95)``).
Distances are exact Euclidean distance transforms (anisotropic voxels handled exactly, axes
assumed orthogonal), computed on the union bounding box of A and B: every voxel of either mask
lies inside that box, so the nearest voxel of the other mask does too, and the box changes no
distance (surface voxels neither: outside the box there is only background, which is what the
erosion's zero border assumes).  An axis longer than 65536 voxels (where the challenge's uint16
cast wraps indices) sends ``asoca_challenge`` to the literal cKDTree reproduction.

Empty masks (gpuconv's rule for every definition; no NaN, no exception):
    both empty -> dice 1.0, every HD95 0.0, ``empty = "both"``;
    one empty  -> dice 0.0, every HD95 +inf (JSON: null), ``empty = "a"`` or ``"b"``.
(The challenge script itself refuses an empty submission with ValueError and fails with an
IndexError on an empty reference.)

Distances: ``cpu`` takes the all-voxel HD95 (``asoca_challenge``, ``asoca_mm``) from
``distance_methods.all_voxel_hd95`` when the spacing is dyadic (exact in float64): voxels inside
the other mask are at 0, the rest search integer offsets nearest first (``nearest_shells``),
stopping once the ranks ``np.quantile`` reads are known, and what a far-apart pair leaves open
goes to a k-d tree over the other mask's surface voxels or to the EDT -- the same numbers
bit for bit; otherwise, and for the surface definitions, it uses the k-d tree or the Numba
EDT in ``edt.py`` (exact, float64, ~8x faster than SciPy here).  ``scipy`` uses
``scipy.ndimage.distance_transform_edt(sampling=...)``; ``gpu`` runs the same code with CuPy
arrays and ``cupyx.scipy.ndimage`` (or cuCIM's EDT) with ``float64_distances=True``.
Percentiles are always taken on the host with NumPy, so every path shares one percentile rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

HD95_DEFINITIONS = {
    "asoca_challenge": "ASOCA challenge evaluation.py exactly: all foreground voxel indices "
                       "(> 0.5), nearest neighbours both ways, max of the two "
                       "np.quantile(., 0.95); VOXEL units (spacing not applied)",
    "asoca_mm": "the ASOCA challenge construction in mm: all foreground voxels, nearest-"
                "neighbour distances both ways (mm), max of the two 95th percentiles",
    "medpy": "medpy.metric.binary.hd95: surface voxels (6-neighbourhood erosion), distances to "
             "the other surface both ways (mm), 95th percentile of the pooled set",
    "surface": "surface voxels (6-neighbourhood erosion), distances to the other surface both "
               "ways (mm), max of the two 95th percentiles",
}
HD95_UNITS = {"asoca_challenge": "voxel", "asoca_mm": "mm", "medpy": "mm", "surface": "mm"}
# deprecated names -> current definition (the result keeps the key the caller asked for)
HD95_ALIASES = {"asoca": "asoca_mm"}
DEFAULT_HD95 = "asoca_mm"                                 # hd95() and compare_masks(): mm
CLI_DEFAULT_HD95 = ("asoca_challenge", "asoca_mm")        # ``gpuconv agree`` shows both
DICE_DEFINITION = "2|A and B| / (|A| + |B|) over voxels; 1.0 when both are empty"
EMPTY_RULE = ("both empty: dice 1.0, hd95 0.0; one empty: dice 0.0, hd95 inf "
              "(JSON null; see 'empty')")
UINT16_AXIS = 1 << 16
QUANTILE = 0.95
PERCENTILE = 95.0   # the same rule as a percentile


@dataclass(frozen=True)
class ArrayOps:
    """The array library a computation runs on: NumPy + SciPy, or CuPy + cupyx/cuCIM."""

    name: str
    xp: object                                   # numpy or cupy
    nearest: Callable                            # (target, at, spacing) -> host float64 mm
    erode: Callable                              # mask -> 6-neighbourhood erosion, zero border
    # (a, b, spacing) -> hd95_all_voxels(*directed_all_voxels(a, b, spacing, ops)), the same
    # number by a cheaper route (CPU: distance_methods.all_voxel_hd95); None: that formula
    hd95_all: Callable | None = None


def _scipy_erode(mask):
    from scipy import ndimage as ndi
    return ndi.binary_erosion(mask, structure=ndi.generate_binary_structure(mask.ndim, 1),
                              iterations=1, border_value=0)


def cpu_ops() -> ArrayOps:
    """Numba EDT (``edt.py``); only the sampled squared distances get a square root."""
    def nearest(target, at, spacing):
        from gpuconv.analysis.edt import squared_distance_to  # Numba: only when an EDT runs
        while target.ndim < 3:  # the Numba EDT is 3D; a unit axis changes no distance
            target, at, spacing = target[..., None], at[..., None], (*spacing, 1.0)
        return np.sqrt(squared_distance_to(target, spacing)[at])

    return ArrayOps("cpu", np, nearest, _scipy_erode)


def scipy_ops() -> ArrayOps:
    """SciPy's EDT: slower, kept as the reference CPU path (``backend="scipy"``)."""
    from scipy import ndimage as ndi

    def nearest(target, at, spacing):
        return ndi.distance_transform_edt(~target, sampling=spacing)[at]

    return ArrayOps("scipy", np, nearest, _scipy_erode)


def gpu_unavailable_reason() -> str | None:
    """None when this module's GPU path can run (CuPy, a device, a GPU EDT), else why not."""
    from gpuconv.backends.gpu import cupy_device_reason
    reason = cupy_device_reason()
    if reason is not None:
        return reason
    if _gpu_edt() is None:
        return "neither cupyx.scipy.ndimage.distance_transform_edt (CuPy >= 13) nor cuCIM found"
    return None


def _gpu_edt():
    try:
        from cupyx.scipy.ndimage import distance_transform_edt
        return distance_transform_edt
    except ImportError:
        pass
    try:
        from cucim.core.operations.morphology import distance_transform_edt
        return distance_transform_edt
    except ImportError:
        return None


def gpu_ops() -> ArrayOps:
    """CuPy path (lazy imports).  Not run in this project's CI: there is no GPU there."""
    reason = gpu_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"GPU agreement unavailable: {reason}")
    import cupy
    from cupyx.scipy import ndimage as cndi
    dt = _gpu_edt()

    def nearest(target, at, spacing):
        d = dt(~target, sampling=tuple(float(s) for s in spacing), float64_distances=True)
        return cupy.asnumpy(d[at])

    def erode(mask):
        return cndi.binary_erosion(mask, structure=cndi.generate_binary_structure(mask.ndim, 1),
                                   iterations=1, border_value=0)

    return ArrayOps("gpu", cupy, nearest, erode)


def get_ops(backend: str | ArrayOps = "cpu") -> ArrayOps:
    if isinstance(backend, ArrayOps):
        return backend
    makers = {"cpu": cpu_ops, "scipy": scipy_ops, "gpu": gpu_ops}
    if backend not in makers:
        raise ValueError(f"backend must be one of {', '.join(makers)} here, got '{backend}'")
    return makers[backend]()


def check_definitions(names: Sequence[str]) -> list[str]:
    """Known definition names (aliases included, kept as given), without repeats."""
    out = []
    for n in names:
        if n not in HD95_DEFINITIONS and n not in HD95_ALIASES:
            raise ValueError(f"unknown HD95 definition '{n}' (choose from "
                             f"{', '.join(HD95_DEFINITIONS)})")
        if n not in out:
            out.append(n)
    return out


def canonical(name: str) -> str:
    """The definition an (alias) name stands for."""
    return HD95_ALIASES.get(name, name)


def definition_text(name: str) -> str:
    if name in HD95_ALIASES:
        return (f"deprecated alias of {HD95_ALIASES[name]}: "
                + HD95_DEFINITIONS[HD95_ALIASES[name]])
    return HD95_DEFINITIONS[name]


def unit(name: str) -> str:
    return HD95_UNITS[canonical(name)]


def warn_aliases(names: Sequence[str]) -> None:
    import warnings
    for n in names:
        if n in HD95_ALIASES:
            warnings.warn(f"HD95 definition '{n}' is deprecated: it is '{HD95_ALIASES[n]}' (mm); "
                          "the ASOCA challenge's own number is 'asoca_challenge' (voxels)",
                          DeprecationWarning, stacklevel=3)


def _f_ordered(a: np.ndarray, b: np.ndarray) -> bool:
    return (a.ndim > 1 and a.flags.f_contiguous and b.flags.f_contiguous
            and not a.flags.c_contiguous)


def _has_true(flat: np.ndarray) -> bool:
    return bool(flat.size) and bool(flat[int(flat.argmax())])    # argmax stops at a True


def _slab_bounds(m: np.ndarray) -> tuple[int, int] | None:
    """First and last index along axis 0 of a C-contiguous mask holding a True: ``argmax``
    from the front (it stops at the first True) and slab by slab from the back."""
    flat = m.reshape(-1)
    if not _has_true(flat):
        return None
    per = max(1, flat.size // m.shape[0])
    lo = int(flat.argmax()) // per
    step = max(1, (1 << 16) // per)
    end = m.shape[0]
    while end > lo:
        start = max(lo, end - step)
        if _has_true(m[start:end].reshape(-1)):
            for i in range(end - 1, start - 1, -1):
                if _has_true(m[i].reshape(-1)):
                    return lo, i
        end = start
    return lo, lo


def _ends(p: np.ndarray) -> tuple[int, int] | None:
    """First and last index of a True in a 1D projection, or None."""
    hit = np.flatnonzero(p)
    return (int(hit[0]), int(hit[-1])) if hit.size else None


def _bounds(m: np.ndarray) -> list[tuple[int, int]] | None:
    """(first, last) index of True per axis, or None when ``m`` is empty.  C-contiguous 3D: the
    first/last slab holding a True (see _slab_bounds), then one projection of the slabs
    between; else projections, no temporary volume."""
    if m.ndim == 3 and m.flags.c_contiguous:
        ends = _slab_bounds(m)
        if ends is None:
            return None
        p12 = m[ends[0]:ends[1] + 1].any(axis=0)
        return [ends, _ends(p12.any(axis=1)), _ends(p12.any(axis=0))]
    if m.ndim == 3:
        p01 = m.any(axis=2)
        proj = [p01.any(axis=1), p01.any(axis=0), m.any(axis=(0, 1))]
    else:
        proj = [m.any(axis=tuple(x for x in range(m.ndim) if x != axis))
                for axis in range(m.ndim)]
    out = [_ends(p) for p in proj]
    return None if None in out else out


def union_box(a: np.ndarray, b: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the bounding box holding every foreground voxel of ``a`` or ``b`` (None when
    both are empty).  Host arrays only: it runs before the crop is sent to a device."""
    ba, bb = _bounds(np.asarray(a)), _bounds(np.asarray(b))
    if ba is None and bb is None:
        return None
    parts = [x for x in (ba, bb) if x is not None]
    return tuple(slice(max(min(p[axis][0] for p in parts) - margin, 0),
                       min(max(p[axis][1] for p in parts) + 1 + margin, n))
                 for axis, n in enumerate(np.shape(a)))


def _p95(d) -> float:
    return float(np.quantile(d, QUANTILE))


def directed_all_voxels(a, b, spacing, ops: ArrayOps) -> tuple[np.ndarray, np.ndarray]:
    """All-voxel nearest-neighbour distances (A->B, B->A) on the host, in the units of
    ``spacing`` (1.0 per axis: voxel index units)."""
    return ops.nearest(b, a, spacing), ops.nearest(a, b, spacing)


def hd95_all_voxels(a_to_b, b_to_a) -> float:
    """max of the two directed 95th percentiles (the ASOCA construction)."""
    return max(_p95(a_to_b), _p95(b_to_a))


def _hd95_all_voxels(a, b, spacing, ops: ArrayOps) -> float:
    if ops.hd95_all is not None:
        return ops.hd95_all(a, b, spacing)
    return hd95_all_voxels(*directed_all_voxels(a, b, spacing, ops))


def _count_both(a: np.ndarray, b: np.ndarray, block: int = 1 << 22) -> int:
    """``count_nonzero(a & b)`` a slab at a time (no temporary volume)."""
    if a.ndim == 0 or a.size <= block:
        return int(np.count_nonzero(a & b))
    per = max(1, block // max(1, a[0].size))
    return sum(int(np.count_nonzero(a[i:i + per] & b[i:i + per]))
               for i in range(0, a.shape[0], per))


def asoca_challenge_kdtree(submission, groundtruth) -> float:
    """The challenge's ``hausdorff_95`` itself, on its literal path (uint16 indices, cKDTree);
    both masks must be non-empty.  Used for arrays with an axis over 65536 voxels (where the
    uint16 cast wraps) and as a reference."""
    from scipy.spatial import cKDTree
    sub = np.array(np.where(np.asarray(submission) > 0.5), dtype=np.uint16).T
    gt = np.array(np.where(np.asarray(groundtruth) > 0.5), dtype=np.uint16).T
    d1, _ = cKDTree(sub).query(gt)
    d2, _ = cKDTree(gt).query(sub)
    return float(max(np.quantile(d1, QUANTILE), np.quantile(d2, QUANTILE)))


def hd95_asoca_challenge(submission, groundtruth, backend: str = "cpu") -> float:
    """The ASOCA challenge's HD95 of two volumes (voxel units; thresholded ``> 0.5`` as the
    challenge does); gpuconv's empty rule (0.0 both empty, +inf one empty)."""
    sub = np.asarray(submission) > 0.5
    gt = np.asarray(groundtruth) > 0.5
    return compare_masks(sub, gt, 1.0, ("asoca_challenge",), backend=backend)[
        "hd95_asoca_challenge"]


def compare_masks(a, b, spacing, definitions: Sequence[str] = (DEFAULT_HD95,),
                  backend: str | ArrayOps = "cpu", crop: bool = True) -> dict:
    """Dice and HD95 (one key ``hd95_<name>`` per definition, in ``unit(name)``: mm, or voxel
    steps for ``asoca_challenge``) of two boolean masks.

    ``a``/``b``: same-shape arrays (NumPy; with the GPU backend they are cropped on the host
    and the crop is copied to the device).  ``spacing``: voxel size per axis in mm.
    Returns ``voxels_a``, ``voxels_b``, ``intersection``, ``empty`` ('none', 'a', 'b',
    'both'), ``dice`` and the HD95 values (floats; +inf when exactly one mask is empty).
    """
    definitions = check_definitions(definitions)
    warn_aliases(definitions)
    wanted = {canonical(d) for d in definitions}
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (a.ndim,)))
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")

    if crop and _f_ordered(a, b):
        from gpuconv.analysis.distance_methods import exact_spacing
        if exact_spacing(spacing, a.shape):
            # decoded NRRD volumes are Fortran-ordered: work on the C-ordered transposes (views)
            # with the spacing reversed instead of a transposing copy of each mask (0.3 s and
            # a volume of memory each).  Distances are the same set; with exact (dyadic)
            # spacings every sum is exact, so every number is bit for bit the same.
            a, b, spacing = a.T, b.T, spacing[::-1]
    box = union_box(a, b) if crop else tuple(slice(0, n) for n in a.shape)
    if box is None:
        return _result(0, 0, 0, definitions, {})
    ops = get_ops(backend)
    if crop:  # CPU: k-d tree over surface points or EDT, per call, same numbers (distance_methods)
        from gpuconv.analysis.distance_methods import keep_whole, with_method_choice
        ops = with_method_choice(ops)
        box = keep_whole(box, a.shape, ops)  # a box of most of the volume: no copy of it
    xp = ops.xp
    shape, full_a, full_b = a.shape, a, b
    a = xp.asarray(np.ascontiguousarray(a[box]))
    b = xp.asarray(np.ascontiguousarray(b[box]))
    n_a = int(xp.count_nonzero(a))
    n_b = int(xp.count_nonzero(b))
    n_ab = _count_both(a, b) if xp is np else int(xp.count_nonzero(a & b))
    if n_a == 0 or n_b == 0:
        return _result(n_a, n_b, n_ab, definitions, {})

    hd = {}
    if "asoca_mm" in wanted:
        hd["asoca_mm"] = _hd95_all_voxels(a, b, spacing, ops)
    if "asoca_challenge" in wanted:
        if max(shape) > UINT16_AXIS:        # the challenge's uint16 indices wrap: its own path
            hd["asoca_challenge"] = asoca_challenge_kdtree(full_a, full_b)
        elif "asoca_mm" in hd and all(s == 1.0 for s in spacing):
            hd["asoca_challenge"] = hd["asoca_mm"]
        else:
            hd["asoca_challenge"] = _hd95_all_voxels(a, b, (1.0,) * len(spacing), ops)
    if "medpy" in wanted or "surface" in wanted:
        surf_a = a & ~ops.erode(a)
        surf_b = b & ~ops.erode(b)
        sa_to_sb = ops.nearest(surf_b, surf_a, spacing)
        sb_to_sa = ops.nearest(surf_a, surf_b, spacing)
        if "medpy" in wanted:
            hd["medpy"] = _p95(np.concatenate([sa_to_sb, sb_to_sa]))
        if "surface" in wanted:
            hd["surface"] = max(_p95(sa_to_sb), _p95(sb_to_sa))
    return _result(n_a, n_b, n_ab, definitions, hd)


def _result(n_a: int, n_b: int, n_ab: int, definitions, hd: dict) -> dict:
    if n_a == 0 and n_b == 0:
        empty, dice, fill = "both", 1.0, 0.0
    elif n_a == 0 or n_b == 0:
        empty, dice, fill = ("a" if n_a == 0 else "b"), 0.0, math.inf
    else:
        empty, dice, fill = "none", 2.0 * n_ab / (n_a + n_b), None
    out = {"voxels_a": n_a, "voxels_b": n_b, "intersection": n_ab, "empty": empty,
           "dice": dice}
    for name in definitions:
        out[f"hd95_{name}"] = float(hd[canonical(name)]) if fill is None else fill
    return out


def dice(a, b) -> float:
    """Dice of two masks (1.0 when both are empty)."""
    return compare_masks(a, b, 1.0, definitions=())["dice"]


def hd95(a, b, spacing, definition: str = DEFAULT_HD95, backend: str = "cpu") -> float:
    """One HD95 in ``unit(definition)`` (mm by default; 0.0 when both masks are empty, +inf
    when exactly one is)."""
    return compare_masks(a, b, spacing, (definition,), backend=backend)[f"hd95_{definition}"]
