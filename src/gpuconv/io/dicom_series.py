"""DICOM CT series as ``--images`` input: a folder per exam (pydicom, ``gpuconv[dicom]``).

Rules (docs/formats.md):
- A series folder is a folder that directly holds DICOM files (``*.dcm``, or any file with the
  ``DICM`` magic at byte 128) that are images; SEG, RT structure, SR, presentation-state and
  key-object files in it are skipped.  Its exam id is the folder's name, as for a file
  (``CT_0042/`` -> ``0042``).  Files of more than one SeriesInstanceUID in one folder: one-line
  error (give each series its own folder).
- Slices are ordered by their position along the slice normal, ``ImagePositionPatient ·
  (row × column)`` from ImageOrientationPatient: never by file name or InstanceNumber.  So
  ``k`` runs along the right-handed normal of the in-plane axes, as in 3D Slicer.
- Geometry in LPS, arrays ``[i, j, k]`` as the NRRD path: ``i`` = column index (along the IOP
  row vector, step PixelSpacing[1]), ``j`` = row index (IOP column vector, PixelSpacing[0]),
  ``k`` = slice; the slice step is the position difference ((last - first) / (K - 1)), not
  SliceThickness.  ``pixel_array`` is ``[row, col]`` = ``[j, i]``, so each slice is transposed.
- HU = stored × RescaleSlope + RescaleIntercept per slice (integer arithmetic when both are
  whole numbers, so an int16 NRRD of the same HU gives the same PNG bytes).
- Missing slice (a gap of whole steps), duplicate position, uneven spacing, positions off one
  line, differing orientation / pixel spacing / size between slices: one-line errors.  Gantry
  tilt (position steps not along the normal) is kept as a sheared grid: the slice step vector
  is the position difference, so it matches a label grid with the same shear.
- Multi-frame (enhanced) CT in one file: frames placed by their per-frame functional groups
  (PlanePosition, PlaneOrientation, PixelMeasures, PixelValueTransformation), same rules.
- Compressed transfer syntaxes need pydicom's plugins (``gpuconv[dicom-jpeg]``); without them
  a one-line error says so.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpuconv.errors import InputError
from gpuconv.io.extras import JPEG_EXTRA, require

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "SR", "PR", "KO", "RTPLAN", "RTDOSE", "REG"}
DUP_TOL_MM = 1e-3          # two positions closer than this along the normal are one slice
STEP_RTOL = 0.01           # a step may differ from the common one by 1% (rounded DS values)


def has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_file(path: Path) -> bool:
    return path.is_file() and (path.suffix.lower() == ".dcm" or has_dicom_magic(path))


def sop_class_of(path: Path) -> str:
    """MediaStorageSOPClassUID from the file meta group (always explicit VR little endian),
    parsed here so a folder search needs neither pydicom nor more than the first 4 KiB;
    '' when the file has no Part 10 meta."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132 + 4096)
    except OSError:
        return ""
    if head[128:132] != b"DICM":
        return ""
    pos = 132
    while pos + 8 <= len(head):
        group, elem = struct.unpack_from("<HH", head, pos)
        if group != 2:
            break
        vr = head[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            if pos + 12 > len(head):
                break
            length, start = struct.unpack_from("<I", head, pos + 8)[0], pos + 12
        else:
            length, start = struct.unpack_from("<H", head, pos + 6)[0], pos + 8
        if elem == 2:
            return head[start:start + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos = start + length
    return ""


def dicom_files_in(folder: Path) -> list[Path]:
    """DICOM files directly inside ``folder`` (not in its subfolders), sorted by name."""
    try:
        return sorted(p for p in folder.iterdir()
                      if is_dicom_file(p) and not p.name.startswith("._"))  # macOS forks
    except OSError:
        return []


def is_series_folder(folder: Path) -> bool:
    """A folder that directly holds DICOM files other than SEGs."""
    return any(sop_class_of(p) != SEG_SOP_CLASS for p in dicom_files_in(folder))


def find_series_folders(root: Path) -> list[Path]:
    """``root`` itself when it is a series folder, else every series folder below it."""
    root = Path(root)
    if is_series_folder(root):
        return [root]
    return sorted(d for d in root.rglob("*") if d.is_dir() and is_series_folder(d))


# --- geometry shared with DICOM-SEG ---------------------------------------------------------

@dataclass
class FrameGrid:
    directions: np.ndarray     # (3, 3) rows: step of i (column), j (row), k (slice), LPS mm
    origin: np.ndarray         # (3,) position of voxel (0, 0, 0)
    k: np.ndarray              # slice index of each input position
    n_slices: int


def _tidy(a) -> np.ndarray:
    """Round DICOM-derived geometry to 1e-6 mm (DS strings hold 16 characters; what is below
    that is arithmetic noise) and turn -0.0 into 0.0."""
    return np.round(np.asarray(a, np.float64), 6) + 0.0


def frame_grid(positions, iop, pixel_spacing, *, step_hint: float | None = None,
               allow_gaps: bool = False, allow_shared: bool = False, names=None,
               where=None) -> FrameGrid:
    """Place slices (CT files, SEG frames) on one grid from their ImagePositionPatient.

    ``iop``: ImageOrientationPatient (row vector, column vector); ``pixel_spacing``: (row
    spacing, column spacing).  ``allow_gaps``: a SEG may omit empty frames (the step is then
    ``step_hint``, its SpacingBetweenSlices, or the smallest step); a CT series may not.
    ``allow_shared``: several inputs at one position (SEG frames of different segments).
    """
    pos = np.asarray(positions, np.float64).reshape(-1, 3)
    iop = np.asarray(iop, np.float64).reshape(6)
    row, col = iop[:3], iop[3:]
    if not (np.isclose(np.linalg.norm(row), 1, atol=1e-3) and np.isclose(np.linalg.norm(col), 1,
            atol=1e-3) and abs(row @ col) < 1e-3):
        raise InputError(f"ImageOrientationPatient {iop.tolist()} is not two orthogonal unit "
                         "vectors", where)
    normal = np.cross(row, col)
    t = pos @ normal
    order = np.argsort(t, kind="stable")
    ts = t[order]
    names = list(names) if names is not None else [f"#{n}" for n in range(len(pos))]
    # group positions into slices
    group = np.zeros(len(ts), np.int64)
    for n in range(1, len(ts)):
        if ts[n] - ts[n - 1] < DUP_TOL_MM:
            if not allow_shared:
                a, b = names[order[n - 1]], names[order[n]]
                raise InputError(f"duplicate slice: {a} and {b} are both at position "
                                 f"{ts[n]:.4f} mm along the slice normal", where)
            group[n] = group[n - 1]
        else:
            group[n] = group[n - 1] + 1
    first_of = {}
    for n, g in enumerate(group):
        first_of.setdefault(int(g), n)
    tu = np.array([ts[first_of[g]] for g in range(int(group[-1]) + 1)]) if len(ts) else ts
    if len(tu) <= 1:
        step = float(step_hint) if step_hint else 1.0
        ks_unique = np.zeros(len(tu), np.int64)
    else:
        diffs = np.diff(tu)
        step = float(step_hint) if (allow_gaps and step_hint) else float(diffs.min())
        n_steps = (tu - tu[0]) / step
        ks_unique = np.rint(n_steps).astype(np.int64)
        off = np.abs(n_steps - ks_unique) * step
        tol = max(DUP_TOL_MM, STEP_RTOL * step)
        if (off > tol).any() or (ks_unique[1:] == ks_unique[:-1]).any():
            raise InputError(f"uneven slice spacing: steps along the normal from "
                             f"{diffs.min():.4f} to {diffs.max():.4f} mm", where)
        if not allow_gaps and ks_unique[-1] != len(tu) - 1:
            gap = int(np.argmax(np.diff(ks_unique) > 1))
            missing = int(ks_unique[-1] + 1 - len(tu))
            raise InputError(f"missing slice(s): {missing} slice(s) of {step:.4f} mm absent "
                             f"(first gap after position {tu[gap]:.4f} mm along the normal)",
                             where)
    k_sorted = ks_unique[group]
    k = np.empty(len(pos), np.int64)
    k[order] = k_sorted
    p0 = pos[order[0]]
    K = int(ks_unique[-1]) + 1 if len(tu) else 0
    if K > 1:
        last = order[np.flatnonzero(k_sorted == K - 1)[0]]
        step_vec = (pos[last] - p0) / (K - 1)
    else:
        step_vec = normal * step
    residual = np.linalg.norm(pos - (p0 + k[:, None] * step_vec[None, :]), axis=1)
    if len(pos) and residual.max() > max(DUP_TOL_MM, STEP_RTOL * step):
        raise InputError(f"slice positions do not lie on one line (a slice is "
                         f"{residual.max():.4f} mm off it)", where)
    ps = np.asarray(pixel_spacing, np.float64).reshape(2)
    directions = np.stack([row * ps[1], col * ps[0], step_vec])
    return FrameGrid(_tidy(directions), _tidy(p0), k, K)


def rescale_to_hu(stored: np.ndarray, slope: float, intercept: float):
    """Stored values -> HU; integers stay integers when slope and intercept are whole."""
    if float(slope).is_integer() and float(intercept).is_integer():
        return stored.astype(np.int32) * int(slope) + int(intercept)
    return stored.astype(np.float64) * float(slope) + float(intercept)


def fit_dtype(hu: np.ndarray) -> np.ndarray:
    if hu.dtype.kind in "iu" and hu.size and hu.min() >= -32768 and hu.max() <= 32767:
        return hu.astype(np.int16)
    if hu.dtype.kind == "f":
        return hu.astype(np.float32) if np.array_equal(hu.astype(np.float32), hu) else hu
    return hu


def pixels(ds, where) -> np.ndarray:
    """``ds.pixel_array`` with a one-line error for missing decoders or damaged data."""
    try:
        return ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types here
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if ts is not None and ts.is_compressed and ts.name != "RLE Lossless":
            raise InputError(f"transfer syntax '{ts.name}': {JPEG_EXTRA}", where) from None
        raise InputError(f"cannot decode DICOM pixel data ({' '.join(str(exc).split())[:200]})",
                         where) from None


# --- the CT series --------------------------------------------------------------------------

def functional_group(ds, frame_item, seq: str, attr: str):
    """A value from the per-frame functional group item, else the shared one (enhanced
    multi-frame objects: SEG, enhanced CT)."""
    for holder in (frame_item, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        if holder is None:
            continue
        s = holder.get(seq)
        if s and attr in s[0]:
            return s[0].get(attr)
    return None


def _read_meta(files, where):
    """(file, dataset without pixel data) of each image file."""
    pydicom = require("pydicom", where)
    metas = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{f.name} is not a readable DICOM file "
                             f"({' '.join(str(exc).split())[:120]})", where) from None
        if str(ds.get("Modality", "")).upper() in NON_IMAGE_MODALITIES or \
                str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS:
            continue
        metas.append((f, ds))
    return metas


@dataclass
class SeriesPlan:
    """What reading the pixels needs: files (or frames) in k order and their rescale."""
    files: list            # (file, dataset) per slice, or (file, frame) for one multi-frame file
    multiframe: bool
    slopes: list
    intercepts: list


def _series_plan(folder: Path):
    from gpuconv.dataset.grid import CtHeader
    folder = Path(folder)
    files = dicom_files_in(folder) if folder.is_dir() else [folder]
    metas = _read_meta(files, folder)
    if not metas:
        raise InputError("no DICOM image files in this folder", folder)
    by_series: dict[str, list] = {}
    for f, ds in metas:
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((f, ds))
    if len(by_series) > 1:
        parts = ", ".join(f"{uid or '(none)'}: {len(v)} file(s)" for uid, v in by_series.items())
        raise InputError(f"{len(by_series)} series in one folder ({parts}); give each series "
                         "its own folder", folder)
    (uid, items), = by_series.items()
    if len(items) == 1 and int(items[0][1].get("NumberOfFrames", 1) or 1) > 1:
        return _multiframe_plan(folder, uid, *items[0])
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in items):
        raise InputError("a series mixing multi-frame and single-frame files is not supported",
                         folder)
    ref = items[0][1]
    need = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
    for f, ds in items:
        missing = [a for a in need if a not in ds]
        if missing:
            raise InputError(f"{f.name} lacks {', '.join(missing)}", folder)
        for a, tol in (("ImageOrientationPatient", 1e-4), ("PixelSpacing", 1e-4)):
            if not np.allclose(np.asarray(ds.get(a), float), np.asarray(ref.get(a), float),
                               atol=tol):
                raise InputError(f"{a} differs between slices ({items[0][0].name}: "
                                 f"{list(ref.get(a))}, {f.name}: {list(ds.get(a))})", folder)
        if (ds.Rows, ds.Columns) != (ref.Rows, ref.Columns):
            raise InputError(f"slice sizes differ ({items[0][0].name}: {ref.Rows}x{ref.Columns},"
                             f" {f.name}: {ds.Rows}x{ds.Columns})", folder)
    grid = frame_grid([ds.ImagePositionPatient for _, ds in items], ref.ImageOrientationPatient,
                      ref.PixelSpacing, names=[f.name for f, _ in items], where=folder)
    order = np.argsort(grid.k, kind="stable")
    files_k = [items[n] for n in order]          # (file, dataset) in k order
    slopes = [float(items[n][1].get("RescaleSlope", 1) or 1) for n in order]
    inters = [float(items[n][1].get("RescaleIntercept", 0) or 0) for n in order]
    fields = {"format": "dicom-series", "SeriesInstanceUID": uid,
              "sizes": [int(ref.Columns), int(ref.Rows), grid.n_slices],
              "transfer_syntax": str(getattr(ref.file_meta, "TransferSyntaxUID", "")),
              "modality": str(ref.get("Modality", ""))}
    hdr = CtHeader(folder, fields, (int(ref.Columns), int(ref.Rows), grid.n_slices),
                   grid.directions, grid.origin)
    return hdr, SeriesPlan(files_k, False, slopes, inters)


def _multiframe_plan(folder, uid, f, ds):
    from gpuconv.dataset.grid import CtHeader
    per = ds.get("PerFrameFunctionalGroupsSequence")
    n = int(ds.NumberOfFrames)
    if not per or len(per) != n:
        raise InputError(f"{f.name}: multi-frame file without a per-frame functional group per "
                         "frame", folder)
    pos, iops, spacings, slopes, inters = [], [], [], [], []
    for item in per:
        pos.append(functional_group(ds, item, "PlanePositionSequence", "ImagePositionPatient"))
        iops.append(functional_group(ds, item, "PlaneOrientationSequence",
                                     "ImageOrientationPatient"))
        spacings.append(functional_group(ds, item, "PixelMeasuresSequence", "PixelSpacing"))
        slopes.append(float(functional_group(ds, item, "PixelValueTransformationSequence",
                                        "RescaleSlope") or 1))
        inters.append(float(functional_group(ds, item, "PixelValueTransformationSequence",
                                        "RescaleIntercept") or 0))
    if any(p is None for p in pos) or any(o is None for o in iops) or \
            any(s is None for s in spacings):
        raise InputError(f"{f.name}: a frame lacks its position, orientation or pixel spacing",
                         folder)
    if not (np.allclose(np.asarray(iops, float), np.asarray(iops[0], float), atol=1e-4)
            and np.allclose(np.asarray(spacings, float), np.asarray(spacings[0], float))):
        raise InputError(f"{f.name}: frames differ in orientation or pixel spacing", folder)
    grid = frame_grid(pos, iops[0], spacings[0], names=[f"frame {i + 1}" for i in range(n)],
                      where=folder)
    order = np.argsort(grid.k, kind="stable")
    fields = {"format": "dicom-enhanced", "SeriesInstanceUID": uid,
              "sizes": [int(ds.Columns), int(ds.Rows), grid.n_slices],
              "transfer_syntax": str(getattr(ds.file_meta, "TransferSyntaxUID", ""))}
    hdr = CtHeader(folder, fields, (int(ds.Columns), int(ds.Rows), grid.n_slices),
                   grid.directions, grid.origin)
    return hdr, SeriesPlan([(f, int(i)) for i in order], True, [slopes[i] for i in order],
                           [inters[i] for i in order])


def read_series_header(folder):
    """The series' CtHeader (sizes, LPS directions, origin) from the files' headers only."""
    return _series_plan(folder)[0]


def read_series(folder):
    """(CtHeader, HU volume (I, J, K)) of one series folder (or one multi-frame file).

    The headers were read without pixels; each file is read once more, whole, and its slice
    goes straight into the volume (memory: the volume, in int32 or float64, then its int16)."""
    pydicom = require("pydicom", folder)
    hdr, plan = _series_plan(folder)
    I, J, K = hdr.sizes
    whole = all(float(s).is_integer() and float(b).is_integer()
                for s, b in zip(plan.slopes, plan.intercepts))
    data = np.empty((I, J, K), np.int32 if whole else np.float64, order="F")
    if plan.multiframe:
        f = plan.files[0][0]
        stack = pixels(pydicom.dcmread(str(f)), folder).reshape(-1, J, I)
        for k, ((_, frame), s, b) in enumerate(zip(plan.files, plan.slopes, plan.intercepts)):
            data[:, :, k] = rescale_to_hu(stack[frame], s, b).T
    else:
        for k, ((f, _), s, b) in enumerate(zip(plan.files, plan.slopes, plan.intercepts)):
            arr = pixels(pydicom.dcmread(str(f)), folder)
            if arr.shape != (J, I):
                raise InputError(f"{f.name}: expected one {J}x{I} grey-level slice, got pixel "
                                 f"data of shape {arr.shape}", folder)
            data[:, :, k] = rescale_to_hu(arr, s, b).T   # pixel_array is [row, col] = [j, i]
    return hdr, fit_dtype(data)
