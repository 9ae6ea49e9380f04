"""Before/after: the mask Ultralytics makes of gpuconv's polygons, on COCA-like calcium lesions.

Run: .venv/bin/python docs/polygon_mask_area.py  (writes docs/polygon_mask_area.png and prints
the numbers quoted in docs/datasets.md; needs matplotlib and opencv-python-headless, the test
extra).  Seeded: the same numbers every run.

Lesions: N 2D lesions with areas drawn log-normally and kept in 11..649 px (median ~35 px), the
range of COCA's calcium quoted in issue 12; shapes grown pixel by pixel (Eden growth: compact,
irregular; a third of them stretched along one axis, as calcified plaques along a vessel are).
Each lesion sits at a random place of a 512 x 512 slice.

"before": gpuconv until issue 12 (vertices on pixel corners, x = i / W, six decimals);
"after": now (vertices on the centres of the boundary pixels, (i + 0.5) / W, six decimals).
The consumer: float32 parse, x size in float32, int32 truncation, cv2.fillPoly at 512 x 512
(polygon2mask), optionally after resample_segments to 1000 points (what YOLODataset does).
Box survival: Ultralytics' default augmentation (imgsz 640: the 512 slice is scaled by 1.25;
RandomPerspective scale gain uniform in [0.5, 1.5]; degrees, shear, perspective 0) keeps a
box only when its width and height exceed 2 px (box_candidates, wh_thr=2); the box of a
segment is its vertex extent (segments2boxes / segment2box).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_polygons import consumer_mask  # noqa: E402  (the consumer, re-expressed in the tests)

from gpuconv.results.polygons import polygon_text, trace_outer_boundary  # noqa: E402

N, W, H, SEED = 2000, 512, 512, 12


def lesion_areas(rng, n):
    """n areas, log-normal, kept in 11..649 px; both ends included; median about 35 px."""
    out = [11, 649]
    while len(out) < n:
        a = int(round(rng.lognormal(np.log(31), 0.95)))
        if 11 <= a <= 649:
            out.append(a)
    return np.array(out)


def eden(rng, area, stretch):
    """A 4-connected blob of ``area`` pixels grown from one pixel; ``stretch`` favours x."""
    cells = {(0, 0)}
    frontier = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    while len(cells) < area:
        if stretch:   # frontier cells far along x are preferred: a streak
            w = np.array([1.0 + 6.0 * (abs(f[1]) > abs(f[0]) * 3) for f in frontier])
            k = int(rng.choice(len(frontier), p=w / w.sum()))
        else:
            k = int(rng.integers(len(frontier)))
        c = frontier.pop(k)
        if c in cells:
            continue
        cells.add(c)
        for d in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            nb = (c[0] + d[0], c[1] + d[1])
            if nb not in cells:
                frontier.append(nb)
    js, is_ = np.array(sorted(cells)).T
    m = np.zeros((js.max() - js.min() + 1, is_.max() - is_.min() + 1), bool)
    m[js - js.min(), is_ - is_.min()] = True
    return m


def old_corner_polygon(mask):
    """The corner outline gpuconv wrote before issue 12 (pixel edges, foreground on the right,
    turning into the diagonal pixel at a saddle): (n, 2) corner points."""
    p = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.uint8)
    p[1:-1, 1:-1] = mask
    ys, xs = np.nonzero(p[1:-1, 1:-1])
    sy, sx = ys[0], xs[ys == ys[0]].min()
    dx, dy = (1, 0, -1, 0), (0, 1, 0, -1)
    alx, aly, arx, ary = (0, 0, -1, -1), (-1, 0, 0, -1), (0, -1, -1, 0), (0, 0, -1, -1)
    x, y, d, pts = sx, sy, 0, [(sx, sy)]
    while True:
        x += dx[d]
        y += dy[d]
        if (x, y) == (sx, sy):
            break
        fl = p[y + aly[d] + 1, x + alx[d] + 1] != 0
        fr = p[y + ary[d] + 1, x + arx[d] + 1] != 0
        nd = (d + 3) % 4 if (fl and fr) or (fl and not fr) else (d if fr else (d + 1) % 4)
        if nd != d:
            pts.append((x, y))
            d = nd
    return np.array(pts, np.int64)


def old_text(pts, W, H):
    xy = pts.astype(np.float64) / np.array([W, H], np.float64)
    return "0 " + " ".join(f"{v:.6f}" for v in xy.reshape(-1).tolist())


def survival(extent_px):
    """P(box kept) under RandomPerspective's scale gain s ~ U(0.5, 1.5) at imgsz 640 (x1.25):
    kept when extent * 1.25 * s > 2 in both directions."""
    e = np.minimum(extent_px[:, 0], extent_px[:, 1]) * 1.25
    s_min = np.divide(2.0, e, out=np.full(len(e), np.inf), where=e > 0)
    return np.clip((1.5 - np.maximum(s_min, 0.5)) / 1.0, 0.0, 1.0)


def main():
    rng = np.random.default_rng(SEED)
    areas = lesion_areas(rng, N)
    rows = []
    for a in areas:
        m = eden(rng, int(a), stretch=rng.random() < 1 / 3)
        h, w = m.shape
        j0, i0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        full = np.zeros((H, W), bool)
        full[j0:j0 + h, i0:i0 + w] = m
        filled = full.copy()
        cs, _ = cv2.findContours(full.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        filled = np.zeros((H, W), np.uint8)
        cv2.drawContours(filled, cs, -1, 1, thickness=-1)   # holes filled (hole-free here)
        filled = filled.astype(bool)
        old = old_text(old_corner_polygon(m) + [i0, j0], W, H)
        new = polygon_text(trace_outer_boundary(m, 8) + [i0, j0], 0, W, H)
        r = {"area": int(filled.sum())}
        for name, line in (("before", old), ("after", new)):
            for rs in (False, True):
                got = consumer_mask(line, W, H, resample=rs)
                key = name + ("_resampled" if rs else "")
                r[key] = int(got.sum())
                r[key + "_exact"] = bool(np.array_equal(got, filled))
                r[key + "_iou"] = float((got & filled).sum() / (got | filled).sum())
        ys, xs = np.nonzero(filled)
        n_px = np.array([xs.max() - xs.min() + 1, ys.max() - ys.min() + 1])
        r["extent_before"] = n_px.tolist()          # corner vertices span the pixels
        r["extent_after"] = (n_px - 1).tolist()     # centre vertices: one pixel less
        rows.append(r)
    A = np.array([r["area"] for r in rows], float)
    out = {"lesions": N, "area_min": int(A.min()), "area_median": float(np.median(A)),
           "area_max": int(A.max())}
    for key in ("before", "after", "before_resampled", "after_resampled"):
        ratio = np.array([r[key] for r in rows]) / A
        gain = np.array([r[key] for r in rows]) - A
        worst = int(np.argmin([r[key + "_iou"] for r in rows]))
        out[key] = {"exact": int(sum(r[key + "_exact"] for r in rows)),
                    "median_area_ratio": round(float(np.median(ratio)), 3),
                    "max_area_ratio": round(float(ratio.max()), 3),
                    "min_iou": round(float(rows[worst][key + "_iou"]), 3),
                    "min_iou_lesion_px": int(A[worst]),
                    "pixels_gained_when_not_exact": ([int(gain[gain != 0].min()),
                                                      int(gain[gain != 0].max())]
                                                     if (gain != 0).any() else [])}
    for key in ("before", "after"):
        ext = np.array([r["extent_" + key] for r in rows], float)
        p = survival(ext)
        out["augment_" + key] = {"mean_drop_share": round(float(1 - p.mean()), 4),
                                 "always_dropped": int((p == 0).sum()),
                                 "sometimes_dropped": int(((p > 0) & (p < 1)).sum())}
    print(json.dumps(out, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, colour, label in (("before", "tab:red", "before: pixel-corner vertices"),
                               ("after", "tab:green", "after: boundary-pixel centres"),
                               ("after_resampled", "tab:blue",
                                "after, resampled to 1000 points")):
        got = np.array([r[key] for r in rows], float)
        ax[0].scatter(A, got, s=6, alpha=0.5, color=colour, label=label)
        ax[1].hist(got / A, bins=np.linspace(0.9, 3.1, 89), color=colour, alpha=0.6,
                   label=label)
    lim = [8, 800]
    ax[0].plot(lim, lim, "k--", lw=0.8, label="true area")
    ax[0].set(xscale="log", yscale="log", xlim=lim, ylim=lim,
              xlabel="lesion area (px)", ylabel="area of Ultralytics' mask (px)",
              title=f"{N} COCA-like lesions (11-649 px, median {np.median(A):.0f} px)")
    ax[0].legend(fontsize=8)
    ax[1].set(xlabel="mask area / lesion area", ylabel="lesions",
              title="polygon2mask at native size, 512 x 512")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    dest = Path(__file__).with_suffix(".png")
    fig.savefig(dest, dpi=110)
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
