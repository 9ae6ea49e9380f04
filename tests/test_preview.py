"""``gpuconv preview``: labels drawn on the outer border of the pixels they cover."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner

from gpuconv.cli.app import app
from gpuconv.errors import InputError
from gpuconv.images.preview import PALETTE, render_preview


def make_dataset(root, W=8, H=5):
    (root / "images/train").mkdir(parents=True)
    (root / "labels/train").mkdir(parents=True)
    img = np.full((H, W), 40, np.uint8)
    img[1, 2] = 200                       # a one-pixel lesion at i=2, j=1
    Image.fromarray(img).save(root / "images/train/e_2.png")
    Image.fromarray(img).save(root / "images/train/e_1.png")
    # the contract's box of that pixel: cx=(2+2+1)/2/8, cy=(1+1+1)/2/5, w=1/8, h=1/5
    (root / "labels/train/e_2.txt").write_text(
        "0 0.312500 0.300000 0.125000 0.200000\n"
        "1 0.750000 0.600000 0.250000 0.400000\n")
    (root / "labels/train/e_1.txt").write_text("0 0.312500 0.300000 0.125000 0.200000\n")
    return img


def test_box_outline_sits_on_the_lesion_border(tmp_path):
    make_dataset(tmp_path)
    dest = render_preview(tmp_path, "e", scale=4)          # default: slice with most labels
    assert dest == tmp_path / "preview/e_2.png"
    got = np.asarray(Image.open(dest).convert("RGB"))
    assert got.shape == (20, 32, 3)
    red = np.all(got == PALETTE[0], axis=-1)
    # pixel (i=2, j=1) is the 4x4 block rows 4..7, cols 8..11; its outline is that block's ring
    ring = np.zeros_like(red)
    ring[4:8, 8:12] = True
    ring[5:7, 9:11] = False
    assert np.array_equal(red, ring)
    assert np.all(got[5:7, 9:11] == 200)                    # the lesion itself is not covered
    green = np.all(got == PALETTE[1], axis=-1)
    rows, cols = np.nonzero(green)                          # box i 5..6, j 2..3
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (8, 15, 20, 27)


def test_polygon_and_cli(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "labels/train/e_1.txt").write_text(
        "0 0.250000 0.200000 0.375000 0.200000 0.375000 0.400000 0.250000 0.400000\n")
    r = CliRunner().invoke(app, ["preview", str(tmp_path), "--exam", "e", "--slice", "1",
                                 "--scale", "4", "-o", str(tmp_path / "p.png")])
    assert r.exit_code == 0, r.output
    got = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    red = np.all(got == PALETTE[0], axis=-1)
    rows, cols = np.nonzero(red)
    # vertices (2,1) (3,1) (3,2) (2,2) after x8, x5 and the int32 cast: Ultralytics fills the
    # pixels x 2..3, y 1..2 (boundary pixels included); their outline at x4 spans 8..15, 4..11
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 11, 8, 15)
    assert not red[6:10, 10:14].any()          # an outline, not a filled block


def test_missing_exam_is_a_clear_error(tmp_path):
    make_dataset(tmp_path)
    with pytest.raises(InputError, match="no label files for exam 'zz'"):
        render_preview(tmp_path, "zz")
    r = CliRunner().invoke(app, ["preview", str(tmp_path), "--exam", "zz"])
    assert r.exit_code == 1
