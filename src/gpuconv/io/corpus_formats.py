"""A synthetic corpus in the field's other formats (``gpuconv synth --format``), so the demo and
the tests need no downloads.

- ``nifti``: each exam as a NIfTI plain label map ``labels/COCA_0001.nii.gz`` (value v = class
  v-1 of ``labels/classes.txt``: convert with ``--classes`` that file to name them); in a folder
  of their own, as nnU-Net's labelsTr, since a plain map cannot be told from a CT by its name;
- ``dicom-seg``: each exam as a BINARY DICOM-SEG ``COCA_0001.dcm``, one segment per class name
  (SegmentNumber = class index + 1), so the class list is read from the files as for Slicer's;
- the CTs (``ct/CT_0001.nrrd``) as NIfTI (``ct/CT_0001.nii.gz``) or as DICOM series folders
  (``ct/CT_0001/``): ``rewrite_cts``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpuconv.errors import InputError

FORMATS = ("nrrd", "nifti", "dicom-seg")
CT_FORMATS = ("nrrd", "nifti", "dicom")


def _class_maps(path: Path, names: list[str]):
    from gpuconv.io.formats import read_volume
    vol = read_volume(path)
    h = vol.header
    index = {n: i for i, n in enumerate(names)}
    out = np.zeros(h.spatial_shape, np.uint8 if len(names) < 256 else np.uint16, order="F")
    for s in h.segments or []:
        out[vol.layers[s.layer] == s.label_value] = index[s.name] + 1
    return h, out


def rewrite_corpus(paths, fmt: str, class_names) -> list[Path]:
    """Rewrite Slicer ``.seg.nrrd`` exams as ``fmt`` beside them (the originals removed)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown corpus format '{fmt}' (choose from {', '.join(FORMATS)})")
    if fmt == "nrrd":
        return list(paths)
    names = list(class_names)
    out = []
    for p in paths:
        p = Path(p)
        stem = p.name[: -len(".seg.nrrd")]
        h, labels = _class_maps(p, names)
        if fmt == "nifti":
            from gpuconv.io.nifti import write_nifti
            (p.parent / "labels").mkdir(exist_ok=True)
            q = write_nifti(p.parent / "labels" / (stem + ".nii.gz"), labels, h.directions,
                            h.origin)
        else:
            from gpuconv.io.dicom_write import write_seg
            masks = np.stack([labels == i + 1 for i in range(len(names))])
            q = write_seg(p.with_name(stem + ".dcm"), masks, names, h.directions, h.origin,
                          exam=stem)
        p.unlink()
        out.append(q)
    if fmt == "nifti" and out:
        (out[0].parent / "classes.txt").write_text("\n".join(names) + "\n")
    return out


def ct_to_dicom_series(ct_path, folder, intercept: float = -1024.0) -> list[Path]:
    """Write a CT volume (any readable CT) as a DICOM series in ``folder`` (stored values
    unsigned, HU = stored + ``intercept``)."""
    from gpuconv.dataset.grid import read_ct
    from gpuconv.io.dicom_write import write_ct_series
    hdr, hu = read_ct(ct_path)
    hu = np.asarray(hu)
    if hu.dtype.kind == "f":
        if not np.array_equal(hu, np.round(hu)):
            raise InputError("a float CT with fractional HU cannot be written as a DICOM series "
                             "by this writer", ct_path)
        hu = hu.astype(np.int32)
    folder = Path(folder)
    return write_ct_series(folder, hu, hdr.directions, hdr.origin, exam=folder.name,
                           intercept=min(intercept, float(hu.min()) if hu.size else 0.0))


def rewrite_cts(folder, fmt: str) -> list[Path]:
    """Rewrite the ``CT_*.nrrd`` volumes in ``folder`` as NIfTI files or DICOM series folders
    (the NRRDs removed)."""
    if fmt not in CT_FORMATS:
        raise InputError(f"unknown CT format '{fmt}' (choose from {', '.join(CT_FORMATS)})")
    folder = Path(folder)
    paths = sorted(folder.glob("*.nrrd"))
    if fmt == "nrrd":
        return paths
    out = []
    for p in paths:
        stem = p.name[: -len(".nrrd")]
        if fmt == "nifti":
            from gpuconv.dataset.grid import read_ct
            from gpuconv.io.nifti import write_nifti
            hdr, hu = read_ct(p)
            out.append(write_nifti(folder / (stem + ".nii.gz"), hu, hdr.directions, hdr.origin))
        else:
            ct_to_dicom_series(p, folder / stem)
            out.append(folder / stem)
        p.unlink()
    return out
