"""End to end through the real command line: synth corpus -> convert -> stable, re-runnable."""

import filecmp
import json
import subprocess
import sys

import nrrd
import numpy as np

from conftest import expected_label_files, read_label_dir


def gpuconv(*args):
    return subprocess.run([sys.executable, "-m", "gpuconv", *map(str, args)],
                          capture_output=True, text=True)


def _tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.txt"))


def test_synth_convert_matches_reference_and_reruns_identically(tmp_path):
    corpus = tmp_path / "corpus"
    r = gpuconv("synth", corpus, "-n", 4, "--size", "96x80x12", "--seed", 5)
    assert r.returncode == 0, r.stderr
    r = gpuconv("convert", corpus, "--out", tmp_path / "a", "--split", corpus / "split.csv",
                "--json", "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["files"] == 4 and summary["failed"] == 0 and summary["backend"] == "cpu"
    names = summary["classes"]
    assert len(names) == 8
    # every exam against the scipy reference, classes matched through segment names
    for p in sorted(corpus.glob("*.seg.nrrd")):
        data, h = nrrd.read(str(p))
        cls = {int(h[f"Segment{n}_LabelValue"]): names.index(h[f"Segment{n}_Name"])
               for n in range(8)}
        exam = p.name.split("_")[1].split(".")[0]
        assert read_label_dir(tmp_path / "a", exam) == expected_label_files(
            data[None], lambda layer, v, cls=cls: cls[v])
    # a second run into another folder is byte-identical
    r = gpuconv("convert", corpus, "--out", tmp_path / "b", "--split", corpus / "split.csv",
                "--backend", "cpu", "--workers", 1)
    assert r.returncode == 0, r.stderr
    files = _tree(tmp_path / "a" / "labels")
    assert files == _tree(tmp_path / "b" / "labels")
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a/labels", tmp_path / "b/labels",
                                               files, shallow=False)
    assert not mismatch and not errors
    # worker processes from the real command line: same files, and the summary says so
    r = gpuconv("convert", corpus, "--out", tmp_path / "c", "--split", corpus / "split.csv",
                "--backend", "cpu", "--workers", 2, "--pool", "process")
    assert r.returncode == 0, r.stderr
    assert "2 process worker(s)" in r.stdout
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a/labels", tmp_path / "c/labels",
                                               files, shallow=False)
    assert _tree(tmp_path / "c" / "labels") == files and not mismatch and not errors
    r = gpuconv("convert", corpus, "--out", tmp_path / "d", "--pool", "fork")
    assert r.returncode == 2 and "--pool" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_rerun_into_same_out_removes_stale_files(tmp_path):
    vol = np.zeros((4, 4, 3), np.uint8)
    vol[0, 0, 0] = 1
    vol[2, 2, 2] = 1
    f = tmp_path / "x_1.nrrd"
    nrrd.write(str(f), vol)
    out = tmp_path / "out"
    assert gpuconv("convert", f, "--out", out, "--val-fraction", 0).returncode == 0
    assert _tree(out / "labels") == ["train/1_1.txt", "train/1_3.txt"]
    vol[2, 2, 2] = 0
    nrrd.write(str(f), vol)
    assert gpuconv("convert", f, "--out", out, "--val-fraction", 0).returncode == 0
    assert _tree(out / "labels") == ["train/1_1.txt"]
    assert gpuconv("convert", f, "--out", out, "--val-fraction", 0,
                   "--write-empty").returncode == 0
    assert _tree(out / "labels") == ["train/1_1.txt", "train/1_2.txt", "train/1_3.txt"]
    assert (out / "labels/train/1_2.txt").read_text() == ""


def test_help_explains_the_conventions():
    r = gpuconv("convert", "--help")
    assert r.returncode == 0
    assert "x = first NRRD axis" in r.stdout and "--connectivity" in r.stdout


def test_inspect_json(tmp_path, slicer_data):
    r = gpuconv("inspect", slicer_data / "Segmentation.seg.nrrd", "--json")
    info = json.loads(r.stdout)
    assert info["sizes"] == [128, 128, 34] and len(info["segments"]) == 7


def test_version():
    import gpuconv as pkg
    r = gpuconv("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"gpuconv {pkg.__version__}"


def test_usage_errors_are_one_error_line_with_status_2(tmp_path):
    """click's usage errors speak like every other error of the tool: one 'error:' line."""
    cases = [(("convert", tmp_path, "--out", tmp_path / "o", "--workers", "abc"),
              "'abc' is not a valid integer"),
             (("convert", tmp_path), "Missing option '--out'"),
             (("bogus",), "No such command 'bogus'"),
             (("agree", tmp_path), "Missing argument 'B'")]
    for args, text in cases:
        r = gpuconv(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], lines
        assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()
    r = gpuconv()                       # bare command: the help, status 0
    assert r.returncode == 0 and r.stdout.startswith("Usage: gpuconv")
