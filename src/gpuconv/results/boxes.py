"""From a backend's components to YOLO boxes: class ids, canonical order, normalised text.

The geometric contract (tested in tests/test_geometry.py):
- image x = first spatial axis i (W = size of i), image y = second axis j (H = size of j),
  slice = third axis k; label files are named ``{exam}_{k+1}.txt``;
- a box covers whole pixels: cx = (i0+i1+1)/2/W, cy = (j0+j1+1)/2/H, w = (i1-i0+1)/W,
  h = (j1-j0+1)/H with inclusive bounds, printed with six decimals;
- lines of a file are sorted by class id, then top edge j0, left edge i0, bottom j1, right i1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from gpuconv.backends.base import SliceComponents
from gpuconv.dataset.classes import ClassMap
from gpuconv.errors import InputError
from gpuconv.io.nrrd_read import VolumeHeader


@dataclass
class BoxTable:
    """Boxes of one exam in canonical order (k, class, j0, i0, j1, i1).

    ``to_box_table`` stores each column in the narrowest unsigned type that holds it (k and the
    bounds by the volume's size, class and pixels by their largest value: 13 bytes a box for a
    512x512 map with < 256 classes instead of 32), as a dense map has over a million boxes per
    file.  Readers widen what they compute with (``normalised_boxes``, the text kernels, the
    table writer); any integer dtype is accepted."""

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
              class_map: ClassMap, seen: dict | None = None) -> np.ndarray:
    """Class id per (layer, value) pair; shared by 2D boxes and 3D instances so both agree.

    One 1-D ``np.unique`` per layer (a file has a handful): 25x faster than a 2-D unique over
    (layer, value) pairs on 10^5 components.

    ``seen`` (a dict): the rows are one part of a file (a chunk of its slices), so a plain
    map's whole-file check (``check_plain_values``) is left to the caller, which gets the
    distinct values of each layer added to ``seen[layer]`` (a set) instead.
    """
    value = np.asarray(value, np.int64)
    if hdr.dtype.kind == "u" and hdr.dtype.itemsize == 8:
        value = value.view(np.uint64)  # components carry int64 bits: uint64 >= 2**63 as is
    out = np.empty(len(value), np.int32)
    if len(value) == 0:
        return out
    layer = np.asarray(layer)
    ids = class_map.ids_for(hdr)
    for lay in np.unique(layer).tolist() if hdr.n_layers > 1 else [None]:
        sel = None if lay is None else (layer == lay)
        values, inverse = _unique_inverse(value if sel is None else value[sel])
        if ids is None and seen is not None:
            seen.setdefault(0 if lay is None else lay, set()).update(values.tolist())
        elif ids is None:   # a plain map: refuse one that looks like a CT (dataset/classes.py)
            class_map.check_plain_values(values, hdr.path)
        lut = np.empty(len(values), np.int32)
        for n, v in enumerate(values.tolist()):
            if ids is None:
                lut[n] = class_map.class_of_value(v, hdr.path)
            elif ((0 if lay is None else lay), v) in ids:
                lut[n] = ids[((0 if lay is None else lay), v)]
            else:
                where = f" in layer {lay}" if hdr.n_layers > 1 else ""
                raise InputError(f"label/segment mismatch: value {v}{where} is not a declared "
                                 "segment", hdr.path)
        if sel is None:
            out[:] = lut[inverse]
        else:
            out[sel] = lut[inverse]
    return out


_LUT_SPAN = 1 << 22   # value ranges up to this use a presence table instead of a sort


def _unique_inverse(value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(value, return_inverse=True)`` (sorted values, index per entry); label values
    span a small range, so a presence table replaces the sort (2.4 M components: ~10x faster)."""
    vmin, vmax = int(value.min()), int(value.max())
    span = vmax - vmin + 1
    if span > _LUT_SPAN or value.dtype != np.int64:
        values, inverse = np.unique(value, return_inverse=True)
        return values, inverse.reshape(-1)
    present, idx = _bk().class_lut_index(np.ascontiguousarray(value), vmin, span)
    where = np.flatnonzero(present)
    rank = np.zeros(span, np.int32)
    rank[where] = np.arange(len(where), dtype=np.int32)
    return where + vmin, rank[idx]


def to_box_table(comp: SliceComponents, hdr: VolumeHeader, class_map: ClassMap,
                 seen: dict | None = None) -> BoxTable:
    """The canonical, compact box table of ``comp`` (``seen``: see ``class_ids``)."""
    cls = class_ids(comp.layer, comp.value, hdr, class_map, seen)
    _, W, H, K = hdr.shape
    cols = _packed_order(comp, cls, W, H, K)
    if cols is None:  # keys too wide for one 64-bit word: the general 7-key sort
        order = np.lexsort((comp.pixels, comp.i1, comp.j1, comp.i0, comp.j0, cls, comp.k))
        cols = (comp.k[order], cls[order], comp.i0[order], comp.i1[order], comp.j0[order],
                comp.j1[order], comp.pixels[order])
    del cls
    k, c, i0, i1, j0, j1, px = cols
    del cols
    return BoxTable(k=_narrow(k, K - 1), cls=_narrow(c), i0=_narrow(i0, W - 1),
                    i1=_narrow(i1, W - 1), j0=_narrow(j0, H - 1), j1=_narrow(j1, H - 1),
                    pixels=_narrow(px), width=W, height=H, slices=K)


_UNSIGNED = (np.uint8, np.uint16, np.uint32)


def _narrow(a: np.ndarray, bound: int = 0) -> np.ndarray:
    """``a`` in the narrowest unsigned type holding its values and 0..``bound`` (the volume's
    size: chunks of one file then share the type); ``a`` itself when it has negative values or
    needs 64 bits."""
    if len(a) == 0 or int(a.min()) < 0:
        return a
    top = max(int(a.max()), bound)
    for dt in _UNSIGNED:
        if top <= np.iinfo(dt).max:
            return a if a.dtype == dt else a.astype(dt)
    return a


def concat_box_tables(parts: list[BoxTable], width: int, height: int, slices: int) -> BoxTable:
    """One table from tables of consecutive chunks of slices (each canonical, in k order): the
    canonical table of the whole file, since the order is by slice first."""
    if len(parts) == 1:
        return parts[0]
    names = ("k", "cls", "i0", "i1", "j0", "j1", "pixels")
    if not parts:
        cols = {n: np.zeros(0, np.int32 if n != "pixels" else np.int64) for n in names}
    else:
        cols = {n: np.concatenate([getattr(p, n) for p in parts]) for n in names}
    return BoxTable(**cols, width=width, height=height, slices=slices)


def _packed_order(comp: SliceComponents, cls: np.ndarray, W: int, H: int, K: int):
    """The canonical columns from one packed 64-bit key per row sorted within its slice
    (``box_kernels.packed_canonical``), or None when the key does not fit in 64 bits."""
    n = len(comp)
    if n == 0:
        return None
    from gpuconv.results.box_kernels_common import bit_length
    bc = bit_length(int(cls.max()))
    bj, bi = bit_length(H - 1), bit_length(W - 1)
    bp = bit_length(int(comp.pixels.max()))
    if bc + 2 * bj + 2 * bi + bp > 64 or int(comp.k.max()) >= K or int(comp.k.min()) < 0 \
            or int(cls.min()) < 0:
        return None
    return _bk().packed_canonical(
        _c32(comp.k), _c32(cls), _c32(comp.i0), _c32(comp.i1), _c32(comp.j0), _c32(comp.j1),
        np.ascontiguousarray(comp.pixels, np.int64), K, bj, bi, bp)


def _c32(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.int32)


def _bk():
    """The box kernels: compiled C (``backends/native.py``) when available, else Numba's."""
    from gpuconv.backends import native
    if native.get() is not None:
        return native
    from gpuconv.results import box_kernels
    return box_kernels


def normalised_boxes(t: BoxTable) -> np.ndarray:
    """(n, 4) float64 cx, cy, w, h following the contract above."""
    W, H = float(t.width), float(t.height)
    i0, i1, j0, j1 = (np.asarray(a, np.int64) for a in (t.i0, t.i1, t.j0, t.j1))  # narrow types
    return np.stack([(i0 + i1 + 1) / 2.0 / W, (j0 + j1 + 1) / 2.0 / H,
                     (i1 - i0 + 1) / W, (j1 - j0 + 1) / H], axis=1)


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


def _yolo_buffer(t: BoxTable) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 text of all lines, n + 1 line starts) from ``box_kernels.yolo_text_into``."""
    W, H = t.width, t.height
    return _bk().yolo_text_into(
        _c32(t.cls), _c32(t.i0), _c32(t.i1), _c32(t.j0), _c32(t.j1),
        _fixed_width_lut(2 * W + 1, 2.0, float(W)),    # cx numerator i0+i1+1
        _fixed_width_lut(2 * H + 1, 2.0, float(H)),
        _fixed_width_lut(W + 1, 1.0, float(W)),        # w numerator i1-i0+1
        _fixed_width_lut(H + 1, 1.0, float(H)))


def yolo_text(t: BoxTable) -> bytes:
    """All YOLO lines of the table, ``class cx cy w h``, six decimals, written straight into one
    buffer (each coordinate a lookup into a table of formatted strings indexed by its integer
    numerator; no temporaries per box).  Byte-identical to formatting ``normalised_boxes``
    line by line."""
    if len(t) == 0:
        return b""
    return _yolo_buffer(t)[0].tobytes()


def yolo_views_by_slice(t: BoxTable) -> "SliceTexts":
    """{k: bytes of its label file} for every slice with boxes, each built when asked for
    (one slice's text in memory at a time, not the whole exam's)."""
    return SliceTexts(t)


class SliceTexts(Mapping):
    """Read-only mapping k -> label text (a memoryview of bytes) of a canonical BoxTable."""

    def __init__(self, t: BoxTable):
        self.t = t
        n = len(t)
        k = np.asarray(t.k)
        firsts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if n else np.zeros(0, np.int64)
        bounds = np.r_[firsts, n].tolist()
        self._rows = {kk: (a, b) for kk, a, b in zip(k[firsts].tolist(), bounds[:-1],
                                                       bounds[1:])}

    def __getitem__(self, k: int) -> memoryview:
        a, b = self._rows[k]
        t = self.t
        part = BoxTable(k=t.k[a:b], cls=t.cls[a:b], i0=t.i0[a:b], i1=t.i1[a:b], j0=t.j0[a:b],
                        j1=t.j1[a:b], pixels=t.pixels[a:b], width=t.width, height=t.height,
                        slices=t.slices)
        return memoryview(_yolo_buffer(part)[0])

    def __iter__(self):
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def yolo_lines_by_slice(t: BoxTable) -> dict[int, str]:
    """{k: file text} for every slice that has boxes (lines sorted as the contract says)."""
    return {k: bytes(v).decode("ascii") for k, v in yolo_views_by_slice(t).items()}
