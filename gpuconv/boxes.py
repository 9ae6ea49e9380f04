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

import numpy as np

from .backends.base import SliceComponents
from .classes import ClassMap
from .errors import InputError
from .nrrdio import VolumeHeader


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
    """Class id per (layer, value) pair; shared by 2D boxes and 3D instances so both agree."""
    if len(value) == 0:
        return np.zeros(0, np.int32)
    ids = class_map.ids_for(hdr)
    pairs, inverse = np.unique(np.stack([np.asarray(layer, np.int64),
                                         np.asarray(value, np.int64)]), axis=1,
                               return_inverse=True)
    lut = np.empty(pairs.shape[1], np.int32)
    for n, (layer, value) in enumerate(pairs.T.tolist()):
        if ids is None:
            lut[n] = class_map.class_of_value(value, hdr.path)
        elif (layer, value) in ids:
            lut[n] = ids[(layer, value)]
        else:
            where = f" in layer {layer}" if hdr.n_layers > 1 else ""
            raise InputError(f"label/segment mismatch: value {value}{where} is not a declared "
                             "segment", hdr.path)
    return lut[inverse.reshape(-1)]


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


def yolo_lines_by_slice(t: BoxTable) -> dict[int, str]:
    """{k: file text} for every slice that has boxes."""
    if len(t) == 0:
        return {}
    xywh = normalised_boxes(t)
    lines = [f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n"
             for c, (x, y, w, h) in zip(t.cls.tolist(), xywh.tolist())]
    out: dict[int, str] = {}
    starts = np.flatnonzero(np.r_[True, t.k[1:] != t.k[:-1]])
    ends = np.r_[starts[1:], len(t)]
    for s, e in zip(starts.tolist(), ends.tolist()):
        out[int(t.k[s])] = "".join(lines[s:e])
    return out
