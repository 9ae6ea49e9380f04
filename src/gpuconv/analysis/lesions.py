"""Lesion-wise detection in 3D: connected components of a reference and a prediction, matched.

Rule (per class, per file pair; A = reference / truth, B = prediction):
- a lesion is a 3D connected component of the class mask (``connectivity`` 26 by default, as
  ``stats``; 18 or 6);
- a reference lesion is **detected** when at least one of its voxels is also a voxel of a
  predicted lesion (any voxel overlap), else **missed**;
- a predicted lesion is a **true positive** when it overlaps at least one reference lesion,
  else a **false positive**;
- **split**: a reference lesion overlapped by two or more predicted lesions (counted once,
  detected); **merged**: a predicted lesion overlapping two or more reference lesions (one
  true-positive prediction; each reference lesion it touches is detected).

Rates: sensitivity = detected / reference lesions; precision = true-positive predictions /
predicted lesions; F1 = 2 P S / (P + S) (0 when both are 0); false positives per scan = false
positives / file pairs.  A rate whose denominator is 0 is None (JSON null, empty in CSV).
Summaries over files add the counts first, then take the rates.

Components are labelled on the union bounding box of both masks (no lesion is cut: outside it
there is only background) with ``scipy.ndimage.label``, or ``cupyx.scipy.ndimage.label`` for
the GPU (same structure, same counts).
"""

from __future__ import annotations

import numpy as np

COUNT_KEYS = ("lesions_ref", "lesions_pred", "lesions_detected", "lesions_missed",
              "lesions_tp_pred", "lesions_fp", "lesions_split", "lesions_merged")
RATE_KEYS = ("sensitivity", "precision", "f1")
RULE_TEXT = ("3D connected components per class (A = reference, B = prediction); a reference "
             "lesion is detected when any of its voxels is in a predicted lesion; a predicted "
             "lesion overlapping no reference lesion is a false positive; sensitivity = "
             "detected / reference lesions, precision = overlapping / predicted lesions, "
             "F1 = 2PS/(P+S), FP per scan = false positives / file pairs")


def _structure(connectivity: int, xp=np):
    from scipy import ndimage
    rank = {6: 1, 18: 2, 26: 3}.get(int(connectivity))
    if rank is None:
        raise ValueError("3D connectivity must be 6, 18 or 26")
    return ndimage.generate_binary_structure(3, rank)


def _label(mask, structure, xp):
    if xp is np:
        from scipy import ndimage
        lab, n = ndimage.label(mask, structure)
    else:  # CuPy
        from cupyx.scipy import ndimage as cndi
        lab, n = cndi.label(mask, xp.asarray(structure))
    return lab, int(n)


def match_lesions(ref, pred, connectivity: int = 26, xp=np) -> dict:
    """Counts of ``COUNT_KEYS`` and the rates (``RATE_KEYS``; None when undefined) for two
    same-shape boolean 3D masks.  ``xp``: numpy, or cupy to label on the GPU."""
    from .agreement import union_box
    ref = np.asarray(ref, bool)
    pred = np.asarray(pred, bool)
    if ref.shape != pred.shape:
        raise ValueError(f"masks differ in shape: {ref.shape} vs {pred.shape}")
    if ref.ndim != 3:
        raise ValueError("lesion matching needs 3D masks")
    structure = _structure(connectivity)
    box = union_box(ref, pred)
    if box is None:
        return _counts(0, 0, 0, 0, 0, 0)
    a = xp.asarray(np.ascontiguousarray(ref[box]))
    b = xp.asarray(np.ascontiguousarray(pred[box]))
    la, na = _label(a, structure, xp)
    lb, nb = _label(b, structure, xp)
    both = (la > 0) & (lb > 0)
    pairs = xp.unique(la[both].astype(xp.int64) * (nb + 1) + lb[both].astype(xp.int64))
    pairs = pairs.get() if hasattr(pairs, "get") else np.asarray(pairs)
    pa, pb = pairs // (nb + 1), pairs % (nb + 1)
    hits_a = np.bincount(pa, minlength=na + 1)[1:]    # predicted lesions per reference lesion
    hits_b = np.bincount(pb, minlength=nb + 1)[1:]    # reference lesions per predicted lesion
    return _counts(na, nb, int((hits_a > 0).sum()), int((hits_b > 0).sum()),
                   int((hits_a > 1).sum()), int((hits_b > 1).sum()))


def _counts(n_ref, n_pred, detected, tp_pred, split, merged) -> dict:
    out = {"lesions_ref": n_ref, "lesions_pred": n_pred, "lesions_detected": detected,
           "lesions_missed": n_ref - detected, "lesions_tp_pred": tp_pred,
           "lesions_fp": n_pred - tp_pred, "lesions_split": split, "lesions_merged": merged}
    out.update(rates(out))
    return out


def rates(counts: dict, files: int | None = None) -> dict:
    """Sensitivity, precision, F1 (and false positives per scan when ``files`` is given)."""
    s = counts["lesions_detected"] / counts["lesions_ref"] if counts["lesions_ref"] else None
    p = counts["lesions_tp_pred"] / counts["lesions_pred"] if counts["lesions_pred"] else None
    if s is None or p is None:
        f1 = None if (s is None and p is None) else 0.0
    else:
        f1 = 2 * p * s / (p + s) if (p + s) > 0 else 0.0
    out = {"sensitivity": s, "precision": p, "f1": f1}
    if files is not None:
        out["fp_per_scan"] = counts["lesions_fp"] / files if files else None
    return out


def summarize(rows: list[dict]) -> dict:
    """Counts added over rows (one per file pair of one class), then the rates."""
    total = {k: int(sum(r[k] for r in rows)) for k in COUNT_KEYS}
    total.update(rates(total, files=len(rows)))
    return total
