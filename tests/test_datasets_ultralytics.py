"""Datasets Ultralytics can train on: splits that never surprise, a dataset.yaml that survives a
move, a CT refused where a label map is expected, and the demo corpus with images.

Ultralytics' path rules are re-expressed here from ``ultralytics/data/utils.py``
(``check_det_dataset``: root = ``path:`` or the yaml's own folder, each split
``(root / value).resolve()``; ``img2label_paths``: ``/images/`` -> ``/labels/``, suffix ->
``.txt``), not taken from the code under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import gpuconv
from conftest import write_seg
from gpuconv.errors import InputError

IMG_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def ultralytics_paths(yaml_file: Path) -> dict[str, Path]:
    """check_det_dataset's path resolution, for a yaml given by its path."""
    data = yaml.safe_load(Path(yaml_file).read_text())
    data["yaml_file"] = str(yaml_file)                       # YAML.load(append_filename=True)
    root = Path(data.get("path") or Path(data.get("yaml_file", "")).parent)
    assert root.exists() or root.is_absolute(), "would be looked up under DATASETS_DIR"
    return {k: (root / data[k]).resolve() for k in ("train", "val", "test") if data.get(k)}


def img2label(img: Path) -> Path:
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(str(img).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_SUFFIXES)


def _corpus(d: Path, n: int, shape=(20, 16, 3)) -> Path:
    """n exams e_1..e_n with a lesion on every slice, and a matching CT each (CT_N.nrrd)."""
    from gpuconv.io.nrrd_write import write_nrrd
    d.mkdir(parents=True, exist_ok=True)
    (d / "ct").mkdir(exist_ok=True)
    for e in range(1, n + 1):
        lab = np.zeros(shape, np.uint8)
        lab[2 + e % 5, 3, :] = 1
        lab[8:11, 9:12, :] = 1
        write_seg(d / f"e_{e}.seg.nrrd", lab, [("calc", 0, 1)])
        ct = np.where(lab > 0, 600, 40).astype(np.int16)
        write_nrrd(d / "ct" / f"CT_{e}.nrrd", ct, directions=np.eye(3), origin=(0, 0, 0))
    return d


def _convert(d: Path, out: Path, **kw):
    kw.setdefault("backend", "cpu")
    kw.setdefault("progress", False)
    return gpuconv.convert([str(p) for p in sorted(d.glob("*.seg.nrrd"))], out,
                           images=[str(d / "ct")], **kw)


def _split_exams(out: Path, split: str) -> set[str]:
    return {p.name.rsplit("_", 1)[0] for p in (out / "images" / split).glob("*.png")}


# --- splits ---------------------------------------------------------------------------------
def test_one_exam_gives_a_trainable_dataset_and_says_so(tmp_path):
    d = _corpus(tmp_path / "in", 1)
    s = _convert(d, tmp_path / "out")              # the default --val-fraction 0.2
    assert s["failed"] == 0
    assert s["exams_per_split"] == {"train": 1, "val": 0}
    assert "val points at images/train" in s["split_note"]
    paths = ultralytics_paths(tmp_path / "out/dataset.yaml")
    assert paths["val"] == paths["train"] == (tmp_path / "out/images/train").resolve()
    assert images_in(paths["train"]) and images_in(paths["val"])


def test_two_exams_one_goes_to_val(tmp_path):
    d = _corpus(tmp_path / "in", 2)
    s = _convert(d, tmp_path / "out")
    assert s["exams_per_split"] == {"train": 1, "val": 1} and s["split_note"] is None
    paths = ultralytics_paths(tmp_path / "out/dataset.yaml")
    assert paths["val"] == (tmp_path / "out/images/val").resolve()
    assert len(images_in(paths["val"])) == 3 and len(images_in(paths["train"])) == 3


@pytest.mark.parametrize("n,fraction", [(2, 0.2), (3, 0.1), (5, 0.05), (4, 0.99), (7, 1.0)])
def test_seeded_split_never_leaves_a_split_empty(n, fraction):
    from gpuconv.dataset.exams import seeded_split
    sp = seeded_split([str(i) for i in range(n)], fraction, seed=0)
    assert 1 <= sum(v == "val" for v in sp.values()) <= n - 1


def test_train_val_test_csv_gives_three_splits(tmp_path):
    d = _corpus(tmp_path / "in", 4)
    csv = tmp_path / "split.csv"
    csv.write_text("exam,split\n1,train\n2,val\n3,test\n4,train\n")
    s = _convert(d, tmp_path / "out", split_csv=csv, fmt="polygons")
    assert s["exams_per_split"] == {"train": 2, "val": 1, "test": 1}
    assert s["split_note"] is None
    out = tmp_path / "out"
    doc = yaml.safe_load((out / "dataset.yaml").read_text())
    assert doc["test"] == "images/test"
    assert _split_exams(out, "test") == {"3"} and _split_exams(out, "val") == {"2"}
    assert {p.name for p in (out / "labels/test").iterdir()} == {"3_1.txt", "3_2.txt", "3_3.txt"}
    paths = ultralytics_paths(out / "dataset.yaml")
    for img in images_in(paths["test"]):
        assert img2label(img).is_file()


def test_train_test_csv_keeps_test_as_val_and_says_so(tmp_path):
    """COCA's own train_test_split.csv has train and test rows only: test is used as val."""
    d = _corpus(tmp_path / "in", 3)
    csv = tmp_path / "train_test_split.csv"
    csv.write_text("exam,split\n1,train\n2,test\n3,train\n")
    s = _convert(d, tmp_path / "out", split_csv=csv)
    assert s["exams_per_split"] == {"train": 2, "val": 1}
    assert "test exams are written to val" in s["split_note"]
    assert _split_exams(tmp_path / "out", "val") == {"2"}
    assert not (tmp_path / "out/images/test").exists()
    assert "test" not in yaml.safe_load((tmp_path / "out/dataset.yaml").read_text())


def test_a_split_without_train_is_refused_before_writing(tmp_path):
    d = _corpus(tmp_path / "in", 2)
    csv = tmp_path / "split.csv"
    csv.write_text("exam,split\n1,val\n2,test\n")
    with pytest.raises(InputError, match="no exam goes to train"):
        _convert(d, tmp_path / "out", split_csv=csv)
    assert not (tmp_path / "out").exists()


def test_cli_states_the_counts_per_split(tmp_path):
    d = _corpus(tmp_path / "in", 1)
    r = subprocess.run([sys.executable, "-m", "gpuconv", "convert", str(d / "e_1.seg.nrrd"),
                        "-o", str(tmp_path / "out"), "--backend", "cpu", "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "exams per split: train 1, val 0" in r.stdout
    assert "note: no exam went to val" in r.stdout


# --- a portable dataset.yaml ------------------------------------------------------------------
def test_moved_dataset_still_loads(tmp_path):
    d = _corpus(tmp_path / "in", 3)
    _convert(d, tmp_path / "made", fmt="polygons")
    doc = yaml.safe_load((tmp_path / "made/dataset.yaml").read_text())
    assert "path" not in doc and not any(os.path.isabs(str(v)) for v in doc.values())
    moved = tmp_path / "elsewhere" / "ds"
    moved.parent.mkdir()
    shutil.move(str(tmp_path / "made"), str(moved))
    for yaml_arg in (moved / "dataset.yaml", Path(os.path.relpath(moved / "dataset.yaml"))):
        paths = ultralytics_paths(yaml_arg)
        assert set(paths) == {"train", "val"}
        for split, folder in paths.items():
            assert folder == (moved / "images" / split).resolve()
            imgs = images_in(folder)
            assert imgs
            for img in imgs:
                assert img2label(img).is_file()


# --- a CT is not a label map ---------------------------------------------------------------------
def _plain(path: Path, data: np.ndarray) -> Path:
    from gpuconv.io.nrrd_write import write_nrrd
    return write_nrrd(path, data, directions=np.eye(3), origin=(0, 0, 0))


@pytest.fixture()
def ct_files(tmp_path):
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 1500, (24, 20, 3)).astype(np.int16)      # HU: negative values
    unsigned = (hu.astype(np.int32) + 1024).astype(np.uint16)          # HU + 1024: no negatives
    labels = np.zeros((24, 20, 3), np.uint8)
    labels[3:6, 4:7, 1] = 2
    return {"hu": _plain(tmp_path / "hu_1.nrrd", hu),
            "unsigned": _plain(tmp_path / "ct_2.nrrd", unsigned),
            "labels": _plain(tmp_path / "lab_3.nrrd", labels)}


def test_ct_given_as_a_label_map_is_refused(tmp_path, ct_files):
    errors = []
    s = gpuconv.convert([str(ct_files["hu"]), str(ct_files["unsigned"]), str(ct_files["labels"])],
                        tmp_path / "out", backend="cpu", progress=False,
                        on_error=lambda p, r: errors.append((Path(p).name, r)))
    assert s["failed"] == 2 and s["files"] == 1
    reasons = dict(errors)
    assert "negative values" in reasons["hu_1.nrrd"]
    assert "more than --max-classes 255" in reasons["ct_2.nrrd"]
    assert all("--images" in r and "\n" not in r for r in reasons.values())
    assert len(s["classes"]) == 2                      # the real label map: values 1..2


def test_ct_refused_on_the_command_line_and_by_inspect(tmp_path, ct_files):
    r = subprocess.run([sys.executable, "-m", "gpuconv", "convert", str(ct_files["unsigned"]),
                        "-o", str(tmp_path / "out"), "--backend", "cpu", "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "ct_2.nrrd" in lines[0] and "--images" in lines[0]
    r = subprocess.run([sys.executable, "-m", "gpuconv", "inspect", str(ct_files["hu"])],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"})
    assert "not a label map" in r.stdout and "--images" in r.stdout
    r = subprocess.run([sys.executable, "-m", "gpuconv", "inspect", str(ct_files["labels"])],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"})
    assert r.returncode == 0 and "not a label map" not in r.stdout


def test_max_classes_and_classes_let_many_valued_maps_through(tmp_path, ct_files):
    many = np.zeros((30, 30, 1), np.uint16)
    k = np.arange(900).reshape(30, 30)
    many[:, :, 0] = np.where(k % 2 == 0, (k // 2) % 300 + 1, 0)   # 300 instance ids, apart
    assert len(np.unique(many)) == 301
    f = _plain(tmp_path / "inst_4.nrrd", many)
    s = gpuconv.convert([str(f)], tmp_path / "a", backend="cpu", progress=False)
    assert s["failed"] == 1
    s = gpuconv.convert([str(f)], tmp_path / "b", backend="cpu", progress=False, max_classes=300)
    assert s["failed"] == 0
    s = gpuconv.convert([str(f)], tmp_path / "c", backend="cpu", progress=False, single_class=True)
    assert s["failed"] == 0
    s = gpuconv.convert([str(ct_files["hu"])], tmp_path / "d", backend="cpu", progress=False,
                        single_class=True)
    assert s["failed"] == 1                                    # negative values: still a CT


# --- the demo corpus ----------------------------------------------------------------------------
def test_demo_corpus_builds_a_trainable_dataset_with_images(tmp_path):
    """What scripts/demo.sh does, small: gpuconv synth (labels + CTs), convert --images; every
    split has images, every label file its image, the polygons lie on the bright calcium and
    cover all of it."""
    from PIL import Image
    from gpuconv.writers.yolo import dataset_problems
    from test_polygons import consumer_mask
    corpus = tmp_path / "corpus"
    r = subprocess.run([sys.executable, "-m", "gpuconv", "synth", str(corpus), "-n", "4",
                        "--size", "96x80x6", "--seed", "0"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(list((corpus / "ct").glob("CT_*.nrrd"))) == 4
    s = gpuconv.convert([str(corpus)], tmp_path / "ds", split_csv=corpus / "split.csv",
                        images=[str(corpus / "ct")], fmt="polygons", background_fraction=0.2,
                        backend="cpu", progress=False)
    assert s["failed"] == 0 and s["images"] > 0
    assert s["exams_per_split"]["train"] >= 1 and s["exams_per_split"]["val"] >= 1
    assert dataset_problems(tmp_path / "ds/dataset.yaml") == []
    paths = ultralytics_paths(tmp_path / "ds/dataset.yaml")
    n_labels = 0
    for split in ("train", "val"):
        for img in images_in(paths[split]):
            lab = img2label(img)
            if not lab.is_file():
                continue                                   # a background slice
            png = np.asarray(Image.open(img))
            assert png.shape == (80, 96)
            covered = np.zeros(png.shape, bool)
            for line in lab.read_text().splitlines():
                m = consumer_mask(line, 96, 80)
                assert (png[m] == 255).mean() > 0.5        # 600 HU, mediastinum window: white
                covered |= m                               # (holes are filled: not all white)
                n_labels += 1
            assert covered[png == 255].all()               # every calcium pixel is labelled
        for lab in (tmp_path / "ds/labels" / split).glob("*.txt"):
            assert (paths[split] / (lab.stem + ".png")).is_file()
    assert n_labels > 10


def test_dataset_problems_names_an_untrainable_dataset(tmp_path):
    from gpuconv.writers.yolo import dataset_problems
    d = _corpus(tmp_path / "in", 2)
    gpuconv.convert([str(p) for p in d.glob("*.seg.nrrd")], tmp_path / "labels-only",
                    backend="cpu", progress=False)
    problems = dataset_problems(tmp_path / "labels-only/dataset.yaml")
    assert any(p.startswith("train: no images") for p in problems)


@pytest.mark.parametrize("dtype,value", [("uint32", 1_000_000), ("uint32", 2**31 - 1),
                                         ("uint32", 2**31), ("uint64", 2**64 - 1),
                                         ("int64", 2**40)])
def test_a_huge_plain_label_value_is_one_line_not_a_huge_class_list(tmp_path, dtype, value):
    """A plain map's value v is class v-1: a value above --max-classes without --classes would
    make the class list (and dataset.yaml) as long as the value (an 18.7 MB yaml and 28 s for
    one voxel of 1,000,000 before); it is refused with one line, in bounded time."""
    import time

    import nrrd
    v = np.zeros((8, 8, 2), dtype)
    v[2, 2, 0] = value
    f = tmp_path / "big_1.nrrd"
    nrrd.write(str(f), v)
    seen = []
    t0 = time.perf_counter()
    s = gpuconv.convert([str(f)], tmp_path / "o", backend="cpu", progress=False,
                        on_error=lambda p, r: seen.append(r))
    assert time.perf_counter() - t0 < 20
    assert s["failed"] == 1 and len(seen) == 1
    assert f"label value {value} is above --max-classes 255" in seen[0]
    assert (tmp_path / "o" / "dataset.yaml").stat().st_size < 1000
    s = gpuconv.convert([str(f)], tmp_path / "o2", backend="cpu", progress=False,
                        single_class=True)
    assert s["failed"] == 0 and s["boxes"] == 1
