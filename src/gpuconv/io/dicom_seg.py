"""DICOM-SEG label input (pydicom, ``gpuconv[dicom]``), read into the NRRD path's types.

Rules (docs/formats.md):
- Segments: SegmentSequence; each segment's SegmentLabel is its name (the class, as a Slicer
  segment name), its SegmentNumber its label value.  highdicom is not needed: pydicom decodes
  the frames and the placement below is a few lines.
- BINARY frames are masks; FRACTIONAL frames are thresholded at 0.5 (voxel in the segment
  when value / MaximumFractionalValue >= 0.5).  LABELMAP SEGs (a newer SegmentationType) are
  refused with one line.
- Frames are placed by their per-frame PlanePositionSequence (orientation and pixel spacing from
  the shared or per-frame groups) on the SEG's grid: ``k`` along the normal of
  ImageOrientationPatient, step SpacingBetweenSlices (else the smallest position step); frames
  may be omitted (empty ones usually are) inside that range.  ``i`` = column, ``j`` = row, as
  for a CT series (``pixel_array`` frames are transposed).
- The grid's slices are those the frames span.  When the SEG references more source slices
  than that span holds, the full (referenced) grid is unknown without its CT: give the CT
  series with ``--images`` and the frames are placed onto the CT grid by position (the grids
  must agree in orientation, pixel spacing, in-plane size and slice step); without it, a
  one-line error.
- Overlapping segments are kept apart as layered 3D Slicer files are: segments are packed,
  in SegmentNumber order, into the first layer where they overlap nothing; a SEG without
  overlaps is one layer (layer 0, value = SegmentNumber), like a 3D .seg.nrrd.  Decoding sets
  the header's layers and segments to the packing found (before decoding, all are layer 0).
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np

from gpuconv.errors import InputError
from gpuconv.io.dicom_series import SEG_SOP_CLASS, functional_group, frame_grid, pixels
from gpuconv.io.extras import require
from gpuconv.io.nrrd_read import LabelVolume, Segment, VolumeHeader, max_volume_bytes

ENCODING = "dicom-seg"


def _dcmread(src, path, stop_before_pixels: bool):
    pydicom = require("pydicom", path)
    try:
        return pydicom.dcmread(src, stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"not a readable DICOM file ({' '.join(str(exc).split())[:160]})",
                         path) from None


def referenced_slices(ds) -> int:
    return sum(len(s.get("ReferencedInstanceSequence") or [])
               for s in (ds.get("ReferencedSeriesSequence") or []))


def header_from_dataset(path: Path, ds) -> VolumeHeader:
    sop = str(ds.get("SOPClassUID", ""))
    if sop != SEG_SOP_CLASS:
        name = getattr(ds.get("SOPClassUID"), "name", sop) or "unknown"
        raise InputError(f"a DICOM label file must be a Segmentation (DICOM-SEG), this is "
                         f"'{name}' (a CT series goes to --images)", path)
    seg_type = str(ds.get("SegmentationType", "")).upper()
    if seg_type not in ("BINARY", "FRACTIONAL"):
        raise InputError(f"SegmentationType '{seg_type}' is not supported (BINARY or "
                         "FRACTIONAL)", path)
    segs = ds.get("SegmentSequence") or []
    if not segs:
        raise InputError("the SEG has no SegmentSequence", path)
    numbers = [int(s.SegmentNumber) for s in segs]
    if len(set(numbers)) != len(numbers):
        raise InputError("two segments share a SegmentNumber", path)
    per = ds.get("PerFrameFunctionalGroupsSequence") or []
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if len(per) != n_frames:
        raise InputError(f"{n_frames} frames but {len(per)} per-frame functional groups", path)
    pos, seg_of = [], []
    for n, item in enumerate(per):
        p = functional_group(ds, item, "PlanePositionSequence", "ImagePositionPatient")
        si = item.get("SegmentIdentificationSequence")
        if p is None or not si:
            raise InputError(f"frame {n + 1} lacks its position or segment number", path)
        pos.append([float(v) for v in p])
        seg_of.append(int(si[0].ReferencedSegmentNumber))
    iop = functional_group(ds, per[0] if per else None, "PlaneOrientationSequence",
                      "ImageOrientationPatient")
    spacing = functional_group(ds, per[0] if per else None, "PixelMeasuresSequence", "PixelSpacing")
    between = functional_group(ds, per[0] if per else None, "PixelMeasuresSequence",
                          "SpacingBetweenSlices")
    if iop is None or spacing is None:
        raise InputError("the SEG lacks ImageOrientationPatient or PixelSpacing", path)
    for n, item in enumerate(per):
        o = functional_group(ds, item, "PlaneOrientationSequence", "ImageOrientationPatient")
        if o is not None and not np.allclose(np.asarray(o, float), np.asarray(iop, float),
                                             atol=1e-4):
            raise InputError(f"frame {n + 1} has another orientation than frame 1", path)
    unknown = sorted(set(seg_of) - set(numbers))
    if unknown:
        raise InputError(f"label/segment mismatch: frames reference segment number(s) "
                         f"{unknown} that the SegmentSequence does not declare", path)
    grid = frame_grid(pos, iop, spacing, step_hint=float(between) if between else None,
                      allow_gaps=True, allow_shared=True, where=path)
    pairs = list(zip(seg_of, grid.k.tolist()))
    if len(set(pairs)) != len(pairs):
        raise InputError("two frames of one segment at one slice position", path)
    I, J, K = int(ds.Columns), int(ds.Rows), grid.n_slices
    if I * J * K > max_volume_bytes():  # the NRRD reader's limit, per layer of uint8
        raise InputError(f"the SEG's frames span a {I}x{J}x{K} grid, more than the "
                         f"{max_volume_bytes()} bytes a volume may hold "
                         "(GPUCONV_MAX_VOLUME_BYTES)", path)
    segments = [Segment(index=n, name=str(s.get("SegmentLabel", "") or f"Segment_{num}"),
                        label_value=num, layer=0, id=str(num))
                for n, (s, num) in enumerate(zip(segs, numbers))]
    fields = {"format": "dicom-seg", "sizes": [I, J, K], "SegmentationType": seg_type,
              "MaximumFractionalValue": int(ds.get("MaximumFractionalValue", 255) or 255),
              "frame_segment": np.asarray(seg_of, np.int64), "frame_k": grid.k,
              "referenced_slices": referenced_slices(ds),
              "referenced_series": [str(s.get("SeriesInstanceUID", ""))
                                    for s in (ds.get("ReferencedSeriesSequence") or [])],
              "transfer_syntax": str(getattr(getattr(ds, "file_meta", None),
                                             "TransferSyntaxUID", ""))}
    dtype = np.dtype(np.uint8 if max(numbers) < 256 else np.uint16)
    return VolumeHeader(path=path, fields=fields, dtype=dtype, shape=(1, I, J, K),
                        directions=grid.directions, origin=grid.origin, encoding=ENCODING,
                        data_path=path, data_offset=0, segments=segments)


def read_seg_header(path, blob: bytes | None = None) -> VolumeHeader:
    """Header of a DICOM-SEG, parsed from ``blob`` (the file's bytes) when given."""
    path = Path(path)
    src = str(path) if blob is None else io.BytesIO(bytes(blob))
    return header_from_dataset(path, _dcmread(src, path, True))


def decode_seg(hdr: VolumeHeader, blob: bytes) -> np.ndarray:
    """Frames -> layers (L, I, J, K), overlapping segments in separate layers (see above)."""
    path = hdr.path
    ds = _dcmread(io.BytesIO(bytes(blob)), path, False)
    frames = pixels(ds, path)
    f = hdr.fields
    I, J, K = hdr.spatial_shape
    frames = frames.reshape(-1, J, I)
    if frames.shape[0] != len(f["frame_k"]):
        raise InputError(f"pixel data holds {frames.shape[0]} frames, the header "
                         f"{len(f['frame_k'])}", path)
    if f["SegmentationType"] == "FRACTIONAL":
        masks = 2 * frames.astype(np.uint32) >= int(f["MaximumFractionalValue"])  # >= 0.5
    else:
        masks = frames != 0
    layers: list[np.ndarray] = []
    layer_of: dict[int, int] = {}
    seg_frames: dict[int, list[int]] = {}
    for n, s in enumerate(f["frame_segment"].tolist()):
        seg_frames.setdefault(s, []).append(n)
    for seg in sorted(seg_frames):
        items = [(int(f["frame_k"][n]), masks[n].T) for n in seg_frames[seg] if masks[n].any()]
        li = next((n for n, layer in enumerate(layers)   # the first layer it does not overlap
                   if not any(layer[:, :, k][m].any() for k, m in items)), None)
        if li is None:
            layers.append(np.zeros((I, J, K), hdr.dtype, order="F"))
            li = len(layers) - 1
        for k, m in items:
            layers[li][:, :, k][m] = seg
        layer_of[seg] = li
    if len(layers) <= 1:  # the usual case: no copy
        layer = layers[0] if layers else np.zeros((I, J, K), hdr.dtype, order="F")
        return layer[np.newaxis]
    out = np.empty((len(layers), I, J, K), hdr.dtype, order="F")
    for li, layer in enumerate(layers):
        out[li] = layer
    # more than one layer: the packing is known only now, so the header says it
    hdr.shape = (len(layers), I, J, K)
    hdr.fields["sizes"] = [len(layers), I, J, K]
    hdr.segments = [replace(s, layer=layer_of.get(s.label_value, 0)) for s in hdr.segments]
    return out


def is_seg_header(hdr) -> bool:
    return getattr(hdr, "encoding", "") == ENCODING


def align_to_reference(vol: LabelVolume, ref):
    """``place_on_grid``'s hook for SEGs: (volume, reference sizes) to place by.

    ``ref`` is None, the CT's (I, J, K), or the CT's header (``CtHeader``).  A SEG whose frames
    span fewer slices than it references needs the CT grid; with it, the SEG's offset in that
    grid comes from the positions (then ``place_on_grid`` pads and the one grid check runs)."""
    hdr = vol.header
    sizes = getattr(ref, "sizes", ref)
    if not is_seg_header(hdr):
        return vol, sizes
    K = hdr.spatial_shape[2]
    n_ref = int(hdr.fields.get("referenced_slices", 0))
    if not hasattr(ref, "sizes"):
        if n_ref > K and (sizes is None or tuple(sizes)[2] != K):
            raise InputError(f"the SEG's frames span {K} slice(s) of the {n_ref} it references; "
                             "its referenced grid is absent, so where they lie is unknown: give "
                             "the referenced CT series with --images", hdr.path)
        return vol, sizes
    d = np.asarray(ref.directions, float)
    delta = np.asarray(hdr.origin, float) - np.asarray(ref.origin, float)
    try:
        ijk = np.linalg.solve(d.T, delta)
    except np.linalg.LinAlgError:
        return vol, sizes
    offset = np.rint(ijk)
    if np.abs((offset - ijk) @ d).max() > 1e-2 * float(np.linalg.norm(d[2])) + 1e-3:
        return vol, sizes   # not on the CT grid: the grid check names the mismatch
    directions = hdr.directions
    if K == 1:  # one slice has no step of its own: it takes the CT's
        directions = np.vstack([hdr.directions[:2], d[2:3]])
    placed = replace(hdr, extent_offset=tuple(int(v) for v in offset), directions=directions)
    return LabelVolume(placed, vol.layers), sizes
