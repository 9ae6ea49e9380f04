"""The one seam for "any supported label or CT file": NRRD / .seg.nrrd, NIfTI, DICOM.

Every reader returns the NRRD path's types (``VolumeHeader``, ``LabelVolume`` with layers
``(L, I, J, K)``, ``CtHeader`` + ``(I, J, K)`` data) in LPS, so classes, boxes, polygons,
instances, images and the grid check do not know which format a file was.

| input            | as labels                        | as --images CT                   |
|------------------|----------------------------------|----------------------------------|
| .nrrd / .nhdr    | yes (nrrd_read)                  | yes                              |
| .nii / .nii.gz   | plain label map (nifti)          | yes (nifti)                      |
| .dcm DICOM-SEG   | named segments (dicom_seg)       | no                               |
| DICOM CT folder  | no                               | yes (dicom_series), one a folder |

The format is chosen by name (``.nii``/``.nii.gz``; ``.dcm``), else by content (the ``DICM``
magic at byte 128, the gzip/NIfTI magic), else NRRD, whose reader gives the familiar
"not an NRRD file" error.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from gpuconv.errors import InputError
from gpuconv.io import nrrd_read
from gpuconv.io.nrrd_read import LabelVolume, VolumeHeader

NRRD_PATTERNS = ("*.nrrd", "*.nhdr")
NIFTI_PATTERNS = ("*.nii.gz", "*.nii")
LABEL_SUFFIXES = (".nrrd", ".nhdr", ".nii.gz", ".nii", ".dcm")


def _nifti_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(348)
    except OSError:
        return False
    return len(head) >= 348 and head[344:347] in (b"n+1", b"ni1") or head[4:7] == b"n+2"


def kind_of(path) -> str:
    """'nifti', 'dicom' or 'nrrd' for one file (by name, then content)."""
    p = Path(path)
    if p.name.lower().endswith((".nrrd", ".nhdr")):
        return "nrrd"  # the common case, without importing the NIfTI and DICOM readers
    from gpuconv.io.dicom_series import has_dicom_magic
    from gpuconv.io.nifti import is_nifti_path
    if is_nifti_path(p):
        return "nifti"
    if p.suffix.lower() == ".dcm":
        return "dicom"
    if p.is_file() and not p.name.lower().endswith((".nrrd", ".nhdr")):
        if has_dicom_magic(p):
            return "dicom"
        if _nifti_magic(p):
            return "nifti"
    return "nrrd"


# --- labels ---------------------------------------------------------------------------------

def read_header(path) -> VolumeHeader:
    """Header of any supported label file, without decoding its data."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "nifti":
        from gpuconv.io.nifti import read_nifti_header
        return read_nifti_header(path)
    if kind == "dicom":
        from gpuconv.io.dicom_seg import read_seg_header
        return read_seg_header(path)
    return nrrd_read.read_header(path)


def read_input(path) -> nrrd_read.InputFile:
    """Read one label input once: its bytes and the header parsed from those very bytes (what
    is hashed is what is converted), for every format."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "nrrd":
        return nrrd_read.read_input(path)
    blob = nrrd_read.read_regular_file(path)
    if kind == "nifti":
        from gpuconv.io.nifti import read_nifti_header
        hdr = read_nifti_header(path, blob)
    else:
        from gpuconv.io.dicom_seg import read_seg_header
        hdr = read_seg_header(path, blob)
    return nrrd_read.InputFile(hdr, blob, blob)


def reread_input(path, prepass: VolumeHeader | None = None) -> nrrd_read.InputFile:
    """``nrrd_read.reread_input`` for every format: a header that changed since the pre-pass
    is an error (NRRD and NIfTI compare header hashes; a DICOM-SEG has none)."""
    if kind_of(path) == "nrrd":
        return nrrd_read.reread_input(path, prepass)
    f = read_input(path)
    if prepass is not None and prepass.header_hash and f.header.header_hash != prepass.header_hash:
        raise InputError("the file changed after its header was read at the start of the run "
                         "(its header differs now); run again to convert it", path)
    return f


def read_data_blob(hdr: VolumeHeader, blob: bytes | None = None) -> bytes:
    """Bytes of the file that holds the payload (the NRRD rule; other formats are one file)."""
    return nrrd_read.read_data_blob(hdr, blob)


def decode_layers(hdr: VolumeHeader, data_blob: bytes) -> np.ndarray:
    """Decode ``data_blob`` (see ``read_data_blob``) to layers (L, I, J, K)."""
    if hdr.encoding.startswith("nifti"):
        from gpuconv.io.nifti import decode_nifti
        return decode_nifti(hdr, data_blob)
    if hdr.encoding == "dicom-seg":
        from gpuconv.io.dicom_seg import decode_seg
        return decode_seg(hdr, data_blob)
    return nrrd_read.decode_layers(hdr, data_blob)


def read_volume(path) -> LabelVolume:
    """Read and decode any supported label file."""
    path = Path(path)
    if kind_of(path) == "nrrd":
        return nrrd_read.read_volume(path)
    f = read_input(path)
    return LabelVolume(f.header, decode_layers(f.header, f.data_blob))


def format_name(hdr) -> str:
    """'nrrd', 'slicer-nrrd', 'nifti', 'dicom-seg' (for inspect and messages)."""
    fmt = hdr.fields.get("format") if isinstance(hdr.fields, dict) else None
    return str(fmt) if fmt else "nrrd"


def _is_seg_dicom(p: Path) -> bool:
    from gpuconv.io.dicom_series import SEG_SOP_CLASS, sop_class_of
    return sop_class_of(p) == SEG_SOP_CLASS


def _fork(p: Path) -> bool:
    return p.name.startswith("._")


def find_label_files(folder: Path) -> list[Path]:
    """Label files in a folder (recursive).  Segmentation files (``*.seg.nrrd``, DICOM-SEG
    ``*.dcm``) when it holds any, so CT volumes lying beside them are not read as label maps;
    otherwise every ``.nrrd``/``.nhdr``/``.nii``/``.nii.gz``.  macOS resource forks (``._*``,
    which the Decathlon's archives hold beside every file) are never inputs."""
    seg = sorted(q for q in folder.rglob("*.seg.nrrd") if not _fork(q))
    dcm = sorted(q for q in folder.rglob("*") if q.suffix.lower() == ".dcm" and q.is_file()
                 and not _fork(q))
    seg += [q for q in dcm if _is_seg_dicom(q)]
    if seg:
        return sorted(seg)
    return sorted(q for pat in NRRD_PATTERNS + NIFTI_PATTERNS for q in folder.rglob(pat)
                  if not _fork(q))


# --- CT -------------------------------------------------------------------------------------

def ct_kind(path) -> str:
    p = Path(path)
    if p.is_dir():
        return "dicom"
    return kind_of(p)


def read_ct_header(path):
    """CtHeader of a NIfTI file or a DICOM series folder (NRRD stays in dataset.grid)."""
    kind = ct_kind(path)
    if kind == "nifti":
        from gpuconv.io.nifti import read_nifti_ct_header
        return read_nifti_ct_header(path)
    from gpuconv.io.dicom_series import read_series_header
    return read_series_header(path)


def read_ct(path):
    kind = ct_kind(path)
    if kind == "nifti":
        from gpuconv.io.nifti import read_nifti_ct
        return read_nifti_ct(path)
    from gpuconv.io.dicom_series import read_series
    return read_series(path)


def find_ct_inputs(folder: Path) -> list[Path]:
    """CT inputs in a folder: ``.nrrd``/``.nhdr`` (not ``*.seg.nrrd``), ``.nii``/``.nii.gz``,
    and DICOM series folders (the folder itself when it directly holds DICOM images)."""
    from gpuconv.io.dicom_series import find_series_folders
    files = sorted(q for pat in NRRD_PATTERNS + NIFTI_PATTERNS for q in folder.rglob(pat)
                   if q.is_file() and not q.name.lower().endswith(".seg.nrrd") and not _fork(q))
    try:
        series = find_series_folders(folder)
    except InputError:
        series = []
    if series and series[0] == folder:
        return [folder]
    return sorted(files + series, key=str)


def ct_input_of(path: Path) -> Path | None:
    """The CT input a found path stands for: a file as it is, a DICOM file its series folder,
    a folder when it is a series folder; None for anything else."""
    from gpuconv.io.dicom_series import is_series_folder
    if path.is_dir():
        return path if is_series_folder(path) else None
    if not path.is_file():
        return None
    if kind_of(path) == "dicom":
        return path.parent if is_series_folder(path.parent) else None
    return path


def expand_ct_item(item) -> list[Path]:
    """One ``--images`` argument (file, folder or glob) -> CT inputs."""
    p = Path(str(item))
    if p.is_dir():
        return find_ct_inputs(p)
    if p.exists():
        return [p]
    out = []
    for g in sorted(glob.glob(str(item), recursive=True)):
        q = Path(g)
        out += find_ct_inputs(q) if q.is_dir() else [q]
    if not out:
        raise InputError("no such CT file, folder or matching glob", item)
    return out


def reference_grid(label_header: VolumeHeader, ct_header):
    """What ``place_on_grid`` is given for one exam with ``--images``: the CT's sizes, or for a
    DICOM-SEG the CT's whole header (its frames are placed by position, see dicom_seg)."""
    from gpuconv.io.dicom_seg import is_seg_header
    return ct_header if is_seg_header(label_header) else ct_header.sizes


def ct_stamp(path) -> list:
    """The manifest's stamp of a CT input: path, size and mtime of the file, or for a DICOM
    series folder a digest over its files' names, sizes and mtimes (a slice replaced counts)."""
    import hashlib
    p = Path(path)
    st = p.stat()
    if not p.is_dir():
        return [str(p.resolve()), st.st_size, st.st_mtime_ns]
    h = hashlib.blake2b(digest_size=16)
    total = 0
    for q in sorted(p.iterdir()):
        if q.is_file():
            s = q.stat()
            total += s.st_size
            h.update(f"{q.name}\0{s.st_size}\0{s.st_mtime_ns}\n".encode())
    return [str(p.resolve()), total, h.hexdigest()]


def ct_exam_id(path) -> str:
    """Exam id of a CT input.  A file: ``exams.exam_id``, but an nnU-Net image name
    ``{case}_0000.nii.gz`` (channel 0) is the case's id when the case ends in digits
    (``la_003_0000.nii.gz`` -> ``003``, as its label ``la_003.nii.gz``).  A DICOM series
    folder: its name's trailing digits, else those of the nearest of its three parents whose
    name ends in digits (``patient/0042/Pro_Gated_CS_3.0_70%/`` -> ``0042``), else its name."""
    import re
    from gpuconv.dataset.exams import exam_id, exam_stem
    p = Path(path)
    if p.is_dir():
        for q in [p, *p.parents][:4]:
            if re.search(r"\d+$", q.name):
                return exam_id(q)
        return exam_id(p)
    stem = exam_stem(p)
    if stem.endswith("_0000") and re.search(r"\d+$", stem[:-5]):
        return exam_id(stem[:-5])
    return exam_id(p)
