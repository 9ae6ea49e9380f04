"""Calcium scores on a hand-made phantom: every expected number below is worked out by hand
from the placed pixels (0.5 x 0.5 mm pixels = 0.25 mm², 1.5 mm slices: Agatston factor 0.5,
voxel 0.375 mm³), not from the code under test."""

from __future__ import annotations

import csv
import json

import nrrd
import numpy as np
import pytest

from conftest import write_seg
from gpuconv.analysis import calcium as ca

SPACING = (0.5, 0.5, 1.5)
D = np.diag(SPACING)


def phantom():
    """(CT int16 HU, LAD mask, RCA mask), 20 x 16 x 4.  Lesions are horizontal runs of pixels
    along i at row j of slice k, rows 3 apart (never 8-connected to each other)."""
    hu = np.zeros((20, 16, 4), np.int16)
    lad = np.zeros(hu.shape, bool)
    rca = np.zeros(hu.shape, bool)
    lad[:, :, 0:2] = True
    lad[0:5, :, 2] = True
    rca[:, :, 3] = True

    def run(k, j, values, i0=1):
        hu[i0:i0 + len(values), j, k] = values

    # slice 0
    run(0, 1, [130] * 4)                      # A: 4 px = 1.00 mm² (kept, >= 1), peak 130 -> w1
    run(0, 4, [500] * 3)                      # B: 3 px = 0.75 mm² < 1: dropped
    run(0, 7, [129] * 4)                      # C: 129 HU, below 130: no lesion
    run(0, 10, [130, 150, 199, 199, 130])     # D: 1.25 mm², peak 199 -> w1
    run(0, 13, [130, 130, 200, 130, 130])     # E: 1.25 mm², peak 200 -> w2
    # slice 1
    run(1, 1, [299, 130, 130, 130])           # F: peak 299 -> w2
    run(1, 4, [300, 130, 130, 130])           # G: peak 300 -> w3
    run(1, 7, [399, 399, 130, 130])           # H: peak 399 -> w3
    run(1, 10, [400, 130, 130, 130])          # I: peak 400 -> w4
    run(1, 13, [129, 250, 130, 130, 130, 129])  # J: only the 4 middle px >= 130: 1 mm², w2
    # slice 2: K runs i = 1..8 but the LAD mask ends at i = 4; L lies outside every mask
    run(2, 1, [450] * 8)                      # K: 4 px in the mask, w4
    run(2, 4, [130] * 4, i0=10)               # L: outside: nothing
    # slice 3: RCA
    run(3, 1, [1000] * 8)                     # M: 8 px = 2 mm², w4
    return hu, lad, rca


# hand sums: LAD raw = A 1.0 + D 1.25 + E 2.5 + F 2.0 + G 3.0 + H 3.0 + I 4.0 + J 2.0 + K 4.0
LAD_RAW = 22.75
LAD_VOXELS = 4 + 5 + 5 + 4 + 4 + 4 + 4 + 4 + 4          # 38
LAD_HU_SUM = 520 + 808 + 720 + 689 + 690 + 1058 + 790 + 640 + 1800   # 7715
RCA_RAW, RCA_VOXELS, RCA_HU_SUM = 8.0, 8, 8000


def test_density_weights_at_every_boundary():
    assert ca.density_weight([130, 199, 199.5, 199.999, 200, 299, 299.9, 300, 399, 400, 3000]
                             ).tolist() == [1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4]


def test_risk_categories():
    assert [ca.risk_category(s) for s in (0, 0.01, 1, 99.99, 100, 399.9, 400, 2000)] == [
        "0", "1-99", "1-99", "1-99", "100-399", "100-399", ">=400", ">=400"]


def test_phantom_scores_per_class():
    hu, lad, rca = phantom()
    s = ca.score_mask(hu, lad, D, calibration=0.8)
    assert s.lesions == 9
    assert s.agatston_raw == pytest.approx(LAD_RAW)
    assert s.agatston == pytest.approx(LAD_RAW * 1.5 / 3.0)          # 11.375
    assert s.volume_mm3 == pytest.approx(LAD_VOXELS * 0.375)         # 14.25
    assert s.mass_mg == pytest.approx(0.8 * LAD_HU_SUM * 0.375 / 1000)
    r = ca.score_mask(hu, rca, D)
    assert (r.agatston, r.volume_mm3, r.mass_mg) == pytest.approx((4.0, 3.0, 3.0))
    # nothing >= 130 or no mask: zeros
    assert ca.score_mask(hu, np.zeros_like(lad), D).agatston == 0.0
    assert ca.score_mask(np.full(hu.shape, 129, np.int16), lad, D).lesions == 0


def test_one_mm2_rule_and_connectivity():
    hu = np.zeros((10, 10, 1), np.int16)
    mask = np.ones(hu.shape, bool)
    hu[2, 2, 0] = hu[3, 3, 0] = hu[4, 4, 0] = hu[5, 5, 0] = 300   # a diagonal chain of 4 px
    d = np.diag([0.5, 0.5, 3.0])
    eight = ca.score_mask(hu, mask, d, connectivity=8)
    assert (eight.lesions, eight.agatston) == (1, pytest.approx(1.0 * 3))   # 1 mm², w3
    four = ca.score_mask(hu, mask, d, connectivity=4)
    assert (four.lesions, four.agatston) == (0, 0.0)   # four 0.25 mm² lesions, all dropped


def test_exam_and_stats_cli_with_ct(tmp_path):
    from click.testing import CliRunner

    from gpuconv.cli.app import app
    hu, lad, rca = phantom()
    labels = np.zeros(hu.shape, np.uint8)
    labels[lad] = 2
    labels[rca] = 1
    seg_dir, ct_dir = tmp_path / "seg", tmp_path / "ct"
    seg_dir.mkdir()
    ct_dir.mkdir()
    write_seg(seg_dir / "COCA_0001.seg.nrrd", labels, [("LAD", 0, 2), ("RCA", 0, 1)],
              spacing=SPACING)
    write_seg(seg_dir / "COCA_0002.seg.nrrd", labels, [("LAD", 0, 2), ("RCA", 0, 1)],
              spacing=SPACING)
    nrrd.write(str(ct_dir / "0001.nrrd"), hu, {"space": "left-posterior-superior",
                                                "space directions": D, "space origin": [0, 0, 0]})
    out = tmp_path / "stats"
    res = CliRunner().invoke(app, ["stats", str(seg_dir), "--out", str(out), "--ct",
                                   str(ct_dir), "--mass-calibration", "0.8", "--no-plot",
                                   "--backend", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    assert "exam '0002': no CT" in res.stderr
    doc = json.loads(res.stdout)
    lad_row = next(c for c in doc["classes"] if c["class_name"] == "LAD")
    assert lad_row["calcium"]["ct_scans"] == 1
    assert lad_row["calcium"]["agatston_mean"] == pytest.approx(11.375)
    assert doc["all"]["calcium"]["agatston_mean"] == pytest.approx(15.375)
    assert doc["all"]["calcium"]["risk_1_99"] == 1
    assert doc["calcium"]["without_ct"] == ["0002"]
    rows = list(csv.DictReader((out / "calcium.csv").open()))
    by = {r["class_name"]: r for r in rows}
    assert float(by["LAD"]["agatston"]) == pytest.approx(11.375)
    assert float(by["LAD"]["agatston_raw"]) == pytest.approx(22.75)
    assert float(by["LAD"]["volume_mm3"]) == pytest.approx(14.25)
    assert float(by["LAD"]["mass_mg"]) == pytest.approx(0.8 * 7715 * 0.375 / 1000, abs=1e-4)
    assert by["LAD"]["lesions_2d"] == "9" and by["RCA"]["risk_category"] == "1-99"
    assert float(by["total"]["agatston"]) == pytest.approx(15.375)
    assert float(by["total"]["normalisation"]) == pytest.approx(0.5)
    table = list(csv.DictReader((out / "stats.csv").open()))
    assert float(next(r for r in table if r["class_name"] == "RCA")["agatston_mean"]) == 4.0
    assert "Agatston mean" in (out / "stats.md").read_text()
