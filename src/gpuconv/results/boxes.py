"""From a backend's components to YOLO boxes: class ids, canonical order, normalised text.

The geometric contract (tested in tests/test_geometry.py):
- image x = first spatial axis i (W = size of i), image y = second axis j (H = size of j),
  slice = third axis k; label files are named ``{exam}_{k+1}.txt``;
- a box covers whole pixels: cx = (i0+i1+1)/2/W, cy = (j0+j1+1)/2/H, w = (i1-i0+1)/W,
  h = (j1-j0+1)/H with inclusive bounds, printed with six decimals;
- lines of a file are sorted by class id, then top edge j0, left edge i0, bottom j1, right i1.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from gpuconv.backends.base import SliceComponents
from gpuconv.dataset.classes import ClassMap
from gpuconv.errors import InputError
from gpuconv.io.nrrd_read import VolumeHeader


@dataclass
class BoxTable:
    """Boxes of one exam in canonical order (k, class, j0, i0, j1, i1)."""

    k: np.ndarray
    cls: np.ndarray
    i0: np.ndarray
    i1: np.ndarray
    j0: np.ndarray
    j1: np.ndarray
    pixels: np.ndarray
    width: int   # W = size of axis i
    height: int  # H = size of axis j
    slices: int  # K

    def __len__(self) -> int:
        return len(self.k)


def assign_classes(comp: SliceComponents, hdr: VolumeHeader, class_map: ClassMap) -> np.ndarray:
    """Class id per component; values no segment declares are a label/segment mismatch."""
    return class_ids(comp.layer, comp.value, hdr, class_map)


def class_ids(layer: np.ndarray, value: np.ndarray, hdr: VolumeHeader,
              class_map: ClassMap) -> np.ndarray:
    """Class id per (layer, value) pair; shared by 2D boxes and 3D instances so both agree.

    One 1-D ``np.unique`` per layer (a file has a handful): 25x faster than a 2-D unique over
    (layer, value) pairs on 10^5 components.
    """
    value = np.asarray(value, np.int64)
    if hdr.dtype.kind == "u" and hdr.dtype.itemsize == 8:
        value = value.view(np.uint64)  # components carry int64 bits: uint64 >= 2**63 as is
    out = np.empty(len(value), np.int32)
    if len(value) == 0:
        return out
    layer = np.asarray(layer)
    ids = class_map.ids_for(hdr)
    for lay in np.unique(layer).tolist():
        sel = None if hdr.n_layers == 1 else (layer == lay)
        values, inverse = np.unique(value if sel is None else value[sel], return_inverse=True)
        lut = np.empty(len(values), np.int32)
        for n, v in enumerate(values.tolist()):
            if ids is None:
                lut[n] = class_map.class_of_value(v, hdr.path)
            elif (lay, v) in ids:
                lut[n] = ids[(lay, v)]
            else:
                where = f" in layer {lay}" if hdr.n_layers > 1 else ""
                raise InputError(f"label/segment mismatch: value {v}{where} is not a declared "
                                 "segment", hdr.path)
        if sel is None:
            out[:] = lut[inverse.reshape(-1)]
        else:
            out[sel] = lut[inverse.reshape(-1)]
    return out


def to_box_table(comp: SliceComponents, hdr: VolumeHeader, class_map: ClassMap) -> BoxTable:
    cls = assign_classes(comp, hdr, class_map)
    order = np.lexsort((comp.pixels, comp.i1, comp.j1, comp.i0, comp.j0, cls, comp.k))
    _, W, H, K = hdr.shape
    return BoxTable(k=comp.k[order], cls=cls[order], i0=comp.i0[order], i1=comp.i1[order],
                    j0=comp.j0[order], j1=comp.j1[order], pixels=comp.pixels[order],
                    width=W, height=H, slices=K)


def normalised_boxes(t: BoxTable) -> np.ndarray:
    """(n, 4) float64 cx, cy, w, h following the contract above."""
    W, H = float(t.width), float(t.height)
    return np.stack([(t.i0 + t.i1 + 1) / 2.0 / W, (t.j0 + t.j1 + 1) / 2.0 / H,
                     (t.i1 - t.i0 + 1) / W, (t.j1 - t.j0 + 1) / H], axis=1)


@lru_cache(maxsize=64)
def _fixed_width_lut(count: int, scale: float, divisor: float) -> np.ndarray:
    """(count, 8) uint8: ``f"{k / scale / divisor:.6f}"`` for k < count, the very float
    operations of ``normalised_boxes``; every value lies in [0, 1], so each string has exactly
    8 characters.  Cached: a corpus has one or two slice sizes."""
    numerators = np.arange(count)
    text = "".join(f"{x:.6f}" for x in (numerators / scale / divisor).tolist())
    out = np.frombuffer(text.encode("ascii"), np.uint8)
    assert out.size == 8 * count, "a normalised value left [0, 1]"
    return out.reshape(-1, 8)


def _digits(cls: np.ndarray) -> np.ndarray:
    """Decimal digits of each (non-negative) class id."""
    digits = np.ones(len(cls), np.int64)
    for power in (10, 100, 1000, 10000, 100000):
        digits += cls >= power
    return digits


def yolo_text(t: BoxTable) -> bytes:
    """All YOLO lines of the table, ``class cx cy w h``, six decimals, built without a Python
    loop per box: each coordinate is a lookup into a table of formatted strings indexed by its
    integer numerator.  Byte-identical to formatting ``normalised_boxes`` line by line."""
    n = len(t)
    if n == 0:
        return b""
    W, H = t.width, t.height
    lut_x = _fixed_width_lut(2 * W + 1, 2.0, float(W))   # cx numerator i0+i1+1
    lut_y = _fixed_width_lut(2 * H + 1, 2.0, float(H))
    lut_w = _fixed_width_lut(W + 1, 1.0, float(W))       # w numerator i1-i0+1
    lut_h = _fixed_width_lut(H + 1, 1.0, float(H))
    tail = np.empty((n, 37), np.uint8)                               # " cx cy w h\n"
    tail[:, [0, 9, 18, 27]] = ord(" ")
    tail[:, 36] = ord("\n")
    tail[:, 1:9] = lut_x[t.i0 + t.i1 + 1]
    tail[:, 10:18] = lut_y[t.j0 + t.j1 + 1]
    tail[:, 19:27] = lut_w[t.i1 - t.i0 + 1]
    tail[:, 28:36] = lut_h[t.j1 - t.j0 + 1]
    cls = np.asarray(t.cls, np.int64)
    digits = _digits(cls)
    lengths = digits + 37
    start = np.cumsum(lengths) - lengths
    buf = np.empty(int(lengths.sum()), np.uint8)
    rest = cls.copy()
    for d in range(int(digits.max()) - 1, -1, -1):                   # class id, last digit first
        has = digits > d
        buf[start[has] + d] = ord("0") + rest[has] % 10
        rest[has] //= 10
    buf[(start + digits)[:, None] + np.arange(37)] = tail
    return buf.tobytes()


def yolo_lines_by_slice(t: BoxTable) -> dict[int, str]:
    """{k: file text} for every slice that has boxes (lines sorted as the contract says)."""
    if len(t) == 0:
        return {}
    text = yolo_text(t)
    firsts = np.flatnonzero(np.r_[True, t.k[1:] != t.k[:-1]])
    offsets = np.r_[0, np.cumsum(_digits(np.asarray(t.cls, np.int64)) + 37)]
    bounds = offsets[np.r_[firsts, len(t)]].tolist()
    return {int(t.k[f]): text[a:b].decode("ascii")
            for f, a, b in zip(firsts.tolist(), bounds[:-1], bounds[1:])}
