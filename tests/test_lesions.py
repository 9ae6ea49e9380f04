"""Lesion-wise detection on hand-placed lesions: found, missed, split, merged, false positive."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from gpuconv.analysis.lesions import match_lesions, summarize


def cube(vol, i, j, k, n=2):
    vol[i:i + n, j:j + n, k:k + n] = True


def scene():
    """Reference A and prediction B, 40 x 40 x 20, lesions placed by hand:
    - L1 found: A cube at (2,2,2), B cube overlapping it by one voxel layer;
    - L2 missed: A cube at (10,2,2), nothing in B near it;
    - L3 split: A bar (20..27, 2, 2), B has two separate pieces on it;
    - L4, L5 merged: two A cubes bridged by one B bar;
    - FP: a B cube at (30,30,15) far from any A lesion;
    - corner touch: A voxel (35,5,5), B voxel (36,6,6): no shared voxel -> missed + FP."""
    a = np.zeros((40, 40, 20), bool)
    b = np.zeros_like(a)
    cube(a, 2, 2, 2)
    cube(b, 3, 3, 3)                     # shares voxel (3,3,3) with L1
    cube(a, 10, 2, 2)                    # L2
    a[20:28, 2, 2] = True                # L3
    b[20:22, 2, 2] = True
    b[25:28, 2, 2] = True
    cube(a, 2, 20, 2)                    # L4
    cube(a, 6, 20, 2)                    # L5 (gap at i = 4, 5)
    b[2:8, 20, 2] = True                 # one bar across both
    cube(b, 30, 30, 15)                  # FP
    a[35, 5, 5] = True
    b[36, 6, 6] = True
    return a, b


def test_hand_placed_lesions_counts():
    a, b = scene()
    r = match_lesions(a, b)
    # A: L1, L2, L3, L4, L5, corner = 6; B: on L1, two on L3, bridge, FP, corner = 6
    assert r["lesions_ref"] == 6 and r["lesions_pred"] == 6
    assert r["lesions_detected"] == 4            # L1, L3, L4, L5
    assert r["lesions_missed"] == 2              # L2, corner voxel
    assert r["lesions_tp_pred"] == 4             # on L1, 2 pieces of L3, the bridge
    assert r["lesions_fp"] == 2                  # FP cube, corner voxel
    assert r["lesions_split"] == 1 and r["lesions_merged"] == 1
    assert r["sensitivity"] == pytest.approx(4 / 6)
    assert r["precision"] == pytest.approx(4 / 6)
    assert r["f1"] == pytest.approx(4 / 6)


def test_connectivity_changes_what_a_lesion_is():
    a = np.zeros((6, 6, 6), bool)
    a[1, 1, 1] = a[2, 2, 2] = True               # corner neighbours: one lesion at 26
    b = np.zeros_like(a)
    b[1, 1, 1] = True
    r26, r6 = match_lesions(a, b, 26), match_lesions(a, b, 6)
    assert (r26["lesions_ref"], r26["lesions_detected"]) == (1, 1)
    assert (r6["lesions_ref"], r6["lesions_detected"], r6["lesions_missed"]) == (2, 1, 1)
    with pytest.raises(ValueError):
        match_lesions(a, b, 8)


def test_empty_cases_and_rates():
    z = np.zeros((5, 5, 5), bool)
    one = z.copy()
    one[2, 2, 2] = True
    both = match_lesions(z, z)
    assert both["lesions_ref"] == 0 and both["sensitivity"] is None and both["f1"] is None
    fp_only = match_lesions(z, one)
    assert fp_only["lesions_fp"] == 1 and fp_only["precision"] == 0.0
    assert fp_only["sensitivity"] is None and fp_only["f1"] == 0.0
    miss = match_lesions(one, z)
    assert miss["lesions_missed"] == 1 and miss["sensitivity"] == 0.0
    assert miss["precision"] is None and miss["f1"] == 0.0
    s = summarize([fp_only, miss, match_lesions(one, one)])
    assert (s["lesions_ref"], s["lesions_detected"], s["lesions_fp"]) == (2, 1, 1)
    assert s["sensitivity"] == 0.5 and s["precision"] == 0.5 and s["fp_per_scan"] == 1 / 3


def test_cli_agree_lesions_table_csv_json(tmp_path):
    from click.testing import CliRunner

    from gpuconv.cli.app import app
    from gpuconv.io.nrrd_write import write_nrrd
    a, b = scene()
    d = np.diag([0.35, 0.35, 0.625])
    pa = write_nrrd(tmp_path / "ref_1.nrrd", a.astype(np.uint8), directions=d)
    pb = write_nrrd(tmp_path / "pred_1.nrrd", b.astype(np.uint8), directions=d)
    out_csv = tmp_path / "agree.csv"
    res = CliRunner().invoke(app, ["agree", str(pa), str(pb), "--lesions", "--backend", "cpu",
                                   "--json", "--csv", str(out_csv)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    row = doc["pairs"][0]["classes"][0]
    assert (row["lesions_ref"], row["lesions_detected"], row["lesions_fp"]) == (6, 4, 2)
    assert "hd95_asoca_challenge" in row and "hd95_asoca_mm" in row
    assert doc["units"] == {"hd95_asoca_challenge": "voxel", "hd95_asoca_mm": "mm"}
    assert "any of its voxels" in doc["definitions"]["lesions"]
    s = doc["summary"][0]
    assert s["fp_per_scan"] == 2.0 and s["sensitivity"] == pytest.approx(4 / 6)
    rows = list(csv.DictReader(out_csv.open()))
    assert rows[0]["lesions_split"] == "1" and rows[0]["lesions_merged"] == "1"
    res = CliRunner().invoke(app, ["agree", str(pa), str(pb), "--lesions", "--backend", "cpu"])
    assert res.exit_code == 0 and "lesions: 3D connected" in res.output
    assert "hd95 asoca_challenge (voxel)" in res.output


@pytest.mark.gpu
def test_gpu_labelling_matches_cpu():
    pytest.importorskip("cupy")
    from gpuconv.analysis.agreement import gpu_unavailable_reason
    if gpu_unavailable_reason():
        pytest.skip(gpu_unavailable_reason())
    import cupy
    a, b = scene()
    assert match_lesions(a, b, xp=cupy) == match_lesions(a, b)
