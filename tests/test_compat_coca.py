"""``--compat coca`` against an independent re-expression of the published COCA script
(nrrd_to_yolo.py of datadoc1/COCA_NonGated_Segmentations): per slice, np.unique values,
scipy.ndimage.label per value, np.argwhere min/max per instance - run in its own folder layout
and compared file by file, byte by byte."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nrrd
import numpy as np
import pytest
from scipy import ndimage

from conftest import write_seg
from gpuconv.writers.compat_coca import convert_coca, coca_exam_id
from gpuconv.errors import InputError


def coca_reference(root: Path) -> None:
    """The published algorithm, written out again here (run with cwd = root)."""
    split_dict = {}
    with open(root / "train_test_split.csv") as f:
        for row in csv.DictReader(f):
            split_dict[int(row["exam"])] = row["split"]
    for s in ("train", "val"):
        os.makedirs(root / "yolo" / f"{s}_labels", exist_ok=True)
    for filename in os.listdir(root / "nrrd"):
        if not filename.endswith(".nrrd"):
            continue
        try:
            exam = int(filename.split("_")[-1].split(".")[0])
        except ValueError:
            continue
        split = split_dict.get(exam)
        if not split:
            continue
        outdir = root / "yolo" / f"{'val' if split == 'test' else split}_labels"
        data, header = nrrd.read(str(root / "nrrd" / filename))
        segments = {}
        for key, value in header.items():
            if key.startswith("Segment") and key.endswith("_LabelValue"):
                idx = key.split("_")[0][7:]
                name = header.get(f"Segment{idx}_Name")
                if name:
                    segments[int(value)] = name
        for z in range(data.shape[2]):
            sl = data[:, :, z]
            with open(outdir / f"{exam}_{z + 1}.txt", "w") as fo:
                for label in np.unique(sl):
                    if label == 0 or label not in segments:
                        continue
                    lab, n = ndimage.label(sl == label)
                    for i in range(1, n + 1):
                        coords = np.argwhere(lab == i)
                        y0, x0 = coords.min(axis=0)
                        y1, x1 = coords.max(axis=0)
                        w, h = x1 - x0, y1 - y0
                        fo.write(f"0 {(x0 + w / 2) / sl.shape[1]:.6f} "
                                 f"{(y0 + h / 2) / sl.shape[0]:.6f} {w / sl.shape[1]:.6f} "
                                 f"{h / sl.shape[0]:.6f}\n")


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "yolo").rglob("*"))
            if p.is_file()}


def make_corpus(root: Path) -> list[Path]:
    rng = np.random.default_rng(3)
    (root / "nrrd").mkdir(parents=True)
    files = []
    shapes = {"COCA_0007.seg.nrrd": (13, 9, 5), "COCA_12.seg.nrrd": (8, 8, 3),
              "COCA_3.seg.nrrd": (6, 11, 4)}
    for name, shape in shapes.items():
        vol = ((rng.random(shape) < 0.3) * rng.integers(1, 5, shape)).astype(np.uint8)
        vol[:, :, 1] = 0  # an empty slice: still gets an (empty) file
        vol[0, 0, 0] = 1  # a one-pixel lesion at the corner (width 0 in this convention)
        # value 4 is undeclared and value 3 has an empty name: the script ignores both
        segs = [("LAD", 0, 1), ("RCA", 0, 2), ("", 0, 3)]
        files.append(write_seg(root / "nrrd" / name, vol, segs))
    (root / "nrrd" / "notes.txt").write_text("not a volume")
    with open(root / "train_test_split.csv", "w") as f:
        f.write("exam,split\n7,train\n12,test\n3,val\n")
    return files


def test_compat_matches_published_algorithm_byte_for_byte(tmp_path):
    ref_root, our_root = tmp_path / "ref", tmp_path / "ours"
    files = make_corpus(ref_root)
    coca_reference(ref_root)
    s = convert_coca(files, our_root, split_csv=ref_root / "train_test_split.csv")
    assert s["failed"] == 0 and s["files"] == 3
    ref, ours = tree(ref_root), tree(our_root)
    assert sorted(ref) == sorted(ours)
    assert "yolo/train_labels/7_1.txt" in ours  # leading zeros dropped, as int() does
    assert len(ours) == 5 + 3 + 4             # a file for every slice, empty or not
    for name in ref:
        assert ours[name] == ref[name], name
    assert any(v == b"" for v in ours.values()) and any(v for v in ours.values())


def test_compat_conventions_on_a_hand_made_case(tmp_path):
    """The differences from the default mode, worked out by hand: x from axis 1, y from axis 0,
    width = max - min, class 0."""
    vol = np.zeros((10, 4, 1), np.uint8)  # axis 0 = 10, axis 1 = 4
    vol[1:5, 2, 0] = 1                    # axis 0: 1..4, axis 1: 2
    f = write_seg(tmp_path / "x_5.seg.nrrd", vol, [("b", 0, 1)])
    (tmp_path / "s.csv").write_text("exam,split\n5,train\n")
    convert_coca([f], tmp_path / "out", split_csv=tmp_path / "s.csv")
    text = (tmp_path / "out/yolo/train_labels/5_1.txt").read_text()
    # x: axis 1, min=max=2, w=0 -> cx = 2/4; y: axis 0, 1..4, h=3 -> cy = (1+1.5)/10
    assert text == "0 0.500000 0.250000 0.000000 0.300000\n"


def test_compat_errors(tmp_path):
    vol = np.zeros((3, 3, 2), np.uint8)
    a = write_seg(tmp_path / "a_01.seg.nrrd", vol, [("x", 0, 1)])
    b = write_seg(tmp_path / "b_1.seg.nrrd", vol, [("x", 0, 1)])
    with pytest.raises(InputError, match="duplicate COCA exam id 1"):
        convert_coca([a, b], tmp_path / "out")
    layered = write_seg(tmp_path / "l_2.seg.nrrd", np.zeros((2, 3, 3, 2), np.uint8),
                        [("x", 0, 1), ("y", 1, 1)])
    noid = write_seg(tmp_path / "plain.seg.nrrd", vol, [("x", 0, 1)])
    errors = []
    s = convert_coca([layered, noid], tmp_path / "out2", on_error=lambda p, r: errors.append(r))
    assert s["failed"] == 2
    assert any("3D label maps only" in r for r in errors)
    assert any("no integer exam id" in r for r in errors)
    assert coca_exam_id("COCA_0042.seg.nrrd") == 42


def test_compat_through_convert_and_cli(tmp_path):
    from click.testing import CliRunner
    import gpuconv
    from gpuconv.cli.app import app
    ref_root = tmp_path / "ref"
    make_corpus(ref_root)
    coca_reference(ref_root)
    r = CliRunner().invoke(app, ["convert", str(ref_root / "nrrd"), "--split",
                                 str(ref_root / "train_test_split.csv"), "--compat", "coca",
                                 "-o", str(tmp_path / "cli"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert tree(tmp_path / "cli") == tree(ref_root)
    with pytest.raises(InputError, match="cannot be combined"):
        gpuconv.convert([str(ref_root / "nrrd")], tmp_path / "x", compat="coca",
                        fmt="polygons")
    with pytest.raises(InputError, match="compat: unknown compat"):
        gpuconv.convert([str(ref_root / "nrrd")], tmp_path / "x", compat="yolo5")
