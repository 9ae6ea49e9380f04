"""From per-slice YOLO text files back to a 3D segmentation (``gpuconv assemble``).

Input files are Ultralytics ``save_txt`` output (``runs/*/predict/labels/{stem}.txt``) or a
gpuconv dataset's own ``labels/{split}/`` files; a file ``{exam}_{k+1}.txt`` holds slice k
(0-based) of exam ``exam``, exactly as ``convert`` names its label files and PNGs (so the
prediction of ``images/val/0042_17.png`` is ``0042_17.txt``).  One line per object:

- box:     ``cls cx cy w h [conf]``          (normalised by the slice's W = size of axis i and
  H = size of axis j, Ultralytics ``xywhn``);
- segment: ``cls x1 y1 x2 y2 ... [conf]``    (normalised polygon vertices, ``masks.xyn``).

``save_conf`` appends the confidence.  Which is which, by the number of fields n
(``kind="auto"``): n = 5 is a box and n = 6 a box with confidence; otherwise a segment, with a
confidence when n is even (1 class + 2 per vertex is odd).  ``kind="boxes"`` / ``"segments"``
force one reading (a 2-vertex segment has 5 or 6 fields: give ``segments``).  Lines with a
confidence below ``conf`` are dropped; lines without one (ground truth) are always kept.

Rasterisation (what a pixel of the slice gets):

- segments exactly as Ultralytics turns a YOLO-seg line into a mask (``polygon2mask``): the
  numbers parsed as float32, x multiplied by W and y by H in float32, cast to int32
  (truncation), then ``cv2.fillPoly`` on the H x W slice, where an integer point is a pixel
  centre and boundary pixels are filled.  OpenCV is used when installed (``pip install
  'gpuconv[assemble]'``); otherwise ``fillpoly.fill_poly``, the same algorithm re-expressed
  (same pixels, tested against cv2).
- boxes as filled rectangles: pixel i is inside when its centre i + 1/2 lies in
  [x_min, x_max] = [(cx - w/2) W, (cx + w/2) W] (same for j), i.e. i0 = ceil(x_min - 1/2),
  i1 = floor(x_max - 1/2); a box that covers no pixel centre gets the pixel holding its centre.
  A box gpuconv wrote (``cx = (i0+i1+1)/2/W``, ``w = (i1-i0+1)/W``) gives back i0..i1 exactly.

Volume: voxel (i, j, k) of class c is set when any kept object of class c on slice k covers
pixel (column i, row j).  Objects of one class are united.  Classes may overlap (a model can
predict two classes at one pixel): the output keeps them all, as 3D Slicer does, in layers -
classes are taken in id order and each goes into the first layer where it overlaps nothing
already there (a new layer otherwise).  One layer gives a 3D ``.seg.nrrd``; more give a
layered 4D one (``kinds: list domain domain domain``).  Segment c has label value c + 1 and
the name ``names[c]`` (from ``dataset.yaml``); every named class is listed, empty or not.
The grid (sizes, space directions, origin, space) is the exam's reference volume: its CT or
its label file, placed on the full image grid as ``convert`` places it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpuconv.errors import InputError, OptionError

PRED_NAME = re.compile(r"^(.+)_(\d+)\.txt$")
KINDS = ("auto", "boxes", "segments")
COLORS = ("0.9 0.2 0.2", "0.2 0.9 0.2", "0.2 0.2 0.9", "0.9 0.9 0.2", "0.9 0.2 0.9",
          "0.2 0.9 0.9", "0.6 0.4 0.2", "0.5 0.5 0.5")


@dataclass
class Grid:
    """Where the assembled volume lives: (I, J, K) sizes and the NRRD geometry."""

    sizes: tuple[int, int, int]
    directions: np.ndarray
    origin: np.ndarray
    space: str = "left-posterior-superior"
    path: Path | None = None


@dataclass
class SliceObject:
    cls: int
    kind: str                 # "box" | "segment"
    values: np.ndarray        # float32 normalised numbers after the class (conf removed)
    conf: float | None


def parse_line(line: str, kind: str = "auto", where: str = "") -> SliceObject | None:
    """One text line -> SliceObject (None for a blank line)."""
    parts = line.split()
    if not parts:
        return None
    n = len(parts)
    if kind == "boxes":
        if n not in (5, 6):
            raise InputError(f"{where}: a box line has 5 or 6 fields, got {n}")
        is_box, has_conf = True, n == 6
    elif kind == "segments":
        if n < 5:
            raise InputError(f"{where}: a segment line needs >= 2 vertices, got {n} fields")
        is_box, has_conf = False, n % 2 == 0
    else:
        is_box = n in (5, 6)
        has_conf = n == 6 if is_box else n % 2 == 0
        if n < 5:
            raise InputError(f"{where}: a line has {n} fields (a box has 5, a segment >= 7)")
    try:
        cls_f = float(parts[0])
        nums = np.array(parts[1:], dtype=np.float32)   # Ultralytics parses labels as float32
    except ValueError:
        raise InputError(f"{where}: not a number in '{line.strip()[:60]}'") from None
    if cls_f != int(cls_f) or cls_f < 0:
        raise InputError(f"{where}: class '{parts[0]}' is not a non-negative integer")
    conf = None
    if has_conf:
        conf = float(parts[-1])
        nums = nums[:-1]
    if not np.isfinite(nums).all():
        raise InputError(f"{where}: coordinates must be finite")
    return SliceObject(int(cls_f), "box" if is_box else "segment", nums, conf)


def read_slice_file(path, kind: str = "auto") -> list[SliceObject]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", path) from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        obj = parse_line(line, kind, f"{path}:{n}")
        if obj is not None:
            out.append(obj)
    return out


def index_prediction_files(inputs) -> dict[str, dict[int, list[Path]]]:
    """{exam: {k: [files]}} from files and folders (searched recursively) of ``*.txt`` named
    ``{exam}_{k+1}.txt``; other text files are ignored."""
    found: dict[str, dict[int, list[Path]]] = {}
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(p.rglob("*.txt"))
        elif p.is_file():
            files = [p]
        else:
            raise InputError("no such prediction file or folder", p)
        for f in files:
            m = PRED_NAME.match(f.name)
            if not m or int(m.group(2)) < 1:
                continue
            found.setdefault(m.group(1), {}).setdefault(int(m.group(2)) - 1, []).append(f)
    return found


def image_exams(inputs) -> set[str]:
    """Exam ids of the PNG/JPG slices a model was run on (``{exam}_{k+1}.png``)."""
    pat = re.compile(r"^(.+)_(\d+)\.(png|jpg|jpeg|bmp|tif|tiff)$", re.IGNORECASE)
    out = set()
    for item in inputs:
        p = Path(item)
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            m = pat.match(f.name)
            if m:
                out.add(m.group(1))
    return out


# -- rasterisation -------------------------------------------------------------------------

def _cv2():
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def box_pixels(values: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """(i0, i1, j0, j1), inclusive, of the pixels whose centres the box covers (see the module
    docstring); clipped to the slice."""
    cx, cy, w, h = (float(v) for v in values[:4])
    x0, x1 = (cx - w / 2) * width, (cx + w / 2) * width
    y0, y1 = (cy - h / 2) * height, (cy + h / 2) * height
    i0, i1 = math.ceil(x0 - 0.5), math.floor(x1 - 0.5)
    j0, j1 = math.ceil(y0 - 0.5), math.floor(y1 - 0.5)
    if i1 < i0:
        i0 = i1 = math.floor(cx * width)
    if j1 < j0:
        j0 = j1 = math.floor(cy * height)
    i0, i1 = max(i0, 0), min(i1, width - 1)
    j0, j1 = max(j0, 0), min(j1, height - 1)
    return i0, i1, j0, j1


def polygon_points(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """(n, 2) int32 vertices as Ultralytics computes them: float32 x W, y H, int32 cast."""
    pts = np.asarray(values, np.float32).reshape(-1, 2).copy()
    pts[:, 0] *= np.float32(width)
    pts[:, 1] *= np.float32(height)
    return np.asarray(pts, dtype=np.int32)


def fill_polygon(mask_hw: np.ndarray, points: np.ndarray, use_cv2: bool | None = None) -> None:
    """``cv2.fillPoly(mask, [points], 1)`` on an (H, W) uint8 slice, in place: OpenCV when
    importable (``use_cv2=None``), else the exact re-expression in ``fillpoly.py``."""
    cv2 = _cv2() if use_cv2 is not False else None
    if use_cv2 and cv2 is None:
        raise InputError("opencv-python-headless is not installed: pip install "
                         "'gpuconv[assemble]'")
    if cv2 is None:
        from gpuconv.analysis.fillpoly import fill_poly
        fill_poly(mask_hw, points)
        return
    cv2.fillPoly(mask_hw, [np.ascontiguousarray(points, np.int32).reshape(-1, 1, 2)], color=1)


def rasterise_slice(objects, width: int, height: int, conf: float | None = None
                    ) -> dict[int, np.ndarray]:
    """{class: (H, W) bool} of one slice's kept objects."""
    out: dict[int, np.ndarray] = {}
    for ob in objects:
        if conf is not None and ob.conf is not None and ob.conf < conf:
            continue
        m = out.get(ob.cls)
        if m is None:
            m = out[ob.cls] = np.zeros((height, width), np.uint8)
        if ob.kind == "box":
            i0, i1, j0, j1 = box_pixels(ob.values, width, height)
            m[j0:j1 + 1, i0:i1 + 1] = 1
        else:
            fill_polygon(m, polygon_points(ob.values, width, height))
    return {c: m.astype(bool) for c, m in out.items()}


# -- one exam ------------------------------------------------------------------------------

@dataclass
class AssembledExam:
    exam: str
    grid: Grid
    masks: dict[int, np.ndarray]                 # class -> (I, J, K) bool
    objects: int = 0                             # lines read
    kept: int = 0                                # lines at or above --conf
    voxels: dict[int, int] = field(default_factory=dict)


def assemble_exam(exam: str, files_by_k: dict[int, list[Path]], grid: Grid,
                  kind: str = "auto", conf: float | None = None) -> AssembledExam:
    I, J, K = grid.sizes
    masks: dict[int, np.ndarray] = {}
    n_obj = n_kept = 0
    for k in sorted(files_by_k):
        if k >= K:
            raise InputError(f"exam '{exam}': slice file {files_by_k[k][0].name} is slice "
                             f"{k + 1} but the reference volume has {K} slices", grid.path)
        objects = [ob for f in files_by_k[k] for ob in read_slice_file(f, kind)]
        n_obj += len(objects)
        n_kept += sum(1 for ob in objects
                      if conf is None or ob.conf is None or ob.conf >= conf)
        for c, m in rasterise_slice(objects, I, J, conf).items():
            vol = masks.get(c)
            if vol is None:
                vol = masks[c] = np.zeros((I, J, K), bool, order="F")
            vol[:, :, k] |= m.T
    voxels = {c: int(np.count_nonzero(m)) for c, m in masks.items()}
    return AssembledExam(exam, grid, masks, n_obj, n_kept, voxels)


def pack_layers(masks: dict[int, np.ndarray], sizes) -> tuple[np.ndarray, dict[int, int]]:
    """(L, I, J, K) label layers (value c + 1 for class c) and {class: layer}: classes in id
    order, each in the first layer it does not overlap (see the module docstring)."""
    layers: list[np.ndarray] = []
    layer_of: dict[int, int] = {}
    top = max(masks, default=-1) + 1
    dtype = np.uint8 if top <= 255 else np.uint16
    for c in sorted(masks):
        m = masks[c]
        if not m.any():
            continue
        for n, lay in enumerate(layers):
            if not np.logical_and(lay != 0, m).any():
                lay[m] = c + 1
                layer_of[c] = n
                break
        else:
            lay = np.zeros(tuple(sizes), dtype, order="F")
            lay[m] = c + 1
            layers.append(lay)
            layer_of[c] = len(layers) - 1
    if not layers:
        layers.append(np.zeros(tuple(sizes), dtype, order="F"))
    return np.stack(layers, axis=0), layer_of


def write_segmentation(path, result: AssembledExam, names: list[str]) -> Path:
    """The exam as a 3D Slicer ``.seg.nrrd`` (3D with one layer, layered 4D otherwise)."""
    from gpuconv.io.nrrd_write import segment_extent, slicer_segment_fields, write_nrrd
    grid = result.grid
    top = max(result.masks, default=-1) + 1
    if top > len(names):
        raise InputError(f"exam '{result.exam}': class id {top - 1} but only {len(names)} class "
                         "names (give --names dataset.yaml)")
    stack, layer_of = pack_layers(result.masks, grid.sizes)
    I, J, K = grid.sizes
    segs = []
    for c, name in enumerate(names):
        m = result.masks.get(c)
        ext = segment_extent(m) if m is not None else None
        segs.append({"name": name, "label_value": c + 1, "layer": layer_of.get(c, 0),
                     "color": COLORS[c % len(COLORS)], "id": f"Segment_{c + 1}",
                     "extent": ext or (0, I - 1, 0, J - 1, 0, K - 1)})
    extra = slicer_segment_fields(segs, grid.sizes)
    data = stack[0] if stack.shape[0] == 1 else stack
    try:
        return write_nrrd(path, data, directions=grid.directions, origin=grid.origin,
                          extra=extra, space=grid.space)
    except OSError as exc:
        raise InputError(f"cannot write ({exc.strerror or exc})", path) from None


# -- references and names ------------------------------------------------------------------

def reference_grid(path) -> Grid:
    """Grid of a reference volume: a label file (placed on its full image grid as ``convert``
    places it) or a CT (any 3D NRRD)."""
    from gpuconv.io.formats import read_header, read_volume   # NRRD, NIfTI, DICOM-SEG
    path = Path(path)
    try:
        hdr = read_header(path)
    except InputError:
        hdr = None
    if hdr is not None:
        if any(hdr.extent_offset):
            from gpuconv.dataset.grid import place_on_grid
            hdr = place_on_grid(read_volume(path), None).header
        return Grid(tuple(int(s) for s in hdr.spatial_shape), np.asarray(hdr.directions, float),
                    np.asarray(hdr.origin, float),
                    str(hdr.fields.get("space", "left-posterior-superior")), path)
    from gpuconv.dataset.grid import read_ct_header
    ct = read_ct_header(path)
    return Grid(tuple(ct.sizes), np.asarray(ct.directions, float), np.asarray(ct.origin, float),
                str(ct.fields.get("space", "left-posterior-superior")), path)


def reference_files(inputs) -> dict[str, Path]:
    """exam id -> reference volume.  Folders are searched recursively for NRRD and NIfTI files
    (a DICOM series or DICOM-SEG is given as a file or its folder's file); when an exam has
    both a ``.seg.nrrd`` and another volume (its CT), the ``.seg.nrrd`` is used (same grid)."""
    from gpuconv.dataset.exams import exam_id
    by_exam: dict[str, list[Path]] = {}
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted({*p.rglob("*.nrrd"), *p.rglob("*.nhdr"), *p.rglob("*.nii"),
                            *p.rglob("*.nii.gz")})
        elif p.is_file():
            files = [p]
        else:
            raise InputError("no such reference file or folder", p)
        for f in files:
            if f.is_file():
                by_exam.setdefault(exam_id(f), []).append(f)
    out = {}
    for e, files in by_exam.items():
        seg = [f for f in files if f.name.lower().endswith(".seg.nrrd")]
        pick = seg or files
        if len(pick) > 1:
            raise InputError(f"two reference volumes for exam '{e}': {pick[0]} and {pick[1]}")
        out[e] = pick[0]
    return out


def load_names(path) -> list[str]:
    """Class names from an Ultralytics ``dataset.yaml`` (``names``: list or {id: name})."""
    from gpuconv.dataset.classes import load_class_file
    return load_class_file(path)


def find_dataset_yaml(inputs) -> Path | None:
    """A ``dataset.yaml`` in a prediction folder or up to three levels above it."""
    for item in inputs:
        p = Path(item).resolve()
        p = p if p.is_dir() else p.parent
        for q in [p, *list(p.parents)[:3]]:
            if (q / "dataset.yaml").is_file():
                return q / "dataset.yaml"
    return None


@dataclass
class AssembleSummary:
    written: list[dict] = field(default_factory=list)   # exam, file, objects, kept, voxels
    failures: list[dict] = field(default_factory=list)  # exam/file, reason
    no_reference: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"written": self.written, "failures": self.failures,
                "no_reference": self.no_reference}


def assemble(predictions, references, out, names: list[str], *, kind: str = "auto",
             conf: float | None = None, exams=None, on_error=None) -> AssembleSummary:
    """Assemble every exam that has prediction files (or every exam in ``exams``) into
    ``out/{exam}.seg.nrrd``.  A bad exam is reported and the others still run."""
    if kind not in KINDS:
        raise OptionError("kind", f"must be one of {', '.join(KINDS)}, got '{kind}'")
    preds = index_prediction_files(predictions)
    refs = reference_files(references)
    wanted = sorted(set(preds) | set(exams or ()))
    if not wanted:
        raise InputError("no prediction files named {exam}_{slice}.txt found")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = AssembleSummary()
    for e in wanted:
        if e not in refs:
            summary.no_reference.append(e)
            if on_error:
                on_error(f"exam '{e}': no reference volume (give its CT or label file)")
            continue
        try:
            res = assemble_exam(e, preds.get(e, {}), reference_grid(refs[e]), kind, conf)
            p = write_segmentation(out / f"{e}.seg.nrrd", res, names)
        except InputError as exc:
            summary.failures.append({"exam": e, "reason": str(exc)})
            if on_error:
                on_error(str(exc))
            continue
        summary.written.append({"exam": e, "file": str(p), "objects": res.objects,
                                "kept": res.kept,
                                "voxels": {names[c]: v for c, v in sorted(res.voxels.items())}})
    return summary
