"""``gpuconv preview``: draw a slice's labels over its PNG so a person can check alignment.

Reads OUT/labels/{split}/{exam}_{n}.txt and OUT/images/{split}/{exam}_{n}.png (n = k+1, as in
the file names), upsamples the image by an integer factor with nearest-neighbour (so each CT
pixel stays a square and one-pixel lesions are visible) and draws each box's outline on the
outer border of the pixels it covers and each polygon as the outer border of the pixels
Ultralytics fills for it (``polygon2mask``: float32 x size, int32 cast, ``cv2.fillPoly``; see
``analysis/assemble.py``), so what is drawn is what a model trains on.  Without a
PNG (a labels-only dataset) the labels are drawn on black; an RGB (``--channels3``) image is
shown as its grey luminance so the class colours stay readable.
"""

from __future__ import annotations

import glob
import math
import re
from pathlib import Path

from gpuconv.errors import InputError, shown

MAX_SCALE = 64                      # --scale
MAX_PREVIEW_PIXELS = 64 * 1024 * 1024  # width x height of the written PNG
MAX_LABEL_FILE_BYTES = 16 << 20

PALETTE = [(255, 64, 64), (64, 255, 64), (64, 160, 255), (255, 220, 0), (255, 0, 255),
           (0, 255, 255), (255, 140, 0), (180, 120, 255)]
_NAME = re.compile(r"^(.+)_(\d+)\.txt$")


def find_label_files(out: Path, exam: str) -> dict[int, Path]:
    """{slice number n (1-based, as in the name): label file} for one exam."""
    found: dict[int, Path] = {}
    for p in sorted((Path(out) / "labels").glob(f"*/{glob.escape(exam)}_*.txt")):
        m = _NAME.match(p.name)
        if m and m.group(1) == exam:
            found[int(m.group(2))] = p
    return found


def parse_label_file(path: Path) -> list[tuple[int, list[float]]]:
    """[(class, numbers)] - 4 numbers for a box, an even number >= 6 for a polygon.

    Anything else is one InputError naming the file and line: not UTF-8, not numbers, NaN or
    infinite numbers, a wrong count."""
    from gpuconv.io.safe_yaml import read_user_text
    path = Path(path)
    text = read_user_text(path, "label file", MAX_LABEL_FILE_BYTES)
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            rows.append((int(parts[0]), [float(v) for v in parts[1:]]))
        except ValueError:
            raise InputError(f"line {n} is not a YOLO label line", path) from None
        nums = rows[-1][1]
        if not all(math.isfinite(v) for v in nums):
            raise InputError(f"line {n} holds a NaN or infinite number", path)
        if len(nums) != 4 and (len(nums) < 6 or len(nums) % 2):
            raise InputError(f"line {n} has {len(nums)} numbers: neither a box nor a polygon",
                             path)
    return rows


def _open_image(path: Path):
    """The PNG as an RGB grey image, or one InputError (corrupt, truncated, a bomb)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.convert("L").convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image ({shown(exc, 120)})", path) from None


def _coord(x: float, size: int, scale: int) -> int:
    """Pixel coordinate of a normalised value, clamped just outside the canvas (a value far
    outside [0, 1] must not reach the drawing code as a huge integer)."""
    return round(min(max(x, -0.01), 1.01) * size * scale)


def render_preview(out, exam: str, slice_number: int | None = None, dest=None,
                   scale: int | None = None) -> Path:
    """Write the preview PNG and return its path (default OUT/preview/{exam}_{n}.png).

    ``slice_number`` is the n of ``{exam}_{n}``; by default the slice with the most labels."""
    from PIL import Image, ImageDraw
    out = Path(out)
    files = find_label_files(out, exam)
    if slice_number is None:
        if not files:
            raise InputError(f"no label files for exam '{exam}' under {out / 'labels'}")
        counts = {n: len(parse_label_file(p)) for n, p in files.items()}
        slice_number = max(sorted(counts), key=lambda n: counts[n])
    label_path = files.get(slice_number)
    rows = parse_label_file(label_path) if label_path else []
    images = sorted((out / "images").glob(f"*/{glob.escape(exam)}_{slice_number}.png"))
    if images:
        # grey background (luminance of a 3-window RGB image) so the class colours stand out
        base = _open_image(images[0])
    elif rows or label_path:
        base = None
    else:
        raise InputError(f"exam '{exam}' has neither a label file nor an image for slice "
                         f"{slice_number} under {out}")
    if base is None:
        size = _size_from_dataset(out, exam, slice_number)
        base = Image.new("RGB", size, (0, 0, 0))
    W, H = base.size
    if scale is None:
        scale = max(1, min(8, 1024 // max(W, H)))
    if not isinstance(scale, int) or isinstance(scale, bool) or not 1 <= scale <= MAX_SCALE:
        raise InputError(f"--scale must be a whole number from 1 to {MAX_SCALE}, got {scale}")
    if W * H * scale * scale > MAX_PREVIEW_PIXELS:
        raise InputError(f"--scale {scale} makes a {W * scale} x {H * scale} image, above the "
                         f"{MAX_PREVIEW_PIXELS} pixel limit; give a smaller --scale")
    dest = Path(dest) if dest else out / "preview" / f"{exam}_{slice_number}.png"
    if dest.is_dir():
        raise InputError("--output is a folder; give a file name ending in .png", dest)
    img = base.resize((W * scale, H * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for cls, nums in rows:
        color = PALETTE[cls % len(PALETTE)]
        if len(nums) == 4:
            cx, cy, w, h = nums
            x0 = _coord(cx - w / 2, W, scale)
            y0 = _coord(cy - h / 2, H, scale)
            x1 = _coord(cx + w / 2, W, scale) - 1
            y1 = _coord(cy + h / 2, H, scale) - 1
            draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=color)
        else:
            _draw_mask_outline(draw, _polygon_mask(nums, W, H), scale, color)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        img.save(dest)
    except (OSError, ValueError) as exc:  # a file in the way, unwritable, unknown extension
        raise InputError(f"cannot write the preview ({shown(exc, 120)})", dest) from None
    return dest


def _size_from_dataset(out: Path, exam: str, slice_number: int) -> tuple[int, int]:
    """Canvas size for a labels-only dataset: any image of the exam, else 512 x 512."""
    from PIL import Image
    any_image = sorted((out / "images").glob(f"*/{glob.escape(exam)}_*.png"))
    if any_image:
        try:
            with Image.open(any_image[0]) as im:
                return im.size
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise InputError(f"cannot read image ({shown(exc, 120)})", any_image[0]) from None
    return (512, 512)


def _polygon_mask(nums, W: int, H: int):
    """The (H, W) pixels Ultralytics fills for one YOLO-seg polygon."""
    import numpy as np

    from gpuconv.analysis.assemble import fill_polygon, polygon_points
    mask = np.zeros((H, W), np.uint8)
    fill_polygon(mask, polygon_points(np.asarray(nums, np.float64), W, H))
    return mask.astype(bool)


def _draw_mask_outline(draw, mask, scale: int, color) -> None:
    """The border between ``mask`` pixels and the others, on the ``scale``-times image."""
    import numpy as np
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        edge = inner & ~padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx]
        for y, x in zip(*np.nonzero(edge)):
            x0, y0 = int(x) * scale, int(y) * scale
            x1, y1 = x0 + scale - 1, y0 + scale - 1
            if dy == -1:
                draw.line([(x0, y0), (x1, y0)], fill=color)
            elif dy == 1:
                draw.line([(x0, y1), (x1, y1)], fill=color)
            elif dx == -1:
                draw.line([(x0, y0), (x0, y1)], fill=color)
            else:
                draw.line([(x1, y0), (x1, y1)], fill=color)
