"""CT volumes beside the labels: finding each exam's CT, checking the grids agree, and putting a
label grid that 3D Slicer cropped back onto the full image grid.

- Matching: a CT belongs to the label file with the same exam id (``exams.exam_id``), so
  ``0042.nrrd`` pairs with ``0042.seg.nrrd`` and ``CT_0042.nrrd`` with ``COCA_0042.seg.nrrd``.
- Cropped grids: Slicer may save a segmentation on the bounding box of its segments; then
  ``Segmentation_ReferenceImageExtentOffset`` gives the index of the label array's voxel
  (0, 0, 0) in the reference image and the origin is shifted accordingly.  ``place_on_grid``
  pads the labels back to the reference size (the CT's sizes with ``--images``, else the extent
  in the ``Reference image geometry`` entry of ``Segmentation_ConversionParameters``), so boxes
  are normalised by the full image size and land on the full-size PNGs.
- Grid check: after placement, sizes must be equal, and spacing, origin and directions equal
  within ``GRID_ATOL_MM``; anything else is a one-line error naming both files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gpuconv.errors import InputError
from gpuconv.dataset.exams import exam_id
from gpuconv.io.nrrd_read import LabelVolume, geometry_from_fields

GRID_ATOL_MM = 1e-3   # two grids are the same when every number agrees within 1 µm
_REF_GEOMETRY = re.compile(r"Reference image geometry\|([^|]*)\|")


@dataclass
class CtHeader:
    path: Path
    fields: dict
    sizes: tuple[int, int, int]     # (I, J, K)
    directions: np.ndarray          # (3, 3) rows = step vectors of i, j, k
    origin: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.directions, axis=1)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return self.sizes


def read_ct_header(path) -> CtHeader:
    path = Path(path)
    from gpuconv.io import formats  # NIfTI files and DICOM series folders (issue 16)
    if formats.ct_kind(path) != "nrrd":
        return formats.read_ct_header(path)
    from gpuconv.io.nrrd_read import read_image_header  # the label reader's limits (issue 14)
    fields = read_image_header(path).fields
    sizes = [int(s) for s in fields.get("sizes", [])]
    if len(sizes) != 3:
        raise InputError(f"a CT volume must be 3D, got sizes {sizes}", path)
    origin = np.asarray(fields.get("space origin", [0.0, 0.0, 0.0]), float)
    if origin.shape != (3,) or np.isnan(origin).any():
        origin = np.zeros(3)
    return CtHeader(path, fields, tuple(sizes), geometry_from_fields(fields, [0, 1, 2]), origin)


def read_ct(path) -> tuple[CtHeader, np.ndarray]:
    """Header and (I, J, K) data as pynrrd indexes it (x = i, y = j, slice = k)."""
    from gpuconv.io import formats  # NIfTI files and DICOM series folders (issue 16)
    if formats.ct_kind(path) != "nrrd":
        return formats.read_ct(path)
    from gpuconv.io.nrrd_read import read_image  # one bounded read (issue 14)
    hdr = read_ct_header(path)
    _, data = read_image(path)
    if data.dtype.kind not in "iuf":
        raise InputError(f"CT data must be numeric, got {data.dtype}", path)
    return hdr, data


def expand_ct_inputs(inputs) -> list[Path]:
    """Files, folders (recursive) and globs -> CT volumes; ``*.seg.nrrd`` files are skipped.
    NIfTI files count; a DICOM series is its folder (a DICOM file given stands for its folder),
    see ``io.formats.find_ct_inputs``."""
    from gpuconv.io.formats import ct_input_of, expand_ct_item
    found: dict[str, Path] = {}
    for item in inputs:
        for q in expand_ct_item(item):
            q = ct_input_of(q)
            if q is not None and not q.name.lower().endswith(".seg.nrrd"):
                found.setdefault(str(q.resolve()), q)
    return sorted(found.values(), key=str)


def match_ct(ct_inputs, label_paths) -> dict[str, Path]:
    """exam id -> CT path for the exams among ``label_paths``.  Two CTs with one id is an error;
    a label file whose CT is missing is left out (the caller reports it per file)."""
    from gpuconv.io.formats import ct_exam_id
    by_exam: dict[str, Path] = {}
    label_set = {str(Path(p).resolve()) for p in label_paths}
    for p in expand_ct_inputs(ct_inputs):
        if str(p.resolve()) in label_set:
            continue  # a plain label map given in both lists is not its own CT
        e = ct_exam_id(p)  # a DICOM folder without digits: its parent's (io.formats)
        if e in by_exam:
            raise InputError(f"two CT volumes for exam '{e}': {by_exam[e]} and {p}")
        by_exam[e] = p
    wanted = {exam_id(p) for p in label_paths}
    return {e: p for e, p in by_exam.items() if e in wanted}


def reference_extent(fields: dict) -> tuple[int, int, int, int, int, int] | None:
    """(i0, i1, j0, j1, k0, k1) of the reference image from Slicer's conversion parameters."""
    text = str(fields.get("Segmentation_ConversionParameters", ""))
    m = _REF_GEOMETRY.search(text)
    if not m:
        return None
    parts = [p for p in m.group(1).split(";") if p.strip() != ""]
    if len(parts) < 22:
        return None
    try:
        ext = tuple(int(float(v)) for v in parts[16:22])
    except ValueError:
        return None
    return ext  # type: ignore[return-value]


def place_on_grid(vol: LabelVolume, ref_sizes: tuple[int, int, int] | None = None,
                  ct_name: str = "") -> LabelVolume:
    """Pad a cropped label grid back to the reference image grid (see module docstring).

    ``ref_sizes`` is the CT's (I, J, K) when known; otherwise, for a grid that is evidently
    cropped (non-zero extent offset), the reference extent in the header is used.  Returns
    ``vol`` unchanged when nothing needs placing.
    """
    if getattr(vol.header, "encoding", "") == "dicom-seg":  # dicom_seg.ENCODING: by position
        from gpuconv.io.dicom_seg import align_to_reference
        vol, ref_sizes = align_to_reference(vol, ref_sizes)
    else:
        ref_sizes = getattr(ref_sizes, "sizes", ref_sizes)
    hdr = vol.header
    offset = np.asarray(hdr.extent_offset, np.int64)
    if ref_sizes is None and not offset.any():
        return vol  # not cropped, nothing to compare with: leave it as the file says
    ext = reference_extent(hdr.fields)
    ref_min = np.zeros(3, np.int64)
    if ref_sizes is None and ext is not None:
        ref_min = np.array(ext[0::2], np.int64)
        ref_sizes = tuple(int(v) for v in np.array(ext[1::2]) - ref_min + 1)
    size = np.asarray(hdr.spatial_shape, np.int64)
    if ref_sizes is None:
        if offset.any():
            raise InputError("the label grid is cropped (extent offset "
                             f"{' '.join(map(str, offset))}) and the full image size is "
                             "unknown; give the CT with --images",
                             hdr.path)
        return vol
    start = offset - ref_min
    ref = np.asarray(ref_sizes, np.int64)
    if (start == 0).all() and (size == ref).all():
        return vol
    if (start < 0).any() or (start + size > ref).any():
        what = f"the CT {ct_name}" if ct_name else "the reference image"
        raise InputError(f"label grid (sizes {' '.join(map(str, size))}, extent offset "
                         f"{' '.join(map(str, offset))}) does not fit inside {what} (sizes "
                         f"{' '.join(map(str, ref))})", hdr.path)
    L = hdr.n_layers
    full = np.zeros((L, *ref.tolist()), vol.layers.dtype, order="F")
    full[:, start[0]:start[0] + size[0], start[1]:start[1] + size[1],
         start[2]:start[2] + size[2]] = vol.layers
    origin = hdr.origin - start.astype(float) @ hdr.directions
    new_hdr = replace(hdr, shape=(L, *ref.tolist()), origin=origin, extent_offset=(0, 0, 0))
    return LabelVolume(new_hdr, full)


def check_same_grid(ref, other, what: str = "grid") -> None:
    """The one grid check (labels vs CT, annotator vs annotator): a one-line InputError naming
    ``other`` unless both share sizes, spacing, axis directions and origin, each within
    ``GRID_ATOL_MM`` (label-file layers may differ).  ``ref``/``other``: a VolumeHeader or a
    CtHeader (anything with spatial_shape, spacing, directions, origin, path)."""
    names = f"{Path(other.path).name} vs {Path(ref.path).name}"
    if tuple(ref.spatial_shape) != tuple(other.spatial_shape):
        raise InputError(f"{what} mismatch: sizes {_x(other.spatial_shape)} vs "
                         f"{_x(ref.spatial_shape)} ({names})", other.path)
    if not np.allclose(ref.directions, other.directions, rtol=1e-6, atol=GRID_ATOL_MM):
        if not np.allclose(ref.spacing, other.spacing, rtol=1e-6, atol=GRID_ATOL_MM):
            raise InputError(f"{what} mismatch: spacing {_mm(other.spacing)} vs "
                             f"{_mm(ref.spacing)} mm ({names})", other.path)
        raise InputError(f"{what} mismatch: space directions differ ({names})", other.path)
    if not np.allclose(ref.origin, other.origin, rtol=0, atol=GRID_ATOL_MM):
        raise InputError(f"{what} mismatch: origin {_mm(other.origin)} vs {_mm(ref.origin)} "
                         f"mm ({names})", other.path)


def _x(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def _mm(v) -> str:
    return "(" + ", ".join(f"{float(x):g}" for x in np.asarray(v).reshape(-1)) + ")"

