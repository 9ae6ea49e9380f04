"""Shared test helpers.  The reference here is written independently of gpuconv's backends:
scipy.ndimage.label per label value and per slice, with the box formula from the contract."""

from __future__ import annotations

import os
from pathlib import Path

import nrrd
import numpy as np
import pytest
from scipy import ndimage


@pytest.fixture(scope="session")
def slicer_data() -> Path:
    slicerio = pytest.importorskip("slicerio")
    return Path(os.path.dirname(slicerio.__file__)) / "data"


def reference_components(layer_ijk: np.ndarray, connectivity: int):
    """[(k, value, i0, i1, j0, j1, pixels)] for one (I, J, K) layer, via scipy."""
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    out = []
    for k in range(layer_ijk.shape[2]):
        sl = layer_ijk[:, :, k]
        for value in np.unique(sl):
            if value == 0:
                continue
            lab, n = ndimage.label(sl == value, structure)
            for idx, obj in enumerate(ndimage.find_objects(lab)):
                out.append((k, int(value), obj[0].start, obj[0].stop - 1, obj[1].start,
                            obj[1].stop - 1, int((lab[obj] == idx + 1).sum())))
    return out


def yolo_line(cls, i0, i1, j0, j1, W, H) -> str:
    """The contract, written out by hand: x from axis i, y from axis j, whole pixels."""
    return (f"{cls} {(i0 + i1 + 1) / 2 / W:.6f} {(j0 + j1 + 1) / 2 / H:.6f} "
            f"{(i1 - i0 + 1) / W:.6f} {(j1 - j0 + 1) / H:.6f}")


def expected_label_files(layers, class_of, connectivity=8):
    """{k: sorted lines} from (L, I, J, K) layers; class_of(layer, value) -> class id."""
    _, W, H, _ = layers.shape
    files: dict[int, list] = {}
    for layer in range(layers.shape[0]):
        for k, v, i0, i1, j0, j1, _ in reference_components(layers[layer], connectivity):
            c = class_of(layer, v)
            files.setdefault(k, []).append(((c, j0, i0, j1, i1), yolo_line(c, i0, i1, j0, j1,
                                                                               W, H)))
    return {k: [line for _, line in sorted(v)] for k, v in files.items()}


def read_label_dir(out: Path, exam: str) -> dict[int, list]:
    """{k: lines} of every labels/*/{exam}_{k+1}.txt under out."""
    files = {}
    for p in sorted((Path(out) / "labels").glob(f"*/{exam}_*.txt")):
        k = int(p.stem.rsplit("_", 1)[1]) - 1
        files[k] = p.read_text().splitlines()
    return files


def slicer_fields(segments, color=None, extent=None, master=None) -> dict:
    """Slicer Segment fields written out by hand, segments = [(name, layer, value)]; optionally
    every segment's Color and Extent, and Segmentation_MasterRepresentation."""
    f = {}
    for n, (name, layer, value) in enumerate(segments):
        f[f"Segment{n}_Name"] = name
        f[f"Segment{n}_Layer"] = str(layer)
        f[f"Segment{n}_LabelValue"] = str(value)
        f[f"Segment{n}_ID"] = f"Segment_{n}"
        if color is not None:
            f[f"Segment{n}_Color"] = color
        if extent is not None:
            f[f"Segment{n}_Extent"] = extent
    if master is not None:
        f["Segmentation_MasterRepresentation"] = master
    return f


def write_seg(path, data, segments, spacing=(1.0, 1.0, 1.0), **kw):
    """Write a Slicer-style segmentation with pynrrd (3D, or 4D with the layer axis first)."""
    layered = data.ndim == 4
    header = {"space": "left-posterior-superior",
              "space directions": ([[np.nan] * 3] if layered else []) + np.diag(spacing).tolist(),
              "kinds": (["list"] if layered else []) + ["domain"] * 3,
              "encoding": kw.pop("encoding", "gzip")}
    header.update(slicer_fields(segments))
    header.update(kw.pop("header", {}))
    nrrd.write(str(path), data, header, **kw)
    return Path(path)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (psutil), for the tests that kill or interrupt a run."""
    psutil = pytest.importorskip("psutil")
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def alive(pid: int) -> bool:
    """``pid`` runs and is not a zombie."""
    psutil = pytest.importorskip("psutil")
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
