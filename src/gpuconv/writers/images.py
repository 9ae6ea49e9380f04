"""CT slices as 8-bit PNGs: images/{split}/{exam}_{k+1}.png beside labels/{split}/.

Orientation (the same contract as the labels): PNG column = first axis i (x), PNG row = second
axis j (y), one image per slice k; the pixel array is ``windowed[:, :, k].T`` of the (I, J, K)
volume, i.e. the (K, J, I) view.  So a label's box or polygon, in pixel-corner coordinates,
covers exactly its lesion's pixels in the PNG.

PNG encoding runs in a thread pool: Pillow's zlib encoder releases the GIL.
"""

from __future__ import annotations

import io
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gpuconv.dataset.exams import SPLITS
from gpuconv.writers.atomic import write_bytes_atomic
from gpuconv.writers.yolo import index_exam_files

_IMAGE_NAME = re.compile(r"^(.+)_(\d+)\.png$")
# zlib level for PNGs.  Measured here on CTChest4 resampled to 512 x 512 (mediastinum window,
# one core): level 1 16.7 ms and 46.9 KiB per slice, 3 15.9 ms / 45.2 KiB, 6 (Pillow's default)
# 37.8 ms / 41.1 KiB, 9 93 ms / 40.2 KiB.  3 is as fast as 1 and 10% bigger than 6.
PNG_COMPRESS_LEVEL = 3


def image_name(exam: str, k: int) -> str:
    """Slice k (0-based) -> its PNG name; slices are numbered from 1, as label files are."""
    return f"{exam}_{k + 1}.png"


def select_slices(labelled, n_slices: int, background_fraction: float | None, seed: int,
                  exam: str) -> list[int]:
    """Which slices get an image: all of them (``background_fraction`` None), else every slice
    with labels plus round(fraction x unlabelled slices) unlabelled ones drawn with a generator
    seeded by (seed, exam), so the choice does not depend on which exams run or in what order."""
    if background_fraction is None:
        return list(range(n_slices))
    if not 0.0 <= background_fraction <= 1.0:
        raise ValueError("background fraction must be between 0 and 1")
    labelled = sorted({int(k) for k in labelled if 0 <= int(k) < n_slices})
    rest = np.setdiff1d(np.arange(n_slices), np.asarray(labelled, np.int64))
    n_bg = int(round(len(rest) * background_fraction))
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(exam.encode("utf-8"))])
    chosen = rng.choice(rest, size=n_bg, replace=False) if n_bg else np.zeros(0, np.int64)
    return sorted(labelled + [int(k) for k in chosen])


def slice_pixels(windowed: np.ndarray, k: int) -> np.ndarray:
    """(H=J, W=I) or (J, I, 3) uint8 pixels of slice k of an (I, J, K[, 3]) windowed volume."""
    sl = windowed[:, :, k]
    return np.ascontiguousarray(sl.transpose(1, 0, 2) if sl.ndim == 3 else sl.T)


def encode_png(pixels: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    mode = "RGB" if pixels.ndim == 3 else "L"
    Image.fromarray(pixels, mode=mode).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


class ImageDirs:
    """images/{train,val}/ under OUT, with an index of PNGs already there (for re-runs)."""

    def __init__(self, out: Path):
        try:
            import PIL  # noqa: F401
        except ImportError:
            raise RuntimeError("writing PNG images needs Pillow: "
                               "pip install 'gpuconv[images]'") from None
        self.out = Path(out)
        self.existing = index_exam_files([self.dir(split) for split in SPLITS], _IMAGE_NAME)

    def dir(self, split: str) -> Path:
        return self.out / "images" / split

    def write_exam(self, exam: str, split: str, windowed: np.ndarray, slices,
                   pool: ThreadPoolExecutor | None = None, workers: int = 2) -> list[Path]:
        """Write one exam's PNGs and remove its PNGs left from an earlier run.  ``windowed`` is an
        (I, J, n[, 3]) uint8 volume holding the slices to write in order: ``windowed[:, :, m]``
        is slice ``slices[m]``.  On failure the PNGs written here are removed."""
        d = self.dir(split)
        slices = list(slices)
        paths = [d / image_name(exam, k) for k in slices]

        def one(item):
            m, p = item
            write_bytes_atomic(p, encode_png(slice_pixels(windowed, m)))
            return p

        own = pool is None
        if own:
            pool = ThreadPoolExecutor(max(1, workers))
        try:
            futures = [pool.submit(one, item) for item in enumerate(paths)]
            errors = []
            for f in futures:
                try:
                    f.result()
                except BaseException as exc:  # wait for all, then clean up
                    errors.append(exc)
            if errors:
                for p in paths:
                    p.unlink(missing_ok=True)
                raise errors[0]
        finally:
            if own:
                pool.shutdown()
        keep = set(paths)
        for p in self.existing.pop(exam, []):
            if p not in keep:
                p.unlink(missing_ok=True)
        return paths
