"""Bad input: one clear line per file, the rest converts, nothing partial, non-zero exit."""

import json
import subprocess
import sys

import nrrd
import numpy as np
import pytest

import gpuconv
from gpuconv.errors import InputError
from conftest import write_seg


def _good(tmp_path, n):
    vol = np.zeros((4, 4, 2), np.uint8)
    vol[1, 1, 0] = 1
    return write_seg(tmp_path / f"good_{n}.seg.nrrd", vol, [("l", 0, 1)])


def _bad_files(tmp_path):
    bad = {}
    # truncated gzip
    vol = np.zeros((64, 64, 8), np.uint8)
    vol[::3, ::5, :] = 1
    p = write_seg(tmp_path / "trunc_101.seg.nrrd", vol, [("l", 0, 1)])
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) - 40])
    bad["trunc_101.seg.nrrd"] = "truncated"
    # garbage header
    p = tmp_path / "garbage_102.nrrd"
    p.write_bytes(b"NRRD0004\ntype: unsigned char\nsizes: 2 two 2\ndimension: 3\n"
                  b"encoding: raw\n\n" + bytes(8))
    bad["garbage_102.nrrd"] = "header does not parse"
    # float data
    nrrd.write(str(tmp_path / "float_103.nrrd"), np.zeros((2, 2, 2), np.float32))
    bad["float_103.nrrd"] = "must be integer"
    # wrong dimension
    nrrd.write(str(tmp_path / "flat_104.nrrd"), np.zeros((2, 2), np.uint8))
    bad["flat_104.nrrd"] = "wrong dimension"
    # label/segment mismatch: value 3 in the data, no segment declares it
    vol = np.zeros((3, 3, 1), np.uint8)
    vol[0, 0, 0] = 3
    write_seg(tmp_path / "mismatch_105.seg.nrrd", vol, [("l", 0, 1)])
    bad["mismatch_105.seg.nrrd"] = "label/segment mismatch"
    # not NRRD at all
    (tmp_path / "junk_106.nrrd").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    bad["junk_106.nrrd"] = "not an NRRD file"
    return bad


def test_each_bad_file_fails_alone_with_its_reason(tmp_path):
    goods = [_good(tmp_path, n) for n in (1, 2)]
    bad = _bad_files(tmp_path)
    seen = []
    s = gpuconv.convert([str(tmp_path / "*.nrrd")], tmp_path / "out", backend="cpu",
                        val_fraction=0.0, progress=False, on_error=lambda p, r: seen.append((p, r)))
    assert s["files"] == len(goods)
    assert s["failed"] == len(bad)
    reasons = {f["file"].rsplit("/", 1)[1]: f["reason"] for f in s["failures"]}
    for name, words in bad.items():
        assert words in reasons[name], (name, reasons[name])
        assert "\n" not in reasons[name]
    assert len(seen) == len(bad)
    labels = sorted(p.name for p in (tmp_path / "out/labels").rglob("*"))
    assert labels == ["1_1.txt", "2_1.txt", "train", "val"]   # nothing from a bad file
    assert not list((tmp_path / "out").rglob("*.tmp*"))         # no temporary leftovers
    assert json.loads((tmp_path / "out/summary.json").read_text())["failed"] == len(bad)


def test_cli_exit_status_and_one_line_errors(tmp_path):
    _good(tmp_path, 1)
    _bad_files(tmp_path)
    r = subprocess.run([sys.executable, "-m", "gpuconv", "convert", str(tmp_path / "*.nrrd"), "--out",
                        str(tmp_path / "out"), "--backend", "cpu", "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 6
    assert any("trunc_101.seg.nrrd: " in ln and "truncated" in ln for ln in errors)
    assert "1 file(s) converted, 6 failed" in r.stdout


def test_duplicate_exam_ids_stop_before_anything_is_written(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _good(tmp_path / "a", 7)
    _good(tmp_path / "b", 7)
    with pytest.raises(InputError, match="duplicate exam ids: '7'"):
        gpuconv.convert([str(tmp_path / "a"), str(tmp_path / "b")], tmp_path / "out",
                        backend="cpu", progress=False)
    assert not (tmp_path / "out").exists()
    r = subprocess.run([sys.executable, "-m", "gpuconv", "convert", str(tmp_path / "a"),
                        str(tmp_path / "b"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "duplicate exam ids" in r.stderr


def test_exams_missing_from_the_split_csv_are_reported(tmp_path):
    for n in (1, 2, 3):
        _good(tmp_path, n)
    csv = tmp_path / "split.csv"
    csv.write_text("exam,split\n1,train\n3,val\n")
    s = gpuconv.convert([str(tmp_path)], tmp_path / "out", split_csv=csv, backend="cpu",
                        progress=False)
    assert s["files"] == 2 and s["failed"] == 1
    assert "exam '2' is missing from the split CSV" in s["failures"][0]["reason"]
    assert not list((tmp_path / "out/labels").rglob("2_*.txt"))


def test_mixing_plain_and_slicer_files_needs_classes(tmp_path):
    _good(tmp_path, 1)
    nrrd.write(str(tmp_path / "plain_2.nrrd"), np.ones((2, 2, 1), np.uint8))
    with pytest.raises(InputError, match="--classes"):
        gpuconv.convert([str(tmp_path / "*.nrrd")], tmp_path / "out", backend="cpu",
                        progress=False)
