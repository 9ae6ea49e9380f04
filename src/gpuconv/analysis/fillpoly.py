"""``cv2.fillPoly(mask, [points], 1)`` (8-connected lines, ``shift=0``) without OpenCV.

``assemble`` rasterises YOLO-seg lines exactly as Ultralytics does, and Ultralytics fills its
polygons with OpenCV.  When OpenCV is not installed this module gives the same pixels, by the
same integer arithmetic as OpenCV's ``CollectPolyEdges`` + ``FillEdgeCollection``
(imgproc/drawing.cpp), re-expressed:

1. every edge is drawn as an 8-connected Bresenham line (OpenCV's ``LineIterator``, walked from
   its left end), clipped to the image (``clipLine``);
2. each non-horizontal edge enters a scan-line fill in 16.16 fixed point: x starts at
   ``x << 16`` at its upper vertex and moves by ``dx = ((x1 - x0) << 16) / (y1 - y0)`` (C
   division, truncating toward zero) per row; an edge is active on rows y0 <= y < y1; an edge
   with an end outside the image uses its clipped ends (OpenCV's "more accurate PolyEdge");
3. on each row the active edges, sorted by x, are paired (even-odd) and the pixels
   ``(xl + 2**16 - 1) >> 16 .. xr >> 16`` (pixel centres inside) are set, clipped to the
   image.

This follows the current OpenCV source (checked against opencv-python-headless 5.0 in the
tests; older OpenCV releases were not checked).

``tests/test_assemble.py`` checks it against ``cv2.fillPoly`` on thousands of random polygons
(convex, self-intersecting, touching and crossing the border).
"""

from __future__ import annotations

import numpy as np

XY_SHIFT = 16
XY_ONE = 1 << XY_SHIFT
LEFT_DELTA = XY_ONE - 1          # spans run from ceil(x_left) to floor(x_right)


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def clip_line(width: int, height: int, x1: int, y1: int, x2: int, y2: int):
    """OpenCV's ``clipLine``: (inside, x1, y1, x2, y2)."""
    right, bottom = width - 1, height - 1
    c1 = (x1 < 0) + (x1 > right) * 2 + (y1 < 0) * 4 + (y1 > bottom) * 8
    c2 = (x2 < 0) + (x2 > right) * 2 + (y2 < 0) * 4 + (y2 > bottom) * 8
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += int(float(a - y1) * (x2 - x1) / (y2 - y1))
            y1 = a
            c1 = (x1 < 0) + (x1 > right) * 2
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += int(float(a - y2) * (x2 - x1) / (y2 - y1))
            y2 = a
            c2 = (x2 < 0) + (x2 > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += int(float(a - x1) * (y2 - y1) / (x2 - x1))
                x1 = a
                c1 = 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += int(float(a - x2) * (y2 - y1) / (x2 - x1))
                x2 = a
                c2 = 0
    return (c1 | c2) == 0, x1, y1, x2, y2


def draw_line(mask: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> None:
    """OpenCV ``Line`` with 8-connectivity (``LineIterator``, left to right), clipped."""
    height, width = mask.shape
    inside, x1, y1, x2, y2 = clip_line(width, height, x1, y1, x2, y2)
    if not inside:
        return
    if x2 < x1:                                  # leftToRight: start at the left end
        x1, y1, x2, y2 = x2, y2, x1, y1
    dx, dy = x2 - x1, y2 - y1
    sy = -1 if dy < 0 else 1
    dy = abs(dy)
    steep = dy > dx
    if steep:
        dx, dy = dy, dx
    err = dx - (dy + dy)
    plus, minus = dx + dx, -(dy + dy)
    x, y = x1, y1
    for _ in range(dx + 1):
        mask[y, x] = 1
        step_minor = err < 0
        err += minus + (plus if step_minor else 0)
        if steep:                                # major axis y, minor x
            y += sy
            if step_minor:
                x += 1
        else:
            x += 1
            if step_minor:
                y += sy


def fill_poly(mask: np.ndarray, points) -> None:
    """In place, like ``cv2.fillPoly(mask, [points], 1)`` on an (H, W) uint8 array."""
    pts = [(int(x), int(y)) for x, y in np.asarray(points, np.int64).reshape(-1, 2)]
    height, width = mask.shape
    n = len(pts)
    if n == 0:
        return
    edges = []                                   # [y0, y1, x (fixed), dx]
    px, py = pts[-1]
    for cx, cy in pts:
        draw_line(mask, px, py, cx, cy)
        tx0, ty0, tx1, ty1 = px, py, cx, cy
        y0c, y1c = py, cy
        if not (0 <= px < width and 0 <= cx < width and 0 <= py < height and 0 <= cy < height):
            _, tx0, ty0, tx1, ty1 = clip_line(width, height, px, py, cx, cy)
            if ty0 != ty1:                       # the clipped ends make the edge
                y0c, y1c = ty0, ty1
        x0f, x1f = tx0 << XY_SHIFT, tx1 << XY_SHIFT
        if py != cy:
            dx = _cdiv(x1f - x0f, y1c - y0c)
            if py < cy:
                edges.append([py, cy, x0f + (py - y0c) * dx, dx])
            else:
                edges.append([cy, py, x1f + (cy - y1c) * dx, dx])
        px, py = cx, cy
    if len(edges) < 2:
        return
    y_min = min(e[0] for e in edges)
    y_max = max(e[1] for e in edges)
    xs = [e[2] for e in edges] + [e[2] + (e[1] - e[0]) * e[3] for e in edges]
    if y_max < 0 or y_min >= height or max(xs) < 0 or min(xs) >= (width << XY_SHIFT):
        return
    for y in range(max(y_min, 0), min(y_max, height)):
        row = sorted(e[2] + (y - e[0]) * e[3] for e in edges if e[0] <= y < e[1])
        for a, b in zip(row[0::2], row[1::2]):
            x1, x2 = (a + LEFT_DELTA) >> XY_SHIFT, b >> XY_SHIFT
            if x1 < width and x2 >= 0:
                mask[y, max(x1, 0):min(x2, width - 1) + 1] = 1
