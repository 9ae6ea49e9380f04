"""Reading NRRD label volumes and their 3D Slicer segment metadata.

pynrrd parses the header fields; the header is found, limited and decoded here and the payload is
decoded in ``decode.py`` (pynrrd's single-threaded stdlib-zlib read is 4-5x slower than
libdeflate on these files).

Array convention (the whole package relies on it): a volume is held as ``layers`` with shape
``(L, I, J, K)`` exactly as pynrrd indexes it (Fortran order, first NRRD axis first).  ``L`` is 1
for a plain 3D file and the size of the ``list`` axis for a layered Slicer file.  ``i`` is the
image x axis (columns), ``j`` the image y axis (rows), ``k`` the slice.  ``layers[l].T`` is the
same memory seen as ``(K, J, I)`` - slice, row, column - without a copy.

Limits (hostile or damaged files fail with one ``InputError``, in bounded time and memory; README
"Bad input" lists them):

- only regular files are read (a FIFO, a device such as ``data file: /dev/zero``, a folder: an
  error, found with ``fstat`` on a non-blocking open, so a FIFO never blocks);
- the header is at most ``MAX_HEADER_BYTES`` (1 MiB), found with one linear scan; LF or CRLF
  line ends (as pynrrd); its text is UTF-8 (Slicer writes UTF-8 segment names), an undecodable
  byte outside a comment is an error;
- every header number is checked before anything is allocated: ``dimension`` 3 or 4, one
  ``sizes`` entry per axis, the element count in Python integers (no wrap-around), the decoded
  size at most ``max_volume_bytes()`` (8 GiB, env ``GPUCONV_MAX_VOLUME_BYTES``), ``line skip`` /
  ``byte skip`` within the file, Segment fields integers within the data type's range, voxel
  axes finite, non-singular and at most 1e9 mm, the origin finite within 1e15 mm;
- an input or data file larger than the volume limit + 1/64 + 64 MiB is refused before reading;
- a compressed payload is decoded to at most the declared size; one that inflates to more is an
  error (``decode.py``).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import nrrd
import numpy as np

from gpuconv.errors import InputError, shown
from gpuconv.io.decode import DecodeError, decode_payload

_NRRD_TYPES = nrrd.reader._TYPEMAP_NRRD2NUMPY  # the spec's type names -> numpy codes
_SEGMENT_KEY = re.compile(r"^Segment(\d{1,9})_(\w+)$")
_INT = re.compile(r"[+-]?\d{1,40}")
_ENCODINGS = ("raw", "gzip", "gz", "bzip2", "bz2")
_HEADER_CHUNK = 1 << 16

MAX_HEADER_BYTES = 1 << 20          # a Slicer header with 200 segments is ~60 KB
DEFAULT_MAX_VOLUME_BYTES = 8 << 30  # decoded payload of one file
MAX_EXTENT_OFFSET = 1 << 31
MAX_SPACING_MM = 1e9                # 1000 km: anything longer is damage, not a scanner
MAX_ORIGIN_MM = 1e15


def max_volume_bytes() -> int:
    """Largest decoded payload accepted (``GPUCONV_MAX_VOLUME_BYTES``, default 8 GiB)."""
    v = os.environ.get("GPUCONV_MAX_VOLUME_BYTES", "")
    try:
        return int(v) if v.strip() else DEFAULT_MAX_VOLUME_BYTES
    except ValueError:
        return DEFAULT_MAX_VOLUME_BYTES


def max_file_bytes() -> int:
    """Largest input or data file read: the volume limit, deflate/bzip2 worst-case growth and
    room for a header and skipped bytes."""
    limit = max_volume_bytes()
    return limit + limit // 64 + (64 << 20)


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
    data_offset: int                        # where the payload starts in data_path
    byte_skip: int = 0
    line_skip: int = 0
    segments: list[Segment] | None = None   # None: plain label map without Segment fields
    extent_offset: tuple[int, int, int] = (0, 0, 0)  # Segmentation_ReferenceImageExtentOffset
    header_hash: str = ""                   # BLAKE2b of the header bytes this was parsed from

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
    def n_elements(self) -> int:
        return math.prod(int(s) for s in self.shape)

    @property
    def n_bytes(self) -> int:
        return self.n_elements * self.dtype.itemsize


@dataclass
class LabelVolume:
    header: VolumeHeader
    layers: np.ndarray = field(repr=False)  # (L, I, J, K), Fortran order


@dataclass
class InputFile:
    """One read of an input: its header parsed from the very bytes that are hashed."""

    header: VolumeHeader
    blob: bytes                 # the input file's bytes
    data_blob: bytes            # the bytes holding the payload (``blob`` for attached headers)


# --------------------------------------------------------------------------- reading files

def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _cannot(what: str, path: Path, exc: OSError, owner: Path) -> InputError:
    if isinstance(exc, FileNotFoundError) and os.path.islink(path):
        return InputError(f"{what} is a dangling symbolic link", owner)
    return InputError(f"cannot read {what} ({exc.strerror or exc})", owner)


def open_regular(path: Path, what: str, owner: Path) -> tuple[int, os.stat_result]:
    """A read-only descriptor of a regular file (FIFOs, devices and folders refused without
    blocking: O_NONBLOCK, then fstat)."""
    if "\x00" in str(path):
        raise InputError(f"{what} name holds a NUL byte", owner)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if isinstance(exc, IsADirectoryError):
            raise InputError(f"{what} is a folder, not a file", owner) from None
        raise _cannot(what, path, exc, owner) from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise _cannot(what, path, exc, owner) from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = _kind(st.st_mode)
        raise InputError(f"{what} is {kind}, not a regular file" if kind.startswith("a ")
                         else f"{what} is not a regular file", owner)
    return fd, st


def _check_regular(path: Path, what: str, owner: Path) -> None:
    fd, st = open_regular(path, what, owner)
    os.close(fd)
    if st.st_size > max_file_bytes():
        raise InputError(f"{what} is {st.st_size} bytes, above the {max_file_bytes()} byte "
                         "limit (GPUCONV_MAX_VOLUME_BYTES)", owner)


def read_regular_file(path, what: str = "file", owner=None) -> bytes:
    """All bytes of a regular file, at most ``max_file_bytes()`` (checked on its size before
    reading, and on what was read, in case it grew meanwhile)."""
    path = Path(path)
    owner = path if owner is None else owner
    fd, st = open_regular(path, what, owner)
    limit = max_file_bytes()
    try:
        if st.st_size > limit:
            raise InputError(f"{what} is {st.st_size} bytes, above the {limit} byte limit "
                             "(GPUCONV_MAX_VOLUME_BYTES)", owner)
        with os.fdopen(fd, "rb", buffering=0, closefd=True) as fh:
            fd = -1
            data = fh.readall()   # what Path.read_bytes does: sized by fstat, loops to EOF
    except OSError as exc:
        raise _cannot(what, path, exc, owner) from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > limit:
        raise InputError(f"{what} grew past the {limit} byte limit while being read", owner)
    return data


def _read_header_bytes(path: Path) -> bytes:
    """The start of the file, enough to hold the whole header (at most 1 MiB + one chunk)."""
    fd, _ = open_regular(path, "file", path)
    parts: list[bytes] = []
    total = 0
    pos = 0
    buf = b""
    try:
        while True:
            chunk = os.read(fd, _HEADER_CHUNK)
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            buf = b"".join(parts) if len(parts) > 1 else chunk
            parts = [buf]
            if len(buf) >= 4 and not buf.startswith(b"NRRD"):
                break
            pos, end, _ = _scan_header(buf, pos)
            if end is not None or total > MAX_HEADER_BYTES:
                break
    except OSError as exc:
        raise _cannot("file", path, exc, path) from None
    finally:
        os.close(fd)
    return buf


# --------------------------------------------------------------------------- the header

_BLANK_LINE = re.compile(rb"\n[ \t\r\x0b\x0c]*\n")


def _scan_header(buf: bytes, pos: int) -> tuple[int, int | None, int | None]:
    """Look for the end of the header in ``buf`` from ``pos``: (where to resume, end of the header
    lines, payload offset).  The header ends at the first blank line after the magic line
    (whitespace only, so ``\\r\\n`` too, as pynrrd reads it).  One regular-expression scan, so
    linear however the file arrives in chunks."""
    first = buf.find(b"\n")
    if first < 0:
        return 0, None, None
    m = _BLANK_LINE.search(buf, max(pos, first))
    if m is None:
        return max(first, buf.rfind(b"\n")), None, None
    return m.end(), m.start() + 1, m.end()


def split_header(blob: bytes, path) -> tuple[list[str], int, str]:
    """Header lines (decoded text, magic first), the payload offset and the header's hash."""
    if not blob.startswith(b"NRRD"):
        raise InputError("not an NRRD file (no 'NRRD000x' magic line)", path)
    _, end, offset = _scan_header(blob[:MAX_HEADER_BYTES + 2], 0)
    if end is None:
        if len(blob) > MAX_HEADER_BYTES:
            raise InputError(f"header is longer than {MAX_HEADER_BYTES} bytes (no blank line "
                             "ends it within the limit)", path)
        end = offset = len(blob)  # detached header, or a file that holds a header only
    raw = blob[:end]
    lines = []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        if line.startswith(b"#"):  # comments are ignored: any bytes will do
            lines.append(line.decode("utf-8", "replace"))
            continue
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InputError(f"header line {n} is not UTF-8 text (byte 0x{line[exc.start]:02x} "
                             f"at column {exc.start + 1})", path) from None
    if lines and lines[-1] == "":
        lines.pop()
    return lines, offset, hashlib.blake2b(raw, digest_size=16).hexdigest()


_FIELD_SPLIT = re.compile(r":=?")
# integer fields pynrrd parses through float() ("sizes: 4.7" would be 4, "sizes: nan" a NumPy
# cast warning, 2**64 + 1 a wrapped value): checked as integers from the text first
_STRICT_INT_FIELDS = {"sizes": "'sizes'", "dimension": "'dimension'",
                      "line skip": "'line skip'", "lineskip": "'line skip'",
                      "byte skip": "'byte skip'", "byteskip": "'byte skip'"}


def _parse_fields(lines: list[str], path) -> dict:
    if not lines or not lines[0].startswith("NRRD"):
        raise InputError("not an NRRD file (no 'NRRD000x' magic line)", path)
    exact = {}
    for line in lines[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, value = _FIELD_SPLIT.split(line.rstrip(), maxsplit=1)
        key = key.strip()
        if key in _STRICT_INT_FIELDS and key not in exact:
            parts = value.split()
            if len(parts) > 16:  # NRRD's maximum dimension
                raise InputError(f"{_STRICT_INT_FIELDS[key]} has {len(parts)} entries (NRRD "
                                 "allows at most 16 axes)", path)
            exact[key] = _int_list(value.strip(), _STRICT_INT_FIELDS[key], path)
            if key == "sizes":  # beyond 2**53 pynrrd's float() is inexact (and warns)
                for v in exact[key]:
                    if v > 2**53:
                        raise InputError(f"'sizes' {v} is out of range (at most 2**53)", path)
    try:
        fields = dict(nrrd.read_header(lines))
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, ... for bad headers
        raise InputError(f"header does not parse ({shown(exc, 160)})", path) from None
    if "sizes" in exact:  # the exact integers, not pynrrd's float round trip
        fields["sizes"] = exact["sizes"]
    return fields


def _int_field(text, name: str, path, lo: int | None = None, hi: int | None = None) -> int:
    """An integer header value, or one InputError naming the field."""
    t = str(text).strip()
    if not _INT.fullmatch(t):
        raise InputError(f"{name} is not an integer ({shown(t, 40) or 'empty'})", path)
    v = int(t)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if lo is not None and hi is not None else (
            f">= {lo}" if lo is not None else f"<= {hi}")
        raise InputError(f"{name} {v} is out of range ({rng})", path)
    return v


def _int_list(value, name: str, path) -> list[int]:
    parts = value.split() if isinstance(value, str) else list(np.asarray(value).ravel())
    return [_int_field(p, name, path) for p in parts]


def parse_segments(fields: dict, layered: bool, path=None,
                   dtype: np.dtype | None = None) -> list[Segment] | None:
    """Slicer ``SegmentN_*`` fields -> segments; None when the file has none (plain label map).

    Older Slicer files lack ``_Layer`` (each segment had a layer of its own in 4D files, so the
    layer is N; a 3D file has only layer 0) or ``_LabelValue`` (the value is 1).  A present
    ``_LabelValue``, ``_Layer`` or ``_Extent`` that is not integer is an InputError naming the
    field; a label value outside ``dtype``'s range too.
    """
    by_index: dict[int, dict[str, str]] = {}
    for key, value in fields.items():
        m = _SEGMENT_KEY.match(key)
        if m:
            by_index.setdefault(int(m.group(1)), {})[m.group(2)] = str(value).strip()
    if not by_index:
        return None
    lo = hi = None
    if dtype is not None:
        info = np.iinfo(dtype)
        lo, hi = int(info.min), int(info.max)
    segments = []
    for n in sorted(by_index):
        f = by_index[n]
        extent = None
        if f.get("Extent"):
            parts = f["Extent"].split()
            if len(parts) != 6:
                raise InputError(f"Segment{n}_Extent must be 6 integers "
                                 f"({shown(f['Extent'], 40)})", path)
            extent = tuple(_int_field(p, f"Segment{n}_Extent", path) for p in parts)
        if "LabelValue" in f:
            value = _int_field(f["LabelValue"], f"Segment{n}_LabelValue", path)
            if lo is not None and not lo <= value <= hi:
                raise InputError(f"Segment{n}_LabelValue {value} is outside the range of "
                                 f"{np.dtype(dtype).name} data ({lo}..{hi})", path)
        else:
            value = 1
        if "Layer" in f:
            layer = _int_field(f["Layer"], f"Segment{n}_Layer", path)
        else:
            layer = n if layered else 0
        segments.append(Segment(
            index=n,
            name=f.get("Name", f.get("ID", f"Segment_{n}")),
            label_value=value,
            layer=layer,
            id=f.get("ID", ""),
            extent=extent,
        ))
    return segments


def _finite_rows(a: np.ndarray) -> bool:
    return bool(np.isfinite(a).all())


def geometry_from_fields(fields: dict, spatial_axes: list[int], dim: int | None = None,
              path=None) -> np.ndarray:
    """(3, 3) direction matrix of the spatial axes; falls back to ``spacings`` or 1 mm.
    Infinite or singular geometry is an InputError (volumes and grids would be meaningless).
    (Also used for CT headers by ``dataset/grid.py``.)"""
    if dim is None:
        dim = len(fields.get("sizes", []))
    rows = None
    source = "'space directions'"
    sd = fields.get("space directions")
    if sd is not None:
        try:
            sd = np.asarray(sd, dtype=float)
        except (TypeError, ValueError):
            sd = None
        if sd is not None and sd.ndim == 2 and sd.shape[0] == dim:
            cand = sd[spatial_axes]
            if cand.shape == (3, 3) and not np.isnan(cand).any():
                if not _finite_rows(cand):
                    raise InputError("'space directions' hold an infinite number", path)
                rows = cand
    if rows is None:
        source = "'spacings'"
        sp = fields.get("spacings")
        if sp is not None:
            try:
                sp = np.asarray(sp, dtype=float).ravel()
            except (TypeError, ValueError):
                raise InputError("'spacings' is not a list of numbers", path) from None
            if sp.shape != (dim,):
                raise InputError(f"'spacings' has {sp.size} entries for dimension {dim}", path)
            sp = sp[spatial_axes]
            if np.isinf(sp).any():
                raise InputError("'spacings' hold an infinite number", path)
            rows = np.diag(np.where(np.isnan(sp), 1.0, sp))
        else:
            rows = np.eye(3)
    with np.errstate(all="ignore"):
        norms = np.linalg.norm(rows, axis=1)
    if (norms > MAX_SPACING_MM).any():  # volumes of whole scans stay finite, far from 1e308
        raise InputError(f"{source} give a voxel axis longer than {MAX_SPACING_MM:g} mm", path)
    with np.errstate(all="ignore"):
        det = abs(float(np.linalg.det(rows)))
    if not np.isfinite(norms).all() or not math.isfinite(det):
        raise InputError("voxel geometry overflows (space directions or spacings too large)",
                         path)
    if (norms == 0).any() or det <= 1e-12 * float(np.prod(norms)):
        raise InputError(f"{source} are singular (a zero or degenerate voxel axis)", path)
    return rows


def _data_path(fields: dict, path: Path) -> Path | None:
    data_file = fields.get("data file") or fields.get("datafile")
    if not data_file:
        return None
    data_file = str(data_file)
    if "\x00" in data_file:
        raise InputError("'data file' holds a NUL byte", path)
    if data_file.startswith("LIST") or len(data_file.split()) > 1:
        raise InputError("detached headers with several data files are not supported", path)
    try:
        return (path.parent / data_file).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputError(f"'data file' {shown(data_file, 60)} cannot be resolved ({exc})",
                         path) from None


def read_header(path) -> VolumeHeader:
    """Parse the header (attached ``.nrrd`` or detached ``.nhdr``) without decoding data.

    Reads at most about 1 MiB; the data file of a detached header must be a regular file."""
    path = Path(path)
    blob = _read_header_bytes(path)
    lines, offset, digest = split_header(blob, path)
    hdr = header_from_fields(path, _parse_fields(lines, path), offset, digest)
    if hdr.data_path != path:
        _check_regular(hdr.data_path, f"data file {shown(hdr.data_path.name, 80)}", path)
    return hdr


def header_from_fields(path: Path, fields: dict, offset: int, header_hash: str = "",
                       image: bool = False) -> VolumeHeader:
    """The checked header; ``image``: a CT (any numeric type, 3D, no Segment fields)."""
    path = Path(path)
    type_name = fields.get("type")
    if type_name not in _NRRD_TYPES:
        raise InputError(f"unknown NRRD type '{shown(type_name, 40)}'", path)
    code = _NRRD_TYPES[type_name]
    if code[0] not in ("iuf" if image else "iu"):
        raise InputError(f"{'CT' if image else 'label'} data must be "
                         f"{'numeric' if image else 'integer'}, got '{type_name}'", path)
    dtype = np.dtype(code)
    if dtype.itemsize > 1:
        endian = fields.get("endian")
        if endian not in ("little", "big"):
            raise InputError("multi-byte data needs an 'endian: little|big' field", path)
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")

    sizes = _int_list(fields.get("sizes", []), "'sizes'", path)
    dim = (_int_field(fields["dimension"], "'dimension'", path)
           if "dimension" in fields else len(sizes))
    if image and dim != 3:
        raise InputError("a CT volume must be 3D, got sizes "
                         f"{shown(' '.join(map(str, sizes)), 80)}", path)
    if dim not in (3, 4):
        raise InputError(f"wrong dimension: expected a 3D label map or a 4D layered "
                         f"segmentation, got dimension {dim}", path)
    if len(sizes) != dim or min(sizes) < 1:
        raise InputError(f"bad 'sizes' field {shown(' '.join(map(str, sizes)), 80)} for "
                         f"dimension {dim}", path)
    kinds = [str(k).lower() for k in fields.get("kinds", [])] or ["domain"] * dim
    if len(kinds) != dim:
        raise InputError(f"'kinds' has {len(kinds)} entries for dimension {dim}", path)
    if dim == 3:
        nonspatial = [a for a, k in enumerate(kinds) if k in ("list", "vector")]
        if nonspatial:
            raise InputError(f"wrong dimension: a 3D label map needs 3 spatial axes, "
                             f"got kinds '{' '.join(kinds)}'", path)
        shape = (1, *sizes)
        spatial_axes = [0, 1, 2]
    else:
        if kinds[0] not in ("list", "vector", "point", "covariant-vector", "none", "???"):
            raise InputError("wrong dimension: a 4D file must have its layer ('list') axis "
                             f"first, got kinds '{shown(' '.join(kinds), 80)}'", path)
        shape = tuple(sizes)
        spatial_axes = [1, 2, 3]
    n_bytes = math.prod(shape) * dtype.itemsize   # Python ints: no wrap-around
    limit = max_volume_bytes()
    if n_bytes > limit:
        raise InputError(f"sizes {' '.join(map(str, sizes))} declare {n_bytes} bytes of data, "
                         f"above the {limit} byte limit (GPUCONV_MAX_VOLUME_BYTES)", path)

    encoding = str(fields.get("encoding", "raw"))
    if encoding.lower() not in _ENCODINGS:
        raise InputError(f"unsupported NRRD encoding '{shown(encoding, 40)}' (use raw, gzip or "
                         "bzip2)", path)

    origin = fields.get("space origin", [0.0, 0.0, 0.0])
    try:
        origin = np.asarray(origin, dtype=float)
    except (TypeError, ValueError):
        origin = np.zeros(3)
    if origin.shape != (3,) or np.isnan(origin).any():
        origin = np.zeros(3)
    if np.isinf(origin).any() or (np.abs(origin) > MAX_ORIGIN_MM).any():
        raise InputError(f"'space origin' holds an infinite number or one beyond "
                         f"{MAX_ORIGIN_MM:g} mm", path)

    data_path = _data_path(fields, path)
    if data_path is not None:
        offset = 0
    else:
        data_path = path
    line_skip = _int_field(fields.get("line skip", fields.get("lineskip", 0)), "'line skip'",
                           path, lo=0)
    byte_skip = _int_field(fields.get("byte skip", fields.get("byteskip", 0)), "'byte skip'",
                           path, lo=-1)
    if byte_skip > limit:
        raise InputError(f"'byte skip' {byte_skip} is above the {limit} byte limit", path)

    layered = dim == 4
    segments = None if image else parse_segments(fields, layered, path, dtype)
    if segments is not None:
        for s in segments:
            if not 0 <= s.layer < shape[0]:
                raise InputError(f"label/segment mismatch: segment '{s.name}' is in layer "
                                 f"{s.layer} but the file has {shape[0]} layer(s)", path)
    eo_text = str(fields.get("Segmentation_ReferenceImageExtentOffset", "")).strip()
    extent_offset = (0, 0, 0)
    if eo_text:
        eo = eo_text.split()
        if len(eo) != 3:
            raise InputError("Segmentation_ReferenceImageExtentOffset must be 3 integers "
                             f"({shown(eo_text, 40)})", path)
        extent_offset = tuple(
            _int_field(v, "Segmentation_ReferenceImageExtentOffset", path,
                       lo=-MAX_EXTENT_OFFSET, hi=MAX_EXTENT_OFFSET) for v in eo)

    return VolumeHeader(
        path=path, fields=fields, dtype=dtype, shape=shape,
        directions=geometry_from_fields(fields, spatial_axes, dim, path), origin=origin,
        encoding=encoding, data_path=data_path,
        data_offset=offset, byte_skip=byte_skip, line_skip=line_skip, segments=segments,
        extent_offset=extent_offset, header_hash=header_hash)


# --------------------------------------------------------------------------- the payload

def _payload(hdr: VolumeHeader, data_blob: bytes) -> memoryview:
    """The encoded payload inside ``data_blob`` (the bytes of ``hdr.data_path``)."""
    start = hdr.data_offset if hdr.data_path == hdr.path else 0
    if hdr.line_skip:
        if hdr.line_skip > len(data_blob) - start:
            raise InputError(f"'line skip' {hdr.line_skip} passes the end of the data "
                             f"({len(data_blob) - start} bytes)", hdr.path)
        for _ in range(hdr.line_skip):
            nl = data_blob.find(b"\n", start)
            if nl < 0:
                raise InputError(f"'line skip' {hdr.line_skip} passes the end of the data",
                                 hdr.path)
            start = nl + 1
    return memoryview(data_blob)[start:]


def read_data_blob(hdr: VolumeHeader, blob: bytes | None = None) -> bytes:
    """Bytes of the file that holds the payload (``blob`` is reused for attached headers)."""
    if hdr.data_path == hdr.path:
        if blob is not None:
            return blob
        return read_regular_file(hdr.path)
    return read_regular_file(hdr.data_path, f"data file {shown(hdr.data_path.name, 80)}",
                             hdr.path)


def read_input(path) -> InputFile:
    """Read one input once: the file (and a detached header's data file) and its header parsed
    from those very bytes, so what is hashed is what is converted."""
    path = Path(path)
    blob = read_regular_file(path)
    lines, offset, digest = split_header(blob, path)
    hdr = header_from_fields(path, _parse_fields(lines, path), offset, digest)
    return InputFile(hdr, blob, read_data_blob(hdr, blob))


def reread_input(path, prepass: VolumeHeader | None = None) -> InputFile:
    """``read_input`` for a conversion whose pre-pass already read this file's header: the
    header is parsed again from the bytes now read (and hashed), and a header that differs from
    the pre-pass's (the file was rewritten in between) is an InputError - the class list and
    split were planned from the old one."""
    f = read_input(path)
    if prepass is not None and prepass.header_hash and f.header.header_hash != prepass.header_hash:
        raise InputError("the file changed after its header was read at the start of the run "
                         "(its header differs now); run again to convert it", path)
    return f


def read_image_header(path) -> VolumeHeader:
    """A CT volume's header with the label reader's limits (any numeric type, 3D)."""
    path = Path(path)
    blob = _read_header_bytes(path)
    lines, offset, digest = split_header(blob, path)
    hdr = header_from_fields(path, _parse_fields(lines, path), offset, digest, image=True)
    if hdr.data_path != path:
        _check_regular(hdr.data_path, f"data file {shown(hdr.data_path.name, 80)}", path)
    return hdr


def read_image(path) -> tuple[VolumeHeader, np.ndarray]:
    """A CT volume: header and (I, J, K) data as pynrrd indexes it, read once within limits."""
    path = Path(path)
    blob = read_regular_file(path)
    lines, offset, digest = split_header(blob, path)
    hdr = header_from_fields(path, _parse_fields(lines, path), offset, digest, image=True)
    data = decode_layers(hdr, read_data_blob(hdr, blob))[0]
    return hdr, data if data.flags.writeable else data.copy()  # writable, as pynrrd's was


def read_volume(path) -> LabelVolume:
    """Read and decode one label file into ``layers`` of shape (L, I, J, K)."""
    f = read_input(path)
    return LabelVolume(f.header, decode_layers(f.header, f.data_blob))


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
            skip = max(hdr.byte_skip, 0)
            data = decode_payload(hdr.encoding, payload, expected + skip)
            data = memoryview(data)[skip:]
    except DecodeError as exc:
        raise InputError(str(exc), hdr.path) from None
    flat = np.frombuffer(data, dtype=hdr.dtype, count=hdr.n_elements)
    if not flat.dtype.isnative:
        flat = flat.astype(flat.dtype.newbyteorder("="))
    return flat.reshape(hdr.shape, order="F")
