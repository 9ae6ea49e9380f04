"""A small NRRD writer for label volumes (synthetic corpora, vote results).

Writes gzip payloads with libdeflate, which is far faster than pynrrd's zlib level 9 for
corpora of many 512x512xN volumes; the files read back with pynrrd and 3D Slicer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpuconv.writers.atomic import write_bytes_atomic

_TYPE_NAMES = {"u1": "uint8", "i1": "int8", "u2": "uint16", "i2": "int16", "u4": "uint32",
               "i4": "int32", "u8": "uint64", "i8": "int64", "f4": "float", "f8": "double"}


def _vec(v) -> str:
    return "(" + ",".join(repr(float(x)) for x in v) + ")"


def nrrd_bytes(data: np.ndarray, directions=None, origin=None, extra: dict | None = None,
               encoding: str = "gzip", level: int = 6, space: str = "left-posterior-superior"
               ) -> bytes:
    """NRRD file content for ``data`` indexed (I, J, K) or (L, I, J, K) (layer axis first)."""
    code = data.dtype.str[1:]
    if code not in _TYPE_NAMES:
        raise ValueError(f"cannot write dtype {data.dtype}")
    directions = np.eye(3) if directions is None else np.asarray(directions, float)
    origin = np.zeros(3) if origin is None else np.asarray(origin, float)
    layered = data.ndim == 4
    lines = ["NRRD0004", f"type: {_TYPE_NAMES[code]}", f"dimension: {data.ndim}",
             f"space: {space}", "sizes: " + " ".join(str(s) for s in data.shape),
             "space directions: " + ("none " if layered else "")
             + " ".join(_vec(r) for r in directions),
             "kinds: " + ("list " if layered else "") + "domain domain domain"]
    if data.dtype.itemsize > 1:
        lines.append("endian: little")
    lines += [f"encoding: {encoding}", f"space origin: {_vec(origin)}"]
    for k, v in (extra or {}).items():
        lines.append(f"{k}:={v}")
    raw = np.asarray(data, dtype=data.dtype.newbyteorder("<")).tobytes(order="F")
    if encoding == "gzip":
        import deflate
        payload = bytes(deflate.gzip_compress(raw, level))
    elif encoding == "raw":
        payload = raw
    else:
        raise ValueError("encoding must be gzip or raw")
    # UTF-8, as 3D Slicer writes segment names (ASCII headers are the same bytes)
    return ("\n".join(lines) + "\n\n").encode("utf-8") + payload


def write_nrrd(path, data: np.ndarray, **kw) -> Path:
    path = Path(path)
    write_bytes_atomic(path, nrrd_bytes(data, **kw))
    return path


def segment_extent(mask) -> tuple[int, int, int, int, int, int] | None:
    """(i0, i1, j0, j1, k0, k1), inclusive, of a 3D mask, as Slicer writes SegmentN_Extent;
    None for an empty mask."""
    import numpy as np
    parts = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(np.asarray(mask).any(axis=others))
        if hit.size == 0:
            return None
        parts += [int(hit[0]), int(hit[-1])]
    return tuple(parts)


def slicer_segment_fields(segments, shape_ijk) -> dict:
    """``SegmentN_*`` fields as 3D Slicer writes them; ``segments`` holds dicts with name,
    label_value, layer and optionally color and extent."""
    fields = {}
    I, J, K = shape_ijk
    for n, s in enumerate(segments):
        ext = s.get("extent") or (0, I - 1, 0, J - 1, 0, K - 1)
        fields[f"Segment{n}_Color"] = s.get("color", "0.5 0.5 0.5")
        fields[f"Segment{n}_Extent"] = " ".join(str(int(e)) for e in ext)
        fields[f"Segment{n}_ID"] = s.get("id", f"Segment_{n + 1}")
        fields[f"Segment{n}_LabelValue"] = str(int(s["label_value"]))
        fields[f"Segment{n}_Layer"] = str(int(s.get("layer", 0)))
        fields[f"Segment{n}_Name"] = s["name"]
    fields["Segmentation_MasterRepresentation"] = "Binary labelmap"
    fields["Segmentation_ReferenceImageExtentOffset"] = "0 0 0"
    return fields
