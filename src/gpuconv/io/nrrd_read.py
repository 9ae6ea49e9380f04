"""Reading NRRD label volumes and their 3D Slicer segment metadata.

pynrrd parses the header; the payload is decoded here (see ``decode.py``) because pynrrd's
single-threaded stdlib-zlib read is 4-5x slower than libdeflate on these files.

Array convention (the whole package relies on it): a volume is held as ``layers`` with shape
``(L, I, J, K)`` exactly as pynrrd indexes it (Fortran order, first NRRD axis first).  ``L`` is 1
for a plain 3D file and the size of the ``list`` axis for a layered Slicer file.  ``i`` is the
image x axis (columns), ``j`` the image y axis (rows), ``k`` the slice.  ``layers[l].T`` is the
same memory seen as ``(K, J, I)`` - slice, row, column - without a copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import nrrd
import numpy as np

from gpuconv.io.decode import DecodeError, decode_payload
from gpuconv.errors import InputError

_NRRD_TYPES = nrrd.reader._TYPEMAP_NRRD2NUMPY  # the spec's type names -> numpy codes
_SEGMENT_KEY = re.compile(r"^Segment(\d+)_(\w+)$")
_HEADER_CHUNK = 1 << 16


@dataclass(frozen=True)
class Segment:
    """One 3D Slicer segment: where its voxels live (layer, label value) and what it is called."""

    index: int          # N in SegmentN_*
    name: str
    label_value: int
    layer: int
    id: str = ""
    extent: tuple[int, int, int, int, int, int] | None = None  # i0 i1 j0 j1 k0 k1, inclusive


@dataclass
class VolumeHeader:
    """Everything known about a label file before its payload is decoded."""

    path: Path
    fields: dict
    dtype: np.dtype
    shape: tuple[int, int, int, int]        # (L, I, J, K)
    directions: np.ndarray                  # (3, 3): row a = step vector of spatial axis a, in mm
    origin: np.ndarray                      # (3,) position of voxel (0, 0, 0)
    encoding: str
    data_path: Path
    data_offset: int                        # where the payload starts in data_path (-1: at end)
    byte_skip: int = 0
    line_skip: int = 0
    segments: list[Segment] | None = None   # None: plain label map without Segment fields
    extent_offset: tuple[int, int, int] = (0, 0, 0)  # Segmentation_ReferenceImageExtentOffset

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size per spatial axis in mm (norms of the ``space directions`` rows)."""
        return np.linalg.norm(self.directions, axis=1)

    @property
    def voxel_volume_mm3(self) -> float:
        """|det| of the direction matrix: exact for anisotropic and oblique grids."""
        return float(abs(np.linalg.det(self.directions)))

    @property
    def n_layers(self) -> int:
        return self.shape[0]

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return self.shape[1:]

    @property
    def n_bytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


@dataclass
class LabelVolume:
    header: VolumeHeader
    layers: np.ndarray = field(repr=False)  # (L, I, J, K), Fortran order


def _split_header(blob: bytes, path) -> tuple[list[bytes], int]:
    """Header lines and the byte offset of the payload in an attached-header file."""
    end = blob.find(b"\n\n")
    if end < 0:
        if blob.rstrip(b"\r\n") and not blob.startswith(b"NRRD"):
            raise InputError("not an NRRD file (no 'NRRD000x' magic line)", path)
        end = len(blob)  # detached header, or a file that holds a header only
        offset = len(blob)
    else:
        offset = end + 2
    text = blob[:end].replace(b"\r\n", b"\n")
    return text.split(b"\n"), offset


def _read_header_bytes(path: Path) -> bytes:
    """Read just enough of the file to hold the whole header."""
    with open(path, "rb") as fh:
        blob = fh.read(_HEADER_CHUNK)
        while b"\n\n" not in blob.replace(b"\r\n", b"\n"):
            more = fh.read(_HEADER_CHUNK)
            if not more:
                break
            blob += more
    return blob


def _parse_fields(lines: list[bytes], path) -> dict:
    if not lines or not lines[0].startswith(b"NRRD"):
        raise InputError("not an NRRD file (no 'NRRD000x' magic line)", path)
    try:
        return dict(nrrd.read_header(lines))
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, ... for bad headers
        raise InputError(f"header does not parse ({exc})", path) from None


def parse_segments(fields: dict, layered: bool) -> list[Segment] | None:
    """Slicer ``SegmentN_*`` fields -> segments; None when the file has none (plain label map).

    Older Slicer files lack ``_Layer`` (each segment had a layer of its own in 4D files, so the
    layer is N; a 3D file has only layer 0) or ``_LabelValue`` (the value is 1).
    """
    by_index: dict[int, dict[str, str]] = {}
    for key, value in fields.items():
        m = _SEGMENT_KEY.match(key)
        if m:
            by_index.setdefault(int(m.group(1)), {})[m.group(2)] = str(value).strip()
    if not by_index:
        return None
    segments = []
    for n in sorted(by_index):
        f = by_index[n]
        extent = None
        if f.get("Extent"):
            parts = f["Extent"].split()
            if len(parts) == 6:
                extent = tuple(int(p) for p in parts)
        segments.append(Segment(
            index=n,
            name=f.get("Name", f.get("ID", f"Segment_{n}")),
            label_value=int(f.get("LabelValue", 1)),
            layer=int(f.get("Layer", n if layered else 0)),
            id=f.get("ID", ""),
            extent=extent,
        ))
    return segments


def _geometry(fields: dict, spatial_axes: list[int]) -> np.ndarray:
    """(3, 3) direction matrix of the spatial axes; falls back to ``spacings`` or 1 mm."""
    sd = fields.get("space directions")
    if sd is not None:
        sd = np.asarray(sd, dtype=float)
        if sd.ndim == 2 and sd.shape[0] == len(fields["sizes"]):
            rows = sd[spatial_axes]
            if not np.isnan(rows).any() and rows.shape == (3, 3):
                return rows
    sp = fields.get("spacings")
    if sp is not None:
        sp = np.asarray(sp, dtype=float)[spatial_axes]
        sp = np.where(np.isfinite(sp), sp, 1.0)
        return np.diag(sp)
    return np.eye(3)


def read_header(path) -> VolumeHeader:
    """Parse the header (attached ``.nrrd`` or detached ``.nhdr``) without decoding data."""
    path = Path(path)
    try:
        blob = _read_header_bytes(path)
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc})", path) from None
    lines, offset = _split_header(blob, path)
    fields = _parse_fields(lines, path)
    return header_from_fields(path, fields, offset)


def header_from_fields(path: Path, fields: dict, offset: int) -> VolumeHeader:
    type_name = fields.get("type")
    if type_name not in _NRRD_TYPES:
        raise InputError(f"unknown NRRD type '{type_name}'", path)
    code = _NRRD_TYPES[type_name]
    if code[0] not in "iu":
        raise InputError(f"label data must be integer, got '{type_name}'", path)
    dtype = np.dtype(code)
    if dtype.itemsize > 1:
        endian = fields.get("endian")
        if endian not in ("little", "big"):
            raise InputError("multi-byte data needs an 'endian: little|big' field", path)
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")

    sizes = [int(s) for s in fields.get("sizes", [])]
    dim = int(fields.get("dimension", len(sizes)))
    kinds = [str(k).lower() for k in fields.get("kinds", [])] or ["domain"] * dim
    if dim == 3:
        nonspatial = [a for a, k in enumerate(kinds) if k in ("list", "vector")]
        if nonspatial:
            raise InputError(f"wrong dimension: a 3D label map needs 3 spatial axes, "
                             f"got kinds '{' '.join(kinds)}'", path)
        shape = (1, *sizes)
        spatial_axes = [0, 1, 2]
    elif dim == 4:
        if kinds[0] not in ("list", "vector", "point", "covariant-vector", "none", "???"):
            raise InputError("wrong dimension: a 4D file must have its layer ('list') axis "
                             f"first, got kinds '{' '.join(kinds)}'", path)
        shape = tuple(sizes)
        spatial_axes = [1, 2, 3]
    else:
        raise InputError(f"wrong dimension: expected a 3D label map or a 4D layered "
                         f"segmentation, got dimension {dim}", path)
    if len(shape) != 4 or min(shape) < 1:
        raise InputError(f"bad 'sizes' field {sizes}", path)

    origin = np.asarray(fields.get("space origin", [0.0, 0.0, 0.0]), dtype=float)
    if origin.shape != (3,) or np.isnan(origin).any():
        origin = np.zeros(3)

    data_file = fields.get("data file") or fields.get("datafile")
    if data_file:
        if str(data_file).startswith("LIST") or len(str(data_file).split()) > 1:
            raise InputError("detached headers with several data files are not supported", path)
        data_path = (path.parent / str(data_file)).resolve()
        offset = 0
    else:
        data_path = path
    line_skip = int(fields.get("line skip", fields.get("lineskip", 0)))
    byte_skip = int(fields.get("byte skip", fields.get("byteskip", 0)))

    layered = dim == 4
    segments = parse_segments(fields, layered)
    if segments is not None:
        for s in segments:
            if not 0 <= s.layer < shape[0]:
                raise InputError(f"label/segment mismatch: segment '{s.name}' is in layer "
                                 f"{s.layer} but the file has {shape[0]} layer(s)", path)
    eo = str(fields.get("Segmentation_ReferenceImageExtentOffset", "0 0 0")).split()
    extent_offset = tuple(int(v) for v in eo) if len(eo) == 3 else (0, 0, 0)

    return VolumeHeader(
        path=path, fields=fields, dtype=dtype, shape=shape,
        directions=_geometry(fields, spatial_axes), origin=origin,
        encoding=str(fields.get("encoding", "raw")), data_path=data_path,
        data_offset=offset, byte_skip=byte_skip, line_skip=line_skip, segments=segments,
        extent_offset=extent_offset)


def _payload(hdr: VolumeHeader, data_blob: bytes) -> memoryview:
    """The encoded payload inside ``data_blob`` (the bytes of ``hdr.data_path``)."""
    start = hdr.data_offset if hdr.data_path == hdr.path else 0
    for _ in range(hdr.line_skip):
        nl = data_blob.find(b"\n", start)
        start = len(data_blob) if nl < 0 else nl + 1
    return memoryview(data_blob)[start:]


def read_data_blob(hdr: VolumeHeader, blob: bytes | None = None) -> bytes:
    """Bytes of the file that holds the payload (``blob`` is reused for attached headers)."""
    if blob is not None and hdr.data_path == hdr.path:
        return blob
    try:
        return hdr.data_path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read data file {hdr.data_path.name} "
                         f"({exc.strerror or exc})", hdr.path) from None


def read_volume(path) -> LabelVolume:
    """Read and decode one label file into ``layers`` of shape (L, I, J, K)."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc})", path) from None
    lines, offset = _split_header(blob, path)
    hdr = header_from_fields(path, _parse_fields(lines, path), offset)
    return LabelVolume(hdr, decode_layers(hdr, read_data_blob(hdr, blob)))


def decode_layers(hdr: VolumeHeader, data_blob: bytes) -> np.ndarray:
    """Decode the payload held in ``data_blob`` (see ``read_data_blob``) to (L, I, J, K)."""
    payload = _payload(hdr, data_blob)
    expected = hdr.n_bytes
    raw_encoding = hdr.encoding.lower() == "raw"
    try:
        if raw_encoding:
            if hdr.byte_skip == -1:
                payload = payload[len(payload) - expected:] if len(payload) >= expected else payload
            else:
                payload = payload[hdr.byte_skip:]
            data = decode_payload("raw", payload, expected)
        else:
            data = decode_payload(hdr.encoding, payload, expected + max(hdr.byte_skip, 0))
            data = memoryview(data)[max(hdr.byte_skip, 0):]
    except DecodeError as exc:
        raise InputError(str(exc), hdr.path) from None
    flat = np.frombuffer(data, dtype=hdr.dtype, count=int(np.prod(hdr.shape)))
    if not flat.dtype.isnative:
        flat = flat.astype(flat.dtype.newbyteorder("="))
    return flat.reshape(hdr.shape, order="F")
