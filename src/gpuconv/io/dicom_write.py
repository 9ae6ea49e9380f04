"""Writing DICOM for synthetic corpora and tests: a CT series (one file per slice) and a
DICOM-SEG (BINARY or FRACTIONAL), from the NRRD path's ``[i, j, k]`` arrays and LPS grid.

Only what the readers here and common viewers need is written; the files are valid Part 10
files with Explicit VR Little Endian.  UIDs derive from ``uid_seed`` so the same call writes the
same bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from gpuconv.io.dicom_series import SEG_SOP_CLASS
from gpuconv.io.extras import require

CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
_ROOT = "2.25."


def make_uid(*parts) -> str:
    """A deterministic UID under 2.25 (a UUID-derived integer) from ``parts``."""
    h = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()[:16]
    return _ROOT + str(int.from_bytes(h, "big"))


def _ds_str(x: float) -> str:
    """A DS value of at most 16 characters that parses back to ``x`` when it can."""
    x = float(x) + 0.0
    for fmt in ("{!r}", "{:.10g}", "{:.8g}", "{:.6g}"):
        s = fmt.format(x)
        if len(s) <= 16:
            return s
    return f"{x:.6e}"


def _geometry(directions):
    d = np.asarray(directions, float)
    sp_i, sp_j = np.linalg.norm(d[0]), np.linalg.norm(d[1])
    iop = [*(d[0] / sp_i), *(d[1] / sp_j)]
    return [_ds_str(v) for v in iop], [_ds_str(sp_j), _ds_str(sp_i)]


def _base(pydicom, sop_class: str, sop_uid: str, modality: str, study: str, series: str,
          frame_of_ref: str, exam: str):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _ROOT + "1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = modality
    ds.PatientName = f"SYNTH^{exam}"
    ds.PatientID = f"SYNTH{exam}"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = frame_of_ref
    ds.StudyDate = "20260101"
    ds.SeriesNumber = 1 if modality == "CT" else 2
    return ds


def _save(ds, path: Path) -> Path:
    from gpuconv.writers.atomic import write_bytes_atomic
    from pydicom.filebase import DicomBytesIO
    buf = DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    write_bytes_atomic(path, buf.getvalue())
    return path


def write_ct_series(folder, hu: np.ndarray, directions, origin, *, exam: str = "0",
                    intercept: float = -1024.0, slope: float = 1.0, file_order=None,
                    instance_order=None, uid_seed: str = "", names: str = "slice_{n:04d}.dcm",
                    series_uid: str | None = None) -> list[Path]:
    """One file per slice ``k`` of ``hu`` (I, J, K), stored = (HU - intercept) / slope.

    ``file_order``: permutation of k giving the n-th file name (default: in k order), so tests
    can shuffle names; ``instance_order``: InstanceNumber of each k (default k + 1; a
    feet-first series numbers them the other way).  Returns the paths written."""
    pydicom = require("pydicom")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    I, J, K = hu.shape
    stored = (np.asarray(hu, np.float64) - intercept) / slope
    signed = stored.min() < 0
    if not np.array_equal(stored, np.round(stored)):
        raise ValueError("HU not representable with this slope/intercept")
    stored = stored.astype(np.int16 if signed else np.uint16)
    iop, ps = _geometry(directions)
    d = np.asarray(directions, float)
    o = np.asarray(origin, float)
    study = make_uid("study", uid_seed, exam)
    series = series_uid or make_uid("series", uid_seed, exam)
    frame_ref = make_uid("for", uid_seed, exam)
    file_order = list(range(K)) if file_order is None else list(file_order)
    instance_order = [k + 1 for k in range(K)] if instance_order is None else list(instance_order)
    paths = []
    for n, k in enumerate(file_order):
        sop = make_uid("ct", uid_seed, exam, k)
        ds = _base(pydicom, CT_SOP_CLASS, sop, "CT", study, series, frame_ref, exam)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = int(instance_order[k])
        ds.ImagePositionPatient = [_ds_str(v) for v in o + k * d[2]]
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = ps
        ds.SliceThickness = _ds_str(np.linalg.norm(d[2]))
        ds.Rows, ds.Columns = J, I
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleIntercept = _ds_str(intercept)
        ds.RescaleSlope = _ds_str(slope)
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype(
            stored.dtype.newbyteorder("<")).tobytes()
        paths.append(_save(ds, folder / names.format(n=n + 1, k=k)))
    return paths


def write_seg(path, masks, names, directions, origin, *, exam: str = "0",
              fractional: bool = False, omit_empty: bool = False, uid_seed: str = "",
              referenced_series: str | None = None, referenced_slices: int | None = None,
              frame_order=None) -> Path:
    """A DICOM-SEG of ``masks`` (S, I, J, K) bool, segment n+1 named ``names[n]``.

    Frames are written per segment and slice (all slices, or only non-empty ones with
    ``omit_empty``), in ``frame_order`` when given.  FRACTIONAL writes 255 inside, 0 outside,
    and 127 (below 0.5) on the first empty pixel of each frame with content, so a reader that
    does not threshold sees an extra pixel."""
    pydicom = require("pydicom")
    from pydicom.dataset import Dataset
    from pydicom.pixels import pack_bits
    from pydicom.sequence import Sequence
    masks = np.asarray(masks, bool)
    S, I, J, K = masks.shape
    iop, ps = _geometry(directions)
    d = np.asarray(directions, float)
    o = np.asarray(origin, float)
    study = make_uid("study", uid_seed, exam)
    series = make_uid("segseries", uid_seed, exam)
    ds = _base(pydicom, SEG_SOP_CLASS, make_uid("seg", uid_seed, exam), "SEG", study, series,
               make_uid("for", uid_seed, exam), exam)
    ds.SegmentationType = "FRACTIONAL" if fractional else "BINARY"
    if fractional:
        ds.SegmentationFractionalType = "PROBABILITY"
        ds.MaximumFractionalValue = 255
    ds.ContentLabel = "SYNTH"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8 if fractional else 1
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    ds.Rows, ds.Columns = J, I
    segs = []
    for n, name in enumerate(names):
        s = Dataset()
        s.SegmentNumber = n + 1
        s.SegmentLabel = str(name)
        s.SegmentAlgorithmType = "MANUAL"
        segs.append(s)
    ds.SegmentSequence = Sequence(segs)
    shared = Dataset()
    po = Dataset()
    po.ImageOrientationPatient = iop
    pm = Dataset()
    pm.PixelSpacing = ps
    pm.SliceThickness = _ds_str(np.linalg.norm(d[2]))
    pm.SpacingBetweenSlices = _ds_str(np.linalg.norm(d[2]))
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelMeasuresSequence = Sequence([pm])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = [(s, k) for s in range(S) for k in range(K)
              if not omit_empty or masks[s, :, :, k].any()]
    if frame_order is not None:
        frames = [frames[n] for n in frame_order]
    per, pixels = [], []
    for s, k in frames:
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [_ds_str(v) for v in o + k * d[2]]
        item.PlanePositionSequence = Sequence([pp])
        si = Dataset()
        si.ReferencedSegmentNumber = s + 1
        item.SegmentIdentificationSequence = Sequence([si])
        per.append(item)
        frame = masks[s, :, :, k].T
        if fractional:
            f8 = frame.astype(np.uint8) * 255
            if frame.any() and (~frame).any():
                r, c = np.argwhere(~frame)[0]
                f8[r, c] = 127
            pixels.append(f8)
        else:
            pixels.append(frame.astype(np.uint8))
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.NumberOfFrames = len(frames)
    stack = np.stack(pixels) if pixels else np.zeros((0, J, I), np.uint8)
    ds.PixelData = stack.tobytes() if fractional else pack_bits(stack.reshape(-1))
    ref = Dataset()
    ref.SeriesInstanceUID = referenced_series or make_uid("series", uid_seed, exam)
    inst = []
    for k in range(K if referenced_slices is None else referenced_slices):
        r = Dataset()
        r.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        r.ReferencedSOPInstanceUID = make_uid("ct", uid_seed, exam, k)
        inst.append(r)
    ref.ReferencedInstanceSequence = Sequence(inst)
    ds.ReferencedSeriesSequence = Sequence([ref])
    return _save(ds, Path(path))


ENHANCED_CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2.1"


def write_enhanced_ct(path, hu: np.ndarray, directions, origin, *, exam: str = "0",
                      intercept: float = -1024.0, frame_order=None, uid_seed: str = "") -> Path:
    """One multi-frame (Enhanced CT) file: frame n holds slice ``frame_order[n]``, placed by
    its per-frame PlanePositionSequence; rescale in the shared PixelValueTransformation."""
    pydicom = require("pydicom")
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    I, J, K = hu.shape
    stored = np.round(np.asarray(hu, np.float64) - intercept).astype(np.uint16)
    iop, ps = _geometry(directions)
    d = np.asarray(directions, float)
    o = np.asarray(origin, float)
    ds = _base(pydicom, ENHANCED_CT_SOP_CLASS, make_uid("ect", uid_seed, exam), "CT",
               make_uid("study", uid_seed, exam), make_uid("series", uid_seed, exam),
               make_uid("for", uid_seed, exam), exam)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.Rows, ds.Columns = J, I
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    shared = Dataset()
    po, pm, pv = Dataset(), Dataset(), Dataset()
    po.ImageOrientationPatient = iop
    pm.PixelSpacing = ps
    pm.SliceThickness = _ds_str(np.linalg.norm(d[2]))
    pv.RescaleIntercept = _ds_str(intercept)
    pv.RescaleSlope = "1"
    pv.RescaleType = "HU"
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PixelValueTransformationSequence = Sequence([pv])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    order = list(range(K)) if frame_order is None else list(frame_order)
    per = []
    for k in order:
        item, pp = Dataset(), Dataset()
        pp.ImagePositionPatient = [_ds_str(v) for v in o + k * d[2]]
        item.PlanePositionSequence = Sequence([pp])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.NumberOfFrames = K
    ds.PixelData = np.stack([stored[:, :, k].T for k in order]).astype("<u2").tobytes()
    return _save(ds, Path(path))
