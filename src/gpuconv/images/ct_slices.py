"""The per-exam image step of ``convert --images``: read the exam's CT, check it is the label
grid, window it (GPU when the GPU backend runs), pick slices and write the PNGs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpuconv.dataset.grid import check_same_grid, read_ct
from gpuconv.io.nrrd_read import VolumeHeader
from gpuconv.images.windowing import Window, window_volume
from gpuconv.writers.images import ImageDirs, select_slices


@dataclass
class ImageOptions:
    windows: list[Window]
    background_fraction: float | None = None   # None: every slice gets an image
    seed: int = 0
    use_gpu: bool = False
    workers: int = 2


def write_exam_images(dirs: ImageDirs, exam: str, split: str, ct_path: Path,
                      label_header: VolumeHeader, labelled_slices,
                      opts: ImageOptions) -> list[Path]:
    """Write the exam's PNGs; returns their paths.  Raises InputError on a grid mismatch."""
    ct_hdr, ct = read_ct(ct_path)
    check_same_grid(label_header, ct_hdr, "CT grid")
    slices = select_slices(labelled_slices, ct.shape[2], opts.background_fraction, opts.seed,
                           exam)
    # window only the slices that are written (the last axis of (I, J, K) is the slice)
    windowed = window_volume(ct[:, :, slices], opts.windows, use_gpu=opts.use_gpu)
    return dirs.write_exam(exam, split, windowed, slices, workers=opts.workers)
