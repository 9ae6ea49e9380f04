"""NIfTI (``.nii``, ``.nii.gz``) label maps and CT volumes (nibabel, ``gpuconv[nifti]``).

Rules (docs/formats.md):
- Geometry: the sform when ``sform_code > 0``, else the qform when ``qform_code > 0`` (what
  nibabel's ``get_best_affine`` picks); with neither, ``pixdim`` spacing, origin 0, no
  orientation.  NIfTI world space is RAS, the NRRD path's is LPS: the affine's first two rows
  change sign.  NIfTI stores the affine as float32; each entry is read as the shortest decimal
  that gives that float32 (0.7, not 0.699999988), so a grid written from NRRD reads back equal.
- Arrays: NIfTI data is already ``[i, j, k]`` (x fastest), as pynrrd's; no transpose.  3D, or
  4D/5D whose extra axes have size 1.
- Label data: integer types as stored (scl_slope/scl_inter applied when set); float data (or a
  scaling that makes it float) is accepted only when every value is a whole number in
  0..65535, read as uint16; otherwise a one-line error.  A NIfTI label map is a plain map:
  value v is class v-1 named "v", or named by ``--classes``.
- The gzip payload is decoded with the NRRD path's libdeflate decoder and wrapped without a copy.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from pathlib import Path

import numpy as np

from gpuconv.errors import InputError
from gpuconv.io.decode import DecodeError, gunzip
from gpuconv.io.extras import require
from gpuconv.io.nrrd_read import LabelVolume, VolumeHeader, max_volume_bytes

SUFFIXES = (".nii.gz", ".nii")
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def is_nifti_path(path) -> bool:
    return str(path).lower().endswith(SUFFIXES)


def _f32_decimal(a) -> np.ndarray:
    """Each entry as the shortest decimal that round-trips its float32 (see module doc)."""
    flat = np.asarray(a, np.float64).reshape(-1).astype(np.float32)
    return np.array([float(str(x)) for x in flat], np.float64).reshape(np.shape(a))


_HEAD = 1 << 16


def _head_of_file(path: Path) -> bytes:
    """The first bytes of the (decompressed) file: enough for the header and extensions.
    Gzip is recognised by its magic, not the name (a '.nii.gz' that is not compressed reads)."""
    try:
        with open(path, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        if gz:
            with gzip.open(path, "rb") as fh:
                return fh.read(_HEAD)
        with open(path, "rb") as fh:
            return fh.read(_HEAD)
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read NIfTI file ({getattr(exc, 'strerror', None) or exc})",
                         path) from None


def _is_gzip_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _head_of_blob(path: Path, blob: bytes) -> bytes:
    if bytes(blob[:2]) == b"\x1f\x8b":
        try:
            return zlib.decompressobj(31).decompress(bytes(blob), _HEAD)
        except zlib.error as exc:
            raise InputError(f"gzip data is corrupt ({exc})", path) from None
    return bytes(blob[:_HEAD])


def _parse(path: Path, head: bytes):
    """nibabel's header of a single-file NIfTI-1/2 from its first bytes."""
    nib = require("nibabel", path)
    size = int.from_bytes(head[:4], "little") if len(head) >= 4 else 0
    if size not in (348, 540):
        size = int.from_bytes(head[:4], "big") if len(head) >= 4 else 0
    klass = {348: nib.Nifti1Header, 540: nib.Nifti2Header}.get(size)
    if klass is None:
        raise InputError("not a NIfTI file (header size is neither 348 nor 540)", path)
    try:
        h = klass.from_fileobj(io.BytesIO(head), check=False)
    except Exception as exc:  # noqa: BLE001 - nibabel's HeaderDataError and friends
        raise InputError(f"NIfTI header does not parse ({' '.join(str(exc).split())[:160]})",
                         path) from None
    magic = bytes(h["magic"]).rstrip(b"\x00")
    if magic not in (b"n+1", b"n+2"):
        raise InputError(f"not a single-file NIfTI image (magic {magic!r}; .hdr/.img pairs are "
                         "not supported)", path)
    return h


def lps_geometry(header) -> tuple[np.ndarray, np.ndarray, str]:
    """(directions (3, 3) rows = step of i, j, k in LPS mm; origin; 'sform'|'qform'|'pixdim')."""
    if int(header["sform_code"]) > 0:
        aff, which = header.get_sform(), "sform"
    elif int(header["qform_code"]) > 0:
        aff, which = header.get_qform(), "qform"
    else:
        zooms = [float(z) for z in header.get_zooms()[:3]]
        return np.diag(zooms) + 0.0, np.zeros(3), "pixdim"
    aff = _f32_decimal(np.asarray(aff, np.float64))
    m = _RAS_TO_LPS @ aff[:3, :3]
    origin = _RAS_TO_LPS @ aff[:3, 3]
    return m.T + 0.0, origin + 0.0, which


def _spatial_shape(shape, path) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3 or any(s != 1 for s in shape[3:]):
        raise InputError(f"wrong dimension: a NIfTI label map or CT must be 3D (extra axes of "
                         f"size 1 allowed), got shape {list(shape)}", path)
    return shape[:3]


def _scaling(header) -> tuple[float | None, float | None]:
    slope, inter = header.get_slope_inter()
    if slope is not None and (not np.isfinite(slope) or slope in (0.0, 1.0)):
        slope = None if (inter is None or inter == 0) else 1.0
    if inter is not None and (not np.isfinite(inter) or inter == 0):
        inter = None if slope is None else 0.0
    return slope, inter


def read_nifti_header(path, blob: bytes | None = None) -> VolumeHeader:
    """Header of a NIfTI file, parsed from ``blob`` (the file's bytes) when given."""
    path = Path(path)
    head = _head_of_file(path) if blob is None else _head_of_blob(path, blob)
    h = _parse(path, head)
    I, J, K = _spatial_shape(h.get_data_shape(), path)
    disk = np.dtype(h.get_data_dtype())
    if I * J * K * max(disk.itemsize, 2) > max_volume_bytes():  # the NRRD reader's limit
        raise InputError(f"a {I}x{J}x{K} {disk} volume is larger than the {max_volume_bytes()} "
                         "bytes a volume may hold (GPUCONV_MAX_VOLUME_BYTES)", path)
    slope, inter = _scaling(h)
    if disk.kind not in "iuf" or disk.kind == "c":
        raise InputError(f"label data must be numeric, got {disk}", path)
    scaled = slope is not None or inter is not None
    whole = (not scaled or (float(slope or 1).is_integer() and float(inter or 0).is_integer()))
    dtype = disk.newbyteorder("=") if disk.kind in "iu" and whole else np.dtype(np.uint16)
    directions, origin, which = lps_geometry(h)
    offset = max(int(h["vox_offset"]), int(h["sizeof_hdr"]) + 4)  # single file: after header
    fields = {"format": "nifti", "sizes": [I, J, K], "affine": which,
              "disk_dtype": disk.str, "disk_shape": [int(s) for s in h.get_data_shape()],
              "vox_offset": offset, "scl_slope": slope, "scl_inter": inter,
              "nifti_version": 2 if int(h["sizeof_hdr"]) == 540 else 1}
    gz = _is_gzip_file(path) if blob is None else bytes(blob[:2]) == b"\x1f\x8b"
    digest = hashlib.blake2b(head[:min(offset, len(head))], digest_size=16).hexdigest()
    return VolumeHeader(path=path, fields=fields, dtype=dtype, shape=(1, I, J, K),
                        directions=directions, origin=origin,
                        encoding="nifti+gzip" if gz else "nifti", data_path=path,
                        data_offset=offset, segments=None, header_hash=digest)


def _array(hdr: VolumeHeader, blob: bytes) -> np.ndarray:
    """The stored voxels (I, J, K), scaling applied, as nibabel would return them."""
    f = hdr.fields
    disk = np.dtype(f["disk_dtype"])
    n = int(np.prod(f["disk_shape"]))
    expected = f["vox_offset"] + n * disk.itemsize
    if hdr.encoding == "nifti+gzip":
        try:
            raw = gunzip(blob, expected)
        except DecodeError as exc:
            try:  # bytes after the voxels (allowed by NIfTI): the first `expected` only
                raw = zlib.decompressobj(31).decompress(bytes(blob), expected)
            except zlib.error:  # the precise message is the first one
                raw = b""
            if len(raw) < expected:
                raise InputError(str(exc), hdr.path) from None
    else:
        raw = blob
    if len(raw) < expected:
        raise InputError(f"data is truncated: {len(raw) - f['vox_offset']} of "
                         f"{n * disk.itemsize} bytes", hdr.path)
    arr = np.frombuffer(raw, disk, count=n, offset=f["vox_offset"])
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    arr = arr.reshape(hdr.spatial_shape, order="F")
    slope, inter = f["scl_slope"], f["scl_inter"]
    if slope is not None or inter is not None:
        s, b = float(slope or 1.0), float(inter or 0.0)
        if s.is_integer() and b.is_integer() and arr.dtype.kind in "iu":
            arr = arr.astype(np.int64) * int(s) + int(b)
        else:
            arr = arr.astype(np.float64) * s + b
    return arr


def decode_nifti(hdr: VolumeHeader, blob: bytes) -> np.ndarray:
    """Label layers (1, I, J, K) in the header's dtype (see the float rule above)."""
    arr = _array(hdr, blob)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        bad = ~finite | (arr != np.round(arr)) | (arr < 0) | (arr > 65535)
        if bad.any():
            v = arr[bad].flat[0]
            raise InputError(f"float label data ({np.dtype(hdr.fields['disk_dtype']).name}) "
                             f"with a value that is not a whole number in 0..65535 ({v!r}); a "
                             "label map needs integer labels", hdr.path)
        arr = arr.astype(np.uint16, order="F")
    elif arr.dtype != hdr.dtype:
        arr = arr.astype(hdr.dtype, order="F")
    return arr[np.newaxis]


def read_nifti_volume(path) -> LabelVolume:
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc})", path) from None
    hdr = read_nifti_header(path, blob)
    return LabelVolume(hdr, decode_nifti(hdr, blob))


# --- CT -------------------------------------------------------------------------------------

def read_nifti_ct_header(path):
    from gpuconv.dataset.grid import CtHeader
    path = Path(path)
    hdr = read_nifti_header(path)
    return CtHeader(path, hdr.fields, hdr.spatial_shape, hdr.directions, hdr.origin)


def read_nifti_ct(path):
    """(CtHeader, (I, J, K) values with scl_slope/scl_inter applied: HU for a CT)."""
    from gpuconv.dataset.grid import CtHeader
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read CT file ({exc.strerror or exc})", path) from None
    hdr = read_nifti_header(path, blob)
    data = _array(hdr, blob)
    if data.dtype == np.int64 and data.size and -32768 <= data.min() and data.max() <= 32767:
        data = data.astype(np.int16, order="F")
    return CtHeader(path, hdr.fields, hdr.spatial_shape, hdr.directions, hdr.origin), data


# --- writing (synthetic corpora, tests) -----------------------------------------------------

def nifti_bytes(data: np.ndarray, directions, origin, *, compress: bool = True,
                scl_slope: float | None = None, scl_inter: float | None = None) -> bytes:
    """A NIfTI-1 image of ``data`` (I, J, K) on the LPS grid (directions rows, origin); sform
    and qform both set (code 1, scanner), so either choice reads the same grid."""
    nib = require("nibabel")
    aff = np.eye(4)
    aff[:3, :3] = _RAS_TO_LPS @ np.asarray(directions, float).T
    aff[:3, 3] = _RAS_TO_LPS @ np.asarray(origin, float)
    img = nib.Nifti1Image(np.asarray(data), aff)
    img.set_sform(aff, code=1)
    img.set_qform(aff, code=1)
    if scl_slope is not None:
        img.header.set_slope_inter(scl_slope, scl_inter or 0.0)
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw


def write_nifti(path, data: np.ndarray, directions, origin, **kw) -> Path:
    from gpuconv.writers.atomic import write_bytes_atomic
    path = Path(path)
    write_bytes_atomic(path, nifti_bytes(data, directions, origin,
                                         compress=path.name.lower().endswith(".gz"), **kw))
    return path


def dataset_json_names(text: str, path) -> list[str]:
    """Class names from a Medical Segmentation Decathlon / nnU-Net ``dataset.json``: its
    ``labels`` map, ``{"0": "background", "1": "liver"}`` (MSD, nnU-Net v1) or
    ``{"background": 0, "liver": 1}`` (nnU-Net v2).  Entry v-1 names label value v, as for
    ``--classes`` of plain maps; value 0 (background) is not a class; a value without a name
    is named "v"; region-based labels (lists of values) are refused."""
    import json
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InputError(f"classes file is not valid JSON ({exc})", path) from None
    labels = doc.get("labels") if isinstance(doc, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise InputError("a JSON classes file needs a 'labels' map (an MSD / nnU-Net "
                         "dataset.json)", path)
    by_value: dict[int, str] = {}
    for k, v in labels.items():
        if isinstance(v, list):
            raise InputError(f"region-based label '{k}' (a list of values) is not supported",
                             path)
        try:
            value, name = (int(k), str(v)) if str(k).strip().lstrip("-").isdigit() \
                else (int(v), str(k))
        except (TypeError, ValueError):
            raise InputError(f"label '{k}: {v}' is neither 'value: name' nor 'name: value'",
                             path) from None
        if value in by_value:
            raise InputError(f"label value {value} is named twice", path)
        by_value[value] = name
    top = max(by_value)
    if top < 1:
        raise InputError("the labels map names no value above 0", path)
    return [by_value.get(v, str(v)) for v in range(1, top + 1)]
