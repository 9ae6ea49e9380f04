"""Table 1 on a hand-made corpus whose lesions (and so every expected number) the test places;
expected values come from the placement list with Python's ``statistics``, not from gpuconv."""

from __future__ import annotations

import csv
import json
import statistics

import nrrd
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_seg
from gpuconv.cli.app import app

NAMES = ["LM", "LAD", "RCA", "aorta", "other"]
SPACING = (0.5, 0.5, 2.0)          # 0.5 mm³ per voxel
VOXEL_MM3 = 0.5
SHAPE = (20, 16, 10)

# exam -> [(class name, i, j, k, size_i, size_j, size_k)]: boxes at least 2 voxels apart
LESIONS = {
    "0001": [("LM", 0, 0, 0, 1, 1, 1), ("LM", 5, 5, 5, 2, 2, 2), ("LAD", 12, 2, 2, 3, 3, 3)],
    "0002": [("LM", 19, 15, 9, 1, 1, 1), ("RCA", 0, 0, 0, 1, 1, 2), ("RCA", 4, 0, 0, 3, 1, 1),
             ("LM", 10, 10, 3, 2, 2, 1)],
    "0003": [],
    "0004": [("LAD", 2, 2, 2, 5, 4, 3), ("RCA", 15, 0, 9, 1, 1, 1),
             ("aorta", 15, 12, 0, 2, 1, 1)],
}
# plus, in exam 0002, an RCA pair touching only at a corner: one instance at 26, two at 6
CORNER_PAIR = ("0002", "RCA", (8, 8, 5), (9, 9, 6))


def _voxels(lesion):
    return lesion[4] * lesion[5] * lesion[6]


def expected_instances(connectivity):
    """{exam: [(class, voxels)]} from the placement list."""
    out = {e: [(c, _voxels(les)) for les in ls for c in [les[0]]] for e, ls in LESIONS.items()}
    exam, cls, _, _ = CORNER_PAIR
    out[exam] += [(cls, 2)] if connectivity == 26 else [(cls, 1), (cls, 1)]
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(5)
    for exam, lesions in LESIONS.items():
        values = {n: int(v) for n, v in zip(NAMES, rng.permutation(len(NAMES)) + 1)}
        vol = np.zeros(SHAPE, np.uint8)
        for cls, i, j, k, a, b, c in lesions:
            assert not vol[i:i + a, j:j + b, k:k + c].any()
            vol[i:i + a, j:j + b, k:k + c] = values[cls]
        if exam == CORNER_PAIR[0]:
            for ijk in CORNER_PAIR[2:]:
                vol[ijk] = values[CORNER_PAIR[1]]
        order = [NAMES[n] for n in rng.permutation(len(NAMES))]   # segment order differs too
        write_seg(root / f"COCA_{exam}.seg.nrrd", vol, [(n, 0, values[n]) for n in order],
                  spacing=SPACING)
    with open(root / "split.csv", "w") as fh:
        fh.write("exam,split\n0001,train\n0002,train\n0003,val\n0004,train\n")
    return root


def expected_table(connectivity, patient_of=None):
    inst = expected_instances(connectivity)
    patient_of = patient_of or {e: e for e in inst}
    all_patients = set(patient_of[e] for e in inst)
    n_all = sum(len(v) for v in inst.values())
    rows = {}
    for name in NAMES + ["all"]:
        vols = [v * VOXEL_MM3 for e in sorted(inst) for c, v in inst[e]
                if name in (c, "all")]
        scans = {e for e in inst for c, _ in inst[e] if name in (c, "all")}
        pats = {patient_of[e] for e in scans}
        rows[name] = {
            "instances": len(vols), "patients": len(pats), "scans": len(scans),
            "mean_volume_mm3": statistics.mean(vols) if vols else None,
            "sd_volume_mm3": statistics.stdev(vols) if len(vols) > 1 else None,
            "instances_per_scan": len(vols) / len(scans) if scans else None,
            "instances_per_scan_all": len(vols) / len(inst),
            "share_instances_pct": 100 * len(vols) / n_all,
            "share_patients_pct": 100 * len(pats) / len(all_patients),
        }
    return rows


def read_stats_csv(path):
    return {r["class_name"]: r for r in csv.DictReader(open(path))}


def assert_matches(got, expected):
    for name, exp in expected.items():
        row = got[name]
        for key, value in exp.items():
            if value is None:
                assert row[key] == "", (name, key)
            elif isinstance(value, int):
                assert int(row[key]) == value, (name, key)
            else:
                assert float(row[key]) == pytest.approx(value, abs=1e-4), (name, key)


def run_stats(*args):
    result = CliRunner().invoke(app, ["stats", *map(str, args), "--backend", "cpu"])
    return result


def test_table1_columns_on_a_hand_made_corpus(corpus, tmp_path):
    out = tmp_path / "stats"
    r = run_stats(corpus, "--out", out, "--split", corpus / "split.csv")
    assert r.exit_code == 0, r.output
    got = read_stats_csv(out / "stats.csv")
    first = nrrd.read_header(str(corpus / "COCA_0001.seg.nrrd"))
    order = [first[f"Segment{n}_Name"] for n in range(len(NAMES))]
    assert list(got) == order + ["all"]     # class order: segments of the first exam
    exp = expected_table(26)
    assert_matches(got, exp)
    # spot values written out by hand, so the test itself cannot be wrong in the same way
    assert got["LM"]["instances"] == "4" and got["LM"]["patients"] == "2"
    assert float(got["LM"]["mean_volume_mm3"]) == pytest.approx((1 + 8 + 1 + 4) / 4 * 0.5)
    assert got["aorta"]["sd_volume_mm3"] == ""                    # one instance: no SD
    assert got["other"]["instances"] == "0" and got["other"]["mean_volume_mm3"] == ""
    assert got["all"]["patients"] == "3" and got["all"]["share_patients_pct"] == "75.0000"
    # per-instance list: one row per placed lesion, exact voxel counts, split from the CSV
    rows = list(csv.DictReader(open(out / "instances.csv")))
    inst = expected_instances(26)
    assert sorted((r["exam"], r["class_name"], int(r["voxels"])) for r in rows) == sorted(
        (e, c, v) for e, ls in inst.items() for c, v in ls)
    assert {r["split"] for r in rows if r["exam"] == "0004"} == {"train"}
    one = [r for r in rows if r["exam"] == "0002" and r["class_name"] == "LM"
           and r["voxels"] == "1"][0]
    assert (one["i0"], one["j1"], one["k1"]) == ("19", "15", "9")   # far corner voxel
    # markdown carries the same numbers
    md = (out / "stats.md").read_text()
    assert "| LM | 4 | 2 | 1.8 | 1.7 | 2.00 | 36.4 | 50.0 |" in md
    assert "| other | 0 | 0 | – | – | – | 0.0 | 0.0 |" in md


def test_png_is_a_real_picture(corpus, tmp_path):
    from PIL import Image
    out = tmp_path / "stats"
    assert run_stats(corpus, "--out", out).exit_code == 0
    with Image.open(out / "stats.png") as im:
        assert im.format == "PNG" and im.width >= 800 and im.height >= 400
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 20          # axes, text, boxes and points, not a blank canvas


def test_connectivity6_and_patients_csv(corpus, tmp_path):
    patients = tmp_path / "patients.csv"
    patients.write_text("exam,patient\n0001,P1\n0002,P1\n0003,P2\n0004,P3\n")
    out = tmp_path / "stats"
    r = run_stats(corpus, "--out", out, "--connectivity3d", "6", "--patients", patients,
                  "--no-plot", "--json")
    assert r.exit_code == 0, r.output
    patient_of = {"0001": "P1", "0002": "P1", "0003": "P2", "0004": "P3"}
    exp = expected_table(6, patient_of)
    assert_matches(read_stats_csv(out / "stats.csv"), exp)
    assert exp["RCA"]["instances"] == 5 and exp["LM"]["patients"] == 1   # what is being tested
    doc = json.loads(r.stdout)
    assert doc["scans"] == 4 and doc["patients"] == 3
    other = [c for c in doc["classes"] if c["class_name"] == "other"][0]
    assert other["instances"] == 0 and other["mean_volume_mm3"] is None
    assert not (out / "stats.png").exists()


def test_failed_file_is_reported_and_left_out(corpus, tmp_path):
    import shutil
    src = tmp_path / "in"
    shutil.copytree(corpus, src)
    vol = np.zeros(SHAPE, np.uint8)
    vol[3, 3, 3] = 9                                  # no segment declares value 9
    write_seg(src / "COCA_0005.seg.nrrd", vol, [("LM", 0, 1)], spacing=SPACING)
    out = tmp_path / "stats"
    r = run_stats(src, "--out", out, "--no-plot")
    assert r.exit_code == 1
    assert "COCA_0005.seg.nrrd" in r.output and "value 9" in r.output
    got = read_stats_csv(out / "stats.csv")
    assert_matches(got, expected_table(26))           # four scans, as if 0005 were absent
