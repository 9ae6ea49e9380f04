"""The geometric contract on hand-made volumes whose boxes are worked out by hand."""

from pathlib import Path

import numpy as np
import pytest

import gpuconv
from conftest import write_seg


def run(tmp_path, files, **kw):
    kw.setdefault("val_fraction", 0.0)
    return gpuconv.convert([str(f) for f in files], tmp_path / "out", backend="cpu",
                           progress=False, **kw)


def test_one_pixel_lesion_gets_a_one_pixel_box(tmp_path):
    vol = np.zeros((7, 5, 3), np.uint8)  # I=7 (x), J=5 (y), K=3
    vol[2, 3, 1] = 1                     # i=2, j=3, slice k=1 -> file _2.txt
    f = write_seg(tmp_path / "case_1.seg.nrrd", vol, [("lesion", 0, 1)])
    s = run(tmp_path, [f])
    assert s["boxes"] == 1
    text = (tmp_path / "out/labels/train/1_2.txt").read_text()
    # cx = (2+2+1)/2/7, cy = (3+3+1)/2/5, w = 1/7, h = 1/5
    assert text == "0 0.357143 0.700000 0.142857 0.200000\n"


def test_non_square_slice_exposes_an_xy_swap(tmp_path):
    vol = np.zeros((10, 4, 1), np.uint8)  # W = 10 along i, H = 4 along j
    vol[1:5, 2, 0] = 1                    # a bar 4 px wide along x, 1 px tall, at y = 2
    f = write_seg(tmp_path / "bar_7.seg.nrrd", vol, [("lesion", 0, 1)])
    run(tmp_path, [f])
    text = (tmp_path / "out/labels/train/7_1.txt").read_text()
    # cx = (1+4+1)/2/10 = 0.3, cy = (2+2+1)/2/4 = 0.625, w = 4/10, h = 1/4
    assert text == "0 0.300000 0.625000 0.400000 0.250000\n"


@pytest.mark.parametrize("connectivity,expected", [
    (8, ["0 0.333333 0.333333 0.666667 0.666667"]),
    (4, ["0 0.166667 0.166667 0.333333 0.333333", "0 0.500000 0.500000 0.333333 0.333333"]),
])
def test_diagonal_neighbours_join_under_8_not_4(tmp_path, connectivity, expected):
    vol = np.zeros((3, 3, 1), np.uint8)
    vol[0, 0, 0] = vol[1, 1, 0] = 1
    f = write_seg(tmp_path / "d_3.seg.nrrd", vol, [("lesion", 0, 1)])
    run(tmp_path, [f], connectivity=connectivity)
    assert (tmp_path / "out/labels/train/3_1.txt").read_text().splitlines() == expected


def test_two_segments_touching_on_one_slice_stay_apart(tmp_path):
    vol = np.zeros((4, 2, 1), np.uint8)
    vol[0:2, 0, 0] = 1   # segment "a", 2 px along x at y=0
    vol[2:4, 0, 0] = 2   # segment "b" right beside it: a different instance of another class
    f = write_seg(tmp_path / "t_1.seg.nrrd", vol, [("a", 0, 1), ("b", 0, 2)])
    run(tmp_path, [f])
    assert (tmp_path / "out/labels/train/1_1.txt").read_text().splitlines() == [
        "0 0.250000 0.250000 0.500000 0.500000",
        "1 0.750000 0.250000 0.500000 0.500000"]


def test_classes_follow_segment_names_not_label_values(tmp_path):
    # file 1 lists (a=1, b=2); file 2 lists b first with value 1 and a with value 5
    v1 = np.zeros((4, 4, 1), np.uint8)
    v1[0, 0, 0] = 1   # a
    v1[3, 3, 0] = 2   # b
    v2 = np.zeros((4, 4, 1), np.uint8)
    v2[0, 0, 0] = 5   # a
    v2[3, 3, 0] = 1   # b
    f1 = write_seg(tmp_path / "x_1.seg.nrrd", v1, [("a", 0, 1), ("b", 0, 2)])
    f2 = write_seg(tmp_path / "x_2.seg.nrrd", v2, [("b", 0, 1), ("a", 0, 5)])
    s = run(tmp_path, [f1, f2])
    assert s["classes"] == ["a", "b"]
    for exam in ("1", "2"):
        assert (tmp_path / f"out/labels/train/{exam}_1.txt").read_text().splitlines() == [
            "0 0.125000 0.125000 0.250000 0.250000", "1 0.875000 0.875000 0.250000 0.250000"]
    yaml_text = (tmp_path / "out/dataset.yaml").read_text()
    assert "names:\n  0: a\n  1: b\n" in yaml_text


def test_layered_file_keeps_overlapping_segments_that_reuse_a_value(tmp_path):
    layers = np.zeros((2, 6, 6, 2), np.uint8)  # (L, I, J, K)
    layers[0, 1:4, 1:4, 0] = 1   # "ribs" in layer 0, value 1: i 1..3, j 1..3
    layers[1, 2:6, 2:4, 0] = 1   # "sphere" in layer 1, also value 1, overlapping: i 2..5, j 2..3
    f = write_seg(tmp_path / "ov_4.seg.nrrd", layers, [("ribs", 0, 1), ("sphere", 1, 1)])
    s = run(tmp_path, [f])
    assert s["classes"] == ["ribs", "sphere"]
    assert (tmp_path / "out/labels/train/4_1.txt").read_text().splitlines() == [
        "0 0.416667 0.416667 0.500000 0.500000",   # i 1..3, j 1..3 on a 6x6 slice
        "1 0.666667 0.500000 0.666667 0.333333"]   # i 2..5, j 2..3
    assert not (tmp_path / "out/labels/train/4_2.txt").exists()  # empty slice: no file


def test_anisotropic_spacing_does_not_move_boxes(tmp_path):
    vol = np.zeros((8, 6, 2), np.uint8)
    vol[2:5, 1:2, 1] = 1
    a = write_seg(tmp_path / "s_1.seg.nrrd", vol, [("l", 0, 1)], spacing=(0.3, 0.4, 2.5))
    s = run(tmp_path, [a])
    assert (tmp_path / "out/labels/train/1_2.txt").read_text() == \
        "0 0.437500 0.250000 0.375000 0.166667\n"
    assert s["boxes"] == 1


def test_plain_label_map_value_is_class_minus_one(tmp_path):
    import nrrd
    vol = np.zeros((5, 5, 1), np.uint16)
    vol[0, 0, 0] = 1
    vol[4, 4, 0] = 3
    f = tmp_path / "plain_9.nrrd"
    nrrd.write(str(f), vol)
    s = run(tmp_path, [f])
    assert s["classes"] == ["1", "2", "3"]
    assert (tmp_path / "out/labels/train/9_1.txt").read_text().splitlines() == [
        "0 0.100000 0.100000 0.200000 0.200000", "2 0.900000 0.900000 0.200000 0.200000"]


def test_single_class_and_classes_file(tmp_path):
    vol = np.zeros((4, 4, 1), np.uint8)
    vol[0, 0, 0] = 1
    vol[3, 3, 0] = 2
    f = write_seg(tmp_path / "c_1.seg.nrrd", vol, [("a", 0, 1), ("b", 0, 2)])
    s = run(tmp_path, [f], single_class=True)
    assert s["classes"] == ["object"]
    assert [ln.split()[0] for ln in
            (tmp_path / "out/labels/train/1_1.txt").read_text().splitlines()] == ["0", "0"]
    names = tmp_path / "names.txt"
    names.write_text("z\nb\na\n")
    s = gpuconv.convert([str(f)], tmp_path / "out2", classes=names, backend="cpu",
                        val_fraction=0.0, progress=False)
    assert s["classes"] == ["z", "b", "a"]
    # lines are sorted by class id: b (id 1, at the far corner) before a (id 2, at the origin)
    assert (tmp_path / "out2/labels/train/1_1.txt").read_text().splitlines() == [
        "1 0.875000 0.875000 0.250000 0.250000", "2 0.125000 0.125000 0.250000 0.250000"]


def test_exam_ids():
    from gpuconv.dataset.exams import exam_id
    assert exam_id("COCA_0042.seg.nrrd") == "0042"
    assert exam_id("/x/Segmentation.seg.nrrd") == "Segmentation"
    assert exam_id("scan12.nhdr") == "12"
    assert exam_id("abc.nrrd") == "abc"
    assert exam_id(Path("p7_a.seg.nrrd")) == "p7_a"


def test_split_csv_and_seeded_split(tmp_path):
    vol = np.zeros((2, 2, 1), np.uint8)
    vol[0, 0, 0] = 1
    files = [write_seg(tmp_path / f"e_{n}.seg.nrrd", vol, [("l", 0, 1)]) for n in (1, 2, 3)]
    csv = tmp_path / "split.csv"
    csv.write_text("exam,split\n1,train\n2,val\n3,test\n")
    s = gpuconv.convert([str(f) for f in files], tmp_path / "o", split_csv=csv, backend="cpu",
                        progress=False)
    assert s["exams_per_split"] == {"train": 1, "val": 1, "test": 1}
    assert (tmp_path / "o/labels/test/3_1.txt").exists()  # test stays held out (issue 12)
    from gpuconv.dataset.exams import seeded_split
    sp = seeded_split([str(i) for i in range(10)], 0.3, seed=1)
    assert sum(v == "val" for v in sp.values()) == 3
    assert sp == seeded_split([str(i) for i in reversed(range(10))], 0.3, seed=1)


@pytest.mark.parametrize("W,H,max_class", [(7, 5, 3), (512, 512, 8), (513, 301, 250), (1, 1, 12)])
def test_vectorised_yolo_text_equals_line_by_line_formatting(W, H, max_class):
    """The lookup-table formatter against the contract formatted one line at a time."""
    from gpuconv.results.boxes import BoxTable, yolo_lines_by_slice
    rng = np.random.default_rng(W * H)
    n = 2000
    i0 = rng.integers(0, W, n)
    i1 = np.minimum(W - 1, i0 + rng.integers(0, W, n))
    j0 = rng.integers(0, H, n)
    j1 = np.minimum(H - 1, j0 + rng.integers(0, H, n))
    k = np.sort(rng.integers(0, 30, n))
    cls = rng.integers(0, max_class, n)
    table = BoxTable(k, cls, i0, i1, j0, j1, np.ones(n, np.int64), W, H, 30)
    expected: dict[int, str] = {}
    for kk, c, a, b, p, q in zip(k.tolist(), cls.tolist(), i0.tolist(), i1.tolist(),
                                 j0.tolist(), j1.tolist()):
        line = (f"{c} {(a + b + 1) / 2 / W:.6f} {(p + q + 1) / 2 / H:.6f} "
                f"{(b - a + 1) / W:.6f} {(q - p + 1) / H:.6f}\n")
        expected[kk] = expected.get(kk, "") + line
    assert yolo_lines_by_slice(table) == expected
