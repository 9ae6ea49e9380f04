"""Agreement between label files: classes, grid checks, folder pairing, table/CSV/JSON output.

The metrics themselves are in ``agreement.py`` (pure functions on arrays).

Classes (what ``--class`` names):
- plain label map: a label value (``"1"``); without ``--class`` every non-zero value present in
  either file, ascending;
- 3D Slicer ``.seg.nrrd``: a segment name (mask = voxels of its layer equal to its label
  value); without ``--class`` every segment name of A, then those only B has.  A number that is
  no segment's name selects the voxels equal to that value in any layer.
Comparing a Slicer file with a plain map needs ``--class`` (names and values do not match up).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from gpuconv.analysis.agreement import (DEFAULT_HD95, DICE_DEFINITION, EMPTY_RULE,
                                        compare_masks, definition_text, get_ops, unit)
from gpuconv.dataset.grid import check_same_grid
from gpuconv.errors import InputError
from gpuconv.dataset.exams import check_unique_exam_ids, exam_id
from gpuconv.io.formats import read_volume  # NRRD, NIfTI (nnU-Net predictions), DICOM-SEG
from gpuconv.io.nrrd_read import LabelVolume, VolumeHeader



def check_orthogonal(hdr: VolumeHeader) -> None:
    """Distances use per-axis spacing, which is exact only for orthogonal axes."""
    d = hdr.directions / hdr.spacing[:, None]
    off = np.abs(d @ d.T - np.eye(3)).max()
    if off > 1e-4:
        raise InputError("sheared grid: distance metrics need orthogonal axes "
                         f"(space directions off by {off:.2g})", hdr.path)


# -- classes -------------------------------------------------------------------------------

def _seen_values(flat: np.ndarray) -> np.ndarray:
    """bool (256 or 65536,): the values an 8/16-bit unsigned array holds, in one pass: the C
    kernel (``backends.native``; no Numba import, ~0.4 s of a cold run), else Numba."""
    from gpuconv.backends import native
    if native.get() is not None:
        return native.seen_values(flat)
    from gpuconv.backends.cpu_kernels import seen_values_numba
    return seen_values_numba(np.ascontiguousarray(flat), 1 << (8 * flat.dtype.itemsize))


def _present_values(layers: np.ndarray) -> list[int]:
    """Non-zero values in a volume: one pass for 8/16-bit unsigned data (``np.unique`` sorts
    and ``np.bincount`` widens to int64: seconds on a 512x512x224 volume)."""
    flat = layers.ravel(order="K")
    if flat.dtype.kind == "u" and flat.dtype.itemsize <= 2:
        top = int(flat.max()) if flat.size else 0
        if top <= 1:    # a binary mask (most agreement inputs): the max says it, SIMD-fast
            return [1] if top == 1 else []
        values = np.flatnonzero(_seen_values(flat))
    else:
        values = np.unique(flat)
    return [int(v) for v in values if v != 0]


def _value_mask(layer: np.ndarray, value: int) -> np.ndarray:
    """``layer == value`` as a bool array; for a 0/1 uint8 layer and value 1 that is the layer
    itself, viewed as bool (no copy: a binary vessel mask is most agreement inputs)."""
    if value == 1 and layer.dtype == np.uint8 and layer.size and int(layer.max()) <= 1:
        return layer.view(np.bool_)
    return layer == value


def class_names(vol: LabelVolume) -> list[str]:
    """The classes a file holds, in its own order (segment names, or values as text)."""
    segs = vol.header.segments
    if segs is not None:
        out = []
        for s in segs:
            if s.name not in out:
                out.append(s.name)
        return out
    return [str(v) for v in _present_values(vol.layers)]


def class_mask(vol: LabelVolume, name: str) -> np.ndarray | None:
    """(I, J, K) bool mask of one class; None when this file does not know the class."""
    segs = vol.header.segments
    if segs is not None:
        hits = [s for s in segs if s.name == name]
        if hits:
            mask = _value_mask(vol.layers[hits[0].layer], hits[0].label_value)
            if len(hits) > 1:
                mask = mask.copy()   # a view of the layer must not be OR-ed into
            for s in hits[1:]:
                mask |= vol.layers[s.layer] == s.label_value
            return mask
    try:
        value = int(name)
    except ValueError:
        if segs is None:
            raise InputError(f"class '{name}' is not a label value (this is a plain label map)",
                             vol.header.path) from None
        return None
    if vol.layers.shape[0] == 1:
        return _value_mask(vol.layers[0], value)
    return (vol.layers == value).any(axis=0)


def pair_classes(va: LabelVolume, vb: LabelVolume, wanted: Sequence[str] | None) -> list[str]:
    if wanted:
        return list(dict.fromkeys(str(w) for w in wanted))
    seg_a, seg_b = va.header.segments is not None, vb.header.segments is not None
    if seg_a != seg_b:
        plain = vb if seg_a else va
        raise InputError("one file is a Slicer segmentation and the other a plain label map: "
                         "give --class NAME|VALUE to say what to compare", plain.header.path)
    names = class_names(va)
    for n in class_names(vb):
        if n not in names:
            names.append(n)
    if not seg_a:
        names.sort(key=int)
    return names


# -- one pair, many pairs ------------------------------------------------------------------

@dataclass
class PairResult:
    exam: str
    file_a: str
    file_b: str
    spacing_mm: list[float] = field(default_factory=list)
    classes: list[dict] = field(default_factory=list)   # one dict per class (see compare_masks)
    error: str | None = None


def agree_files(path_a, path_b, classes: Sequence[str] | None = None,
                definitions: Sequence[str] = (DEFAULT_HD95,), backend="cpu",
                exam: str | None = None, lesions: int | None = None) -> PairResult:
    """Dice/HD95 per class of two label files on the same grid (spacing from A's header).
    ``lesions``: a 3D connectivity (26, 18, 6) adds lesion-wise detection counts (A = the
    reference, B = the prediction; ``lesions.match_lesions``)."""
    va, vb = read_volume(path_a), read_volume(path_b)
    check_same_grid(va.header, vb.header)
    check_orthogonal(va.header)
    names = pair_classes(va, vb, classes)
    spacing = [float(s) for s in va.header.spacing]
    res = PairResult(exam if exam is not None else exam_id(path_a), str(path_a), str(path_b),
                     spacing)
    for name in names:
        ma, mb = class_mask(va, name), class_mask(vb, name)
        if ma is None and mb is None:
            raise InputError(f"class '{name}' is in neither file (nor a label value)", path_a)
        shape = va.header.spatial_shape
        ma = np.zeros(shape, bool) if ma is None else ma
        mb = np.zeros(shape, bool) if mb is None else mb
        row = {"class": name}
        row.update(compare_masks(ma, mb, spacing, definitions, backend=backend))
        if lesions:
            from gpuconv.analysis.lesions import match_lesions
            ops = get_ops(backend)
            row.update(match_lesions(ma, mb, lesions, xp=ops.xp))
        res.classes.append(row)
    return res


def label_files(folder) -> list[Path]:
    """Label files under a folder (recursive), by ``convert``'s rule: its segmentation files
    (``*.seg.nrrd``, DICOM-SEG) when it has any (so CT volumes beside them are skipped), else
    every .nrrd/.nhdr/.nii/.nii.gz (``io.formats.find_label_files``)."""
    from gpuconv.io.formats import find_label_files
    return [p for p in find_label_files(Path(folder)) if p.is_file()]


def pair_folders(dir_a, dir_b) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Files of two folders matched by exam id -> (pairs, ids only in A, ids only in B)."""
    ids_a = check_unique_exam_ids(label_files(dir_a))
    ids_b = check_unique_exam_ids(label_files(dir_b))
    common = sorted(set(ids_a) & set(ids_b))
    pairs = [(e, ids_a[e], ids_b[e]) for e in common]
    return pairs, sorted(set(ids_a) - set(ids_b)), sorted(set(ids_b) - set(ids_a))


def agree_many(pairs, classes=None, definitions=(DEFAULT_HD95,), backend="cpu",
               on_error=None, lesions: int | None = None) -> list[PairResult]:
    """Each pair on its own: a bad file is recorded (``error``) and the others still run."""
    ops = get_ops(backend)  # set up once (GPU import) for the whole batch
    results = []
    for exam, pa, pb in pairs:
        try:
            results.append(agree_files(pa, pb, classes, definitions, ops, exam=exam,
                                       lesions=lesions))
        except InputError as exc:
            results.append(PairResult(exam, str(pa), str(pb), error=str(exc)))
            if on_error:
                on_error(str(exc))
    return results


# -- output --------------------------------------------------------------------------------

def _json_number(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


def summarize(results: list[PairResult], definitions) -> list[dict]:
    """Per class over all files: mean dice, mean finite HD95, how many were infinite."""
    by_class: dict[str, list[dict]] = {}
    for r in results:
        for row in r.classes:
            by_class.setdefault(row["class"], []).append(row)
    out = []
    for name, rows in by_class.items():
        s = {"class": name, "files": len(rows),
             "dice_mean": float(np.mean([r["dice"] for r in rows]))}
        for d in definitions:
            vals = [r[f"hd95_{d}"] for r in rows]
            finite = [v for v in vals if math.isfinite(v)]
            s[f"hd95_{d}_mean"] = float(np.mean(finite)) if finite else None
            s[f"hd95_{d}_infinite"] = len(vals) - len(finite)
        if rows and "lesions_ref" in rows[0]:
            from gpuconv.analysis.lesions import summarize as lesion_summary
            s.update(lesion_summary(rows))
        out.append(s)
    return out


def _has_lesions(results) -> bool:
    return any("lesions_ref" in row for r in results for row in r.classes)


def to_json(results, definitions, backend: str, unmatched=((), ()),
            lesion_rule: str | None = None) -> dict:
    defs = {"dice": DICE_DEFINITION}
    defs.update({f"hd95_{d}": definition_text(d) for d in definitions})
    if lesion_rule:
        defs["lesions"] = lesion_rule
    return {
        "definitions": defs,
        "units": {f"hd95_{d}": unit(d) for d in definitions},
        "empty_masks": EMPTY_RULE,
        "backend": backend,
        "pairs": [{"exam": r.exam, "file_a": r.file_a, "file_b": r.file_b,
                   "spacing_mm": r.spacing_mm, "error": r.error,
                   "classes": [{k: _json_number(v) for k, v in row.items()}
                               for row in r.classes]} for r in results],
        "summary": summarize([r for r in results if r.error is None], definitions),
        "unmatched": {"only_a": list(unmatched[0]), "only_b": list(unmatched[1])},
    }


CSV_HEAD = ["exam", "file_a", "file_b", "class", "voxels_a", "voxels_b", "intersection",
            "empty", "dice"]


def to_csv(results, definitions) -> str:
    """One row per (file pair, class); infinite HD95 is written ``inf`` (pandas reads it)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    from gpuconv.analysis.lesions import COUNT_KEYS, RATE_KEYS
    extra = list(COUNT_KEYS + RATE_KEYS) if _has_lesions(results) else []
    w.writerow(CSV_HEAD + [f"hd95_{d}" for d in definitions] + extra)
    for r in results:
        for row in r.classes:
            w.writerow([r.exam, r.file_a, r.file_b] + [row[k] for k in CSV_HEAD[3:]]
                       + [repr(float(row[f"hd95_{d}"])) for d in definitions]
                       + ["" if row.get(k) is None else row[k] for k in extra])
    return buf.getvalue()


def render_table(results, definitions, backend: str, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    con = console or Console()
    t = Table(title=f"Agreement (backend {backend})")
    for col in (["exam", "class", "voxels A", "voxels B", "dice"]
                + [f"hd95 {d} ({unit(d)})" for d in definitions]):
        t.add_column(escape(col), justify="left" if col in ("exam", "class") else "right")
    for r in results:
        if r.error:
            t.add_row(escape(r.exam), "[red]error[/]", "", "", "", *[""] * len(definitions))
            continue
        for row in r.classes:
            t.add_row(escape(r.exam), escape(row["class"]), str(row["voxels_a"]),
                      str(row["voxels_b"]), f"{row['dice']:.4f}",
                      *[_fmt_mm(row[f"hd95_{d}"]) for d in definitions])
    con.print(t)
    summary = summarize([r for r in results if r.error is None], definitions)
    if len(results) > 1 and summary:
        s = Table(title="Per class over files (HD95 mean over finite values)")
        for col in ["class", "files", "mean dice"] + [f"mean hd95 {d}" for d in definitions]:
            s.add_column(col, justify="left" if col == "class" else "right")
        for row in summary:
            s.add_row(escape(row["class"]), str(row["files"]), f"{row['dice_mean']:.4f}",
                      *[_fmt_mm(row[f"hd95_{d}_mean"]) + (f" ({row[f'hd95_{d}_infinite']} inf)"
                                                         if row[f"hd95_{d}_infinite"] else "")
                        for d in definitions])
        con.print(s)
    if _has_lesions(results) and summary:
        s = Table(title="Lesion-wise detection per class over files (A = reference)")
        for col in LESION_COLUMNS:
            s.add_column(col, justify="left" if col == "class" else "right")
        for row in summary:
            s.add_row(escape(row["class"]), str(row["files"]), *_lesion_cells(row))
        con.print(s)
    con.print("dice: " + DICE_DEFINITION)
    for d in definitions:
        con.print(escape(f"hd95 {d} ({unit(d)}): {definition_text(d)}"))
    con.print("empty masks: " + EMPTY_RULE)
    if _has_lesions(results):
        from gpuconv.analysis.lesions import RULE_TEXT
        con.print(escape("lesions: " + RULE_TEXT))


LESION_COLUMNS = ("class", "files", "ref", "found", "pred", "FP", "sens", "prec", "F1",
                  "FP/scan")     # missed, split, merged: in the CSV and JSON


def _fmt_rate(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _lesion_cells(row) -> list[str]:
    return [str(row[k]) for k in ("lesions_ref", "lesions_detected", "lesions_pred",
                                  "lesions_fp")] + [
        _fmt_rate(row[k]) for k in ("sensitivity", "precision", "f1", "fp_per_scan")]


def _fmt_mm(v) -> str:
    if v is None:
        return "-"
    return "inf" if math.isinf(v) else f"{v:.3f}"
