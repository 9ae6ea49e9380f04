"""Calcium scores from CT inside segmentation masks: Agatston, volume and mass scores.

Definitions (per exam with a CT on the label grid, per class and total; documented in
docs/stats.md, checked against a hand-computed phantom in tests/test_calcium.py):

- **Candidate voxels**: voxels of the class mask whose CT value is >= 130 HU (the CT values are
  taken as HU, as a CT NRRD stores them).
- **2D lesion**: a connected component of candidate voxels within one slice k (axis k of the
  volume, the axial slice of a CT), ``connectivity`` 8 (default: edges and corners) or 4.
- **Area** of a lesion = pixels x pixel area, pixel area = |d_i x d_j| (mm²; d = the ``space
  directions`` rows).  Lesions under ``min_area_mm2`` = 1 mm² are dropped (noise), from every
  score.
- **Agatston**: per lesion, area x density weight of its peak HU: 130-199 -> 1, 200-299 -> 2,
  300-399 -> 3, >= 400 -> 4 (peak in [199, 200) still weighs 1).  Summed over the lesions of
  all slices, then **normalised to 3 mm slices**: x (slice spacing / 3 mm), where the slice
  spacing is |det D| / pixel area (the distance between slice planes; = the k spacing on an
  orthogonal grid).  Agatston's score was defined on contiguous 3 mm slices; summing thinner
  slices counts each lesion on more slices, which the factor undoes (the common convention;
  ``agatston_raw`` keeps the un-normalised sum).  For COCA's 3 mm scans the factor is 1.
- **Volume score** (mm³): the voxels of the kept lesions x |det D|.
- **Mass score** (mg): ``calibration`` x sum over the kept voxels of HU x voxel volume in cm³.
  ``calibration`` is the scanner's hydroxyapatite calibration factor c_HA in mg/cm³ per HU
  (from a phantom scan); the default 1.0 gives the uncalibrated mass in HU·cm³.
- **Total**: the sum over classes of each score (a voxel in two overlapping classes counts in
  both).  **Risk category** from the total Agatston score: ``0`` (= 0), ``1-99`` (0 < s < 100),
  ``100-399`` (100 <= s < 400), ``>=400``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HU_THRESHOLD = 130.0
MIN_AREA_MM2 = 1.0
REFERENCE_SLICE_MM = 3.0
DEFAULT_CALIBRATION = 1.0
WEIGHT_EDGES = (200.0, 300.0, 400.0)      # peak HU >= edge -> weight + 1
RISK_CATEGORIES = ("0", "1-99", "100-399", ">=400")
CSV_NAME = "calcium.csv"
TOTAL = "total"


def density_weight(peak_hu) -> np.ndarray:
    """Agatston weight of a lesion's peak HU (>= 130): 1, 2, 3 or 4."""
    peak = np.asarray(peak_hu, np.float64)
    return 1 + np.searchsorted(np.array(WEIGHT_EDGES), peak, side="right")


def risk_category(agatston: float) -> str:
    if agatston <= 0:
        return RISK_CATEGORIES[0]
    if agatston < 100:
        return RISK_CATEGORIES[1]
    if agatston < 400:
        return RISK_CATEGORIES[2]
    return RISK_CATEGORIES[3]


@dataclass
class CalciumScore:
    agatston: float = 0.0          # normalised to REFERENCE_SLICE_MM
    agatston_raw: float = 0.0      # plain sum over slices
    volume_mm3: float = 0.0
    mass_mg: float = 0.0
    lesions: int = 0               # kept 2D lesions (all slices)

    def add(self, other: "CalciumScore") -> None:
        self.agatston += other.agatston
        self.agatston_raw += other.agatston_raw
        self.volume_mm3 += other.volume_mm3
        self.mass_mg += other.mass_mg
        self.lesions += other.lesions


@dataclass(frozen=True)
class CalciumGeometry:
    pixel_area_mm2: float
    slice_mm: float
    voxel_mm3: float

    @classmethod
    def from_directions(cls, directions) -> "CalciumGeometry":
        d = np.asarray(directions, np.float64)
        area = float(np.linalg.norm(np.cross(d[0], d[1])))
        vol = float(abs(np.linalg.det(d)))
        return cls(area, vol / area, vol)

    @property
    def normalisation(self) -> float:
        return self.slice_mm / REFERENCE_SLICE_MM


def score_mask(hu: np.ndarray, mask: np.ndarray, directions, connectivity: int = 8,
               calibration: float = DEFAULT_CALIBRATION, threshold: float = HU_THRESHOLD,
               min_area_mm2: float = MIN_AREA_MM2) -> CalciumScore:
    """Scores of one (I, J, K) mask on its (I, J, K) CT (see the module docstring)."""
    from scipy import ndimage
    if hu.shape != mask.shape:
        raise ValueError(f"CT {hu.shape} and mask {mask.shape} differ in shape")
    if connectivity not in (4, 8):
        raise ValueError("2D connectivity must be 4 or 8")
    geo = CalciumGeometry.from_directions(directions)
    from .agreement import union_box
    box = union_box(mask, mask)
    if box is None:
        return CalciumScore()
    h = np.asarray(hu[box], np.float64)
    cand = np.asarray(mask[box], bool) & (h >= threshold)
    structure = np.zeros((3, 3, 3), bool)   # no link across slices: 2D lesions per slice k
    structure[:, :, 1] = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    lab, n = ndimage.label(cand, structure)
    if n == 0:
        return CalciumScore()
    flat = lab.ravel()
    sel = flat > 0
    idx = flat[sel]
    vals = h.ravel()[sel]
    pixels = np.bincount(idx, minlength=n + 1)[1:]
    hu_sum = np.bincount(idx, weights=vals, minlength=n + 1)[1:]
    peak = np.full(n + 1, -np.inf)
    np.maximum.at(peak, idx, vals)
    peak = peak[1:]
    area = pixels * geo.pixel_area_mm2
    keep = area >= min_area_mm2
    raw = float(np.sum(area[keep] * density_weight(peak[keep])))
    return CalciumScore(
        agatston=raw * geo.normalisation, agatston_raw=raw,
        volume_mm3=float(pixels[keep].sum()) * geo.voxel_mm3,
        mass_mg=calibration * float(hu_sum[keep].sum()) * geo.voxel_mm3 / 1000.0,
        lesions=int(keep.sum()))


# -- exams and corpora ---------------------------------------------------------------------

@dataclass
class ExamCalcium:
    exam: str
    split: str
    ct: str
    slice_mm: float
    normalisation: float
    classes: dict[int, CalciumScore] = field(default_factory=dict)   # class id -> score

    @property
    def total(self) -> CalciumScore:
        t = CalciumScore()
        for s in self.classes.values():
            t.add(s)
        return t


def class_masks(vol, class_map) -> dict[int, np.ndarray]:
    """{class id: (I, J, K) bool} of a label volume under the corpus' class map."""
    hdr = vol.header
    ids = class_map.ids_for(hdr)
    out: dict[int, np.ndarray] = {}
    if ids is None:
        for layer in range(vol.layers.shape[0]):
            values = np.unique(vol.layers[layer])
            for v in values.tolist():
                if v == 0:
                    continue
                c = class_map.class_of_value(int(v), hdr.path)
                m = vol.layers[layer] == v
                out[c] = out[c] | m if c in out else m
        return out
    for (layer, value), c in ids.items():
        m = vol.layers[layer] == value
        out[c] = out[c] | m if c in out else m
    return out


def exam_calcium(label_path, ct_path, class_map, n_classes: int, split: str = "",
                 connectivity: int = 8, calibration: float = DEFAULT_CALIBRATION) -> ExamCalcium:
    """Scores of one exam: its label file on its CT's grid (placed and checked as ``convert
    --images`` does), every class of the corpus (0 for those the exam lacks)."""
    from gpuconv.dataset.exams import exam_id
    from gpuconv.dataset.grid import check_same_grid, place_on_grid, read_ct
    from gpuconv.io.formats import read_volume, reference_grid  # NRRD, NIfTI, DICOM-SEG labels
    ct_hdr, hu = read_ct(ct_path)
    vol = read_volume(label_path)   # a DICOM-SEG is placed on the CT by its frame positions:
    vol = place_on_grid(vol, reference_grid(vol.header, ct_hdr), Path(ct_path).name)
    check_same_grid(vol.header, ct_hdr)
    geo = CalciumGeometry.from_directions(vol.header.directions)
    masks = class_masks(vol, class_map)
    res = ExamCalcium(exam_id(label_path), split, str(ct_path), geo.slice_mm, geo.normalisation)
    for c in range(n_classes):
        m = masks.get(c)
        res.classes[c] = (score_mask(hu, m, vol.header.directions, connectivity, calibration)
                          if m is not None else CalciumScore())
    return res


@dataclass
class CorpusCalcium:
    exams: list[ExamCalcium] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)    # {"file", "reason"}: CT unusable
    without_ct: list[str] = field(default_factory=list)   # exam ids left out (no CT given)

    def as_json(self, class_names) -> dict:
        return {"exams": exams_json(self.exams, class_names), "failed": self.failures,
                "without_ct": self.without_ct}


def calcium_of_exams(label_paths, ct_inputs, class_map, class_names, split_of=None,
                     connectivity: int = 8, calibration: float = DEFAULT_CALIBRATION,
                     on_error=None) -> CorpusCalcium:
    """Scores of every exam among ``label_paths`` that has a CT (matched by exam id).  Exams
    without a CT are listed in ``without_ct`` (left out of every calcium number); a CT that
    cannot be read or is on another grid is a failure of that exam."""
    from gpuconv.dataset.exams import exam_id
    from gpuconv.dataset.grid import match_ct
    from gpuconv.errors import InputError
    cts = match_ct(ct_inputs, label_paths)
    res = CorpusCalcium()
    for p in sorted(label_paths, key=exam_id):
        e = exam_id(p)
        if e not in cts:
            res.without_ct.append(e)
            continue
        try:
            res.exams.append(exam_calcium(p, cts[e], class_map, len(class_names),
                                          (split_of or {}).get(e, ""), connectivity,
                                          calibration))
        except InputError as exc:
            res.failures.append({"file": str(p), "reason": exc.reason})
            if on_error:
                on_error(str(p), exc.reason)
    return res


def calcium_for_scan(inputs, ct_inputs, scan, *, classes=None, single_class=False,
                     split_csv=None, val_fraction=0.2, seed=0, calibration=DEFAULT_CALIBRATION,
                     connectivity=8, on_error=None) -> tuple[CorpusCalcium, tuple]:
    """``gpuconv stats --ct``: the exams ``scan`` (``scan_instances``) read, with the same class
    list and split, scored against their CTs.  Returns (per-exam scores, ``summary``)."""
    from gpuconv.dataset.exams import exam_id
    from gpuconv.dataset.plan import expand_inputs, plan_run
    from gpuconv.errors import OptionError
    if connectivity not in (4, 8):
        raise OptionError("calcium_connectivity", "must be 4 or 8")
    if not (math.isfinite(calibration) and calibration > 0):
        raise OptionError("mass_calibration", "must be a positive number")
    plan = plan_run(expand_inputs(inputs), classes=classes, single_class=single_class,
                    split_csv=split_csv, val_fraction=val_fraction, seed=seed)
    read = set(scan.exams)
    paths = [p for p in plan.headers if exam_id(p) in read]
    res = calcium_of_exams(paths, ct_inputs, plan.class_map, scan.class_names, plan.split_of,
                           connectivity, calibration, on_error)
    return res, summary(res.exams, len(scan.class_names))


# -- tables --------------------------------------------------------------------------------

EXAM_COLUMNS = ("exam", "split", "class_id", "class_name", "agatston", "agatston_raw",
                "volume_mm3", "mass_mg", "lesions_2d", "risk_category", "slice_mm",
                "normalisation", "ct")
SUMMARY_COLUMNS = ("ct_scans", "agatston_mean", "agatston_median", "volume_mean_mm3",
                   "mass_mean_mg", "risk_0", "risk_1_99", "risk_100_399", "risk_400_plus")


def _f(x: float) -> str:
    return f"{x:.4f}"


def exam_rows(exams: list[ExamCalcium], class_names: list[str]) -> list[dict]:
    rows = []
    for ex in exams:
        items = [(c, class_names[c] if c < len(class_names) else str(c), s)
                 for c, s in sorted(ex.classes.items())] + [("", TOTAL, ex.total)]
        for cid, name, s in items:
            rows.append({"exam": ex.exam, "split": ex.split, "class_id": cid,
                         "class_name": name, "agatston": _f(s.agatston),
                         "agatston_raw": _f(s.agatston_raw), "volume_mm3": _f(s.volume_mm3),
                         "mass_mg": _f(s.mass_mg), "lesions_2d": s.lesions,
                         "risk_category": risk_category(s.agatston),
                         "slice_mm": _f(ex.slice_mm), "normalisation": _f(ex.normalisation),
                         "ct": ex.ct})
    return rows


def exam_csv_text(exams: list[ExamCalcium], class_names: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, EXAM_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(exam_rows(exams, class_names))
    return buf.getvalue()


def summary(exams: list[ExamCalcium], n_classes: int) -> tuple[list[dict], dict]:
    """Per class and total over the exams with a CT: mean and median Agatston, mean volume
    and mass, and how many exams fall in each risk category of that score."""
    def one(scores: list[CalciumScore]) -> dict:
        ag = np.array([s.agatston for s in scores], float)
        cats = [risk_category(a) for a in ag.tolist()]
        nan = float("nan")
        return {"ct_scans": len(scores),
                "agatston_mean": float(ag.mean()) if len(ag) else nan,
                "agatston_median": float(np.median(ag)) if len(ag) else nan,
                "volume_mean_mm3": float(np.mean([s.volume_mm3 for s in scores]))
                if scores else nan,
                "mass_mean_mg": float(np.mean([s.mass_mg for s in scores])) if scores else nan,
                "risk_0": cats.count("0"), "risk_1_99": cats.count("1-99"),
                "risk_100_399": cats.count("100-399"), "risk_400_plus": cats.count(">=400")}
    per_class = [one([ex.classes.get(c, CalciumScore()) for ex in exams])
                 for c in range(n_classes)]
    return per_class, one([ex.total for ex in exams])


def write_exam_csv(out, exams, class_names) -> Path:
    from gpuconv.writers.atomic import write_text_atomic
    p = Path(out) / CSV_NAME
    write_text_atomic(p, exam_csv_text(exams, class_names))
    return p


def exams_json(exams: list[ExamCalcium], class_names) -> list[dict]:
    out = []
    for ex in exams:
        d = {"exam": ex.exam, "split": ex.split, "ct": ex.ct, "slice_mm": ex.slice_mm,
             "normalisation": ex.normalisation,
             "classes": {class_names[c] if c < len(class_names) else str(c): asdict(s)
                         for c, s in sorted(ex.classes.items())},
             "total": asdict(ex.total),
             "risk_category": risk_category(ex.total.agatston)}
        out.append(d)
    return out


def nan_to_none(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}
