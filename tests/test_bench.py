"""gpuconv bench: the quick run, its documented outputs, and the published-method baseline.

The published method is checked twice: against output computed by hand for a tiny volume (its
conventions reproduced: x/y swap, one pixel short, class 0), and, after undoing those
conventions, against gpuconv's boxes on a non-square volume (an independent check of both).
"""

from __future__ import annotations

import json
from collections import Counter

import nrrd
import numpy as np
import pytest
from scipy import ndimage
from click.testing import CliRunner

from gpuconv.backends import CpuBackend, gpu_unavailable_reason
from gpuconv.bench import published as pub
from gpuconv.bench.workloads import sparse_calcium, specks
from gpuconv.cli.app import app


def _write(path, vol, values=range(1, 9)):
    """pynrrd itself, not gpuconv's writer; Slicer-style Segment fields declare ``values``."""
    fields = {"encoding": "gzip"}
    for n, v in enumerate(values):
        fields[f"Segment{n}_LabelValue"] = str(v)
        fields[f"Segment{n}_Name"] = f"seg{v}"
    nrrd.write(str(path), vol, fields)
    return path


def hand_volume():
    """I=5 (rows: the script's y), J=4, K=2; slice 1 is empty."""
    v = np.zeros((5, 4, 2), np.uint8)
    v[1, 0, 0] = v[1, 1, 0] = v[2, 1, 0] = 3   # L-shape: i 1..2, j 0..1
    v[4, 3, 0] = 5                             # one pixel
    v[3, 0, 0] = v[4, 1, 0] = 7                # diagonal pair: two components at 4-connectivity
    v[0, 3, 0] = 9                             # a value no segment declares: the script skips it
    return v


def test_published_on_hand_made_volume(tmp_path):
    path = _write(tmp_path / "case_0007.nrrd", hand_volume(), values=(3, 5, 7))
    out = tmp_path / "out"
    out.mkdir()
    assert pub.convert_file(path, out) == 2
    # the script's integer exam id and a file for every slice, the empty one too
    assert sorted(p.name for p in out.iterdir()) == ["7_1.txt", "7_2.txt"]
    # by hand: x from j (/J=4), y from i (/I=5), centre min + (max-min)/2, size max-min,
    # class 0, six decimals; values in np.unique order, components in scipy's raster order
    expected = ("0 0.125000 0.300000 0.250000 0.200000\n"   # value 3: r 1..2, c 0..1
                "0 0.750000 0.800000 0.000000 0.000000\n"   # value 5: r 4, c 3
                "0 0.000000 0.600000 0.000000 0.000000\n"   # value 7: r 3, c 0
                "0 0.250000 0.800000 0.000000 0.000000\n")  # value 7: r 4, c 1
    assert (out / "7_1.txt").read_text() == expected
    assert (out / "7_2.txt").read_text() == ""


def test_published_is_what_compat_coca_writes(tmp_path):
    """The benchmark's baseline and --compat coca are one model of the script: same bytes."""
    from gpuconv.writers.compat_coca import convert_coca
    rng = np.random.default_rng(5)
    vol = sparse_calcium(rng, (40, 30, 6), 0.04, max_radius=3)
    src = tmp_path / "in"
    src.mkdir()
    path = _write(src / "COCA_0012.seg.nrrd", vol)
    (tmp_path / "split.csv").write_text("exam,split\n12,train\n")
    out = tmp_path / "pub"
    out.mkdir()
    pub.convert_file(path, out)
    convert_coca([path], tmp_path / "compat", split_csv=tmp_path / "split.csv")
    ours = {p.name: p.read_bytes() for p in (tmp_path / "compat" / "yolo" /
                                             "train_labels").iterdir()}
    theirs = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(theirs) == 6 and sum(b.count(b"\n") for b in theirs.values()) > 10
    assert ours == theirs


def test_published_undone_conventions_match_gpuconv(tmp_path):
    rng = np.random.default_rng(7)
    vol = sparse_calcium(rng, (40, 30, 6), 0.04, max_radius=3)   # non-square: exposes a swap
    vol[0, 29, 0] = 2                                           # one-pixel lesion in a corner
    vol[39, 0, 5] = 8
    path = _write(tmp_path / "vol_0001.nrrd", vol)
    out = tmp_path / "out"
    out.mkdir()
    pub.convert_file(path, out)
    I, J, K = vol.shape
    published = Counter()
    for f in out.iterdir():
        k = int(f.stem.rsplit("_", 1)[1]) - 1
        for line in f.read_text().splitlines():
            assert line.split()[0] == "0"
            published[(k, *pub.to_contract(line, I, J))] += 1
    comp = CpuBackend().slice_components(vol[None], connectivity=4)
    ours = Counter(zip(comp.k.tolist(), comp.i0.tolist(), comp.i1.tolist(),
                       comp.j0.tolist(), comp.j1.tolist()))
    assert sum(ours.values()) > 20
    assert published == ours
    # before the text is written, the boxes match one for one
    rows = Counter((z, r0, r1, c0, c1) for z, objs in pub.slice_boxes(vol, dict.fromkeys(
        range(1, 9), "x")).items() for r0, c0, r1, c1 in objs)
    assert rows == ours


def test_specks_count_is_exact():
    vol = specks(np.random.default_rng(3), (64, 48, 5), 400)
    eight = np.ones((3, 3), bool)
    n = sum(ndimage.label(vol[:, :, k] > 0, structure=eight)[1] for k in range(5))
    assert n == 400
    assert set(np.unique(vol)) <= set(range(9))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    res = CliRunner().invoke(app, ["bench", "--quick", "--out", str(out), "--seed", "1"])
    return res, out


def test_quick_bench_completes_and_reports(quick_run):
    res, out = quick_run
    assert res.exit_code == 0, res.output
    for name in ("bench.json", "bench.md", "bench.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "bench.md").read_text()
    assert "## Targets" in md and "| gpuconv-cpu |" in md
    if gpu_unavailable_reason() is not None:
        assert "GPU skipped" in res.output and "GPU skipped" in md


def test_quick_bench_json_has_documented_keys(quick_run):
    _, out = quick_run
    doc = json.loads((out / "bench.json").read_text())
    for key in ("schema", "date", "command", "machine", "versions", "options", "gpu",
                "workloads", "results", "end_to_end", "headline", "targets", "conventions"):
        assert key in doc, key
    for key in ("name", "cpu_model", "cores", "gpu"):
        assert key in doc["machine"]
    assert {"numpy", "numba", "pynrrd"} <= set(doc["versions"])
    assert doc["command"].startswith("gpuconv bench --quick")
    assert doc["gpu"]["available"] == (gpu_unavailable_reason() is None)
    names = [w["name"] for w in doc["workloads"]]
    ran = set(doc["contenders_run"])
    assert {"gpuconv-cpu", "published"} <= ran
    got = {(r["workload"], r["contender"]) for r in doc["results"]}
    assert got == {(w, c) for w in names if not w.startswith("corpus") for c in ran}
    for r in doc["results"]:
        assert set(r["stages"]) == {"read", "decode", "h2d", "label", "reduce", "write"}
        lab = r["stages"]["label"]
        assert 0 < lab["min"] <= lab["median"] <= lab["max"]
        assert r["runs"] >= 1 and r["label_mvox_s"] > 0
        if r["contender"] == "gpuconv-cpu":
            assert r["stages"]["h2d"] is None and r["scans_per_s"] > 0
    # the specks workload has a component count known by construction
    specks_wl = next(w for w in doc["workloads"] if w["family"] == "specks")
    for r in doc["results"]:
        if r["workload"] == specks_wl["name"] and r["contender"] in ("gpuconv-cpu", "cc3d"):
            assert r["components"] == specks_wl["expected_components"]
    e2e = {r["contender"] for r in doc["end_to_end"]}
    assert {"gpuconv-cpu", "gunzip-floor", "published"} <= e2e
    assert len(doc["targets"]) == 4


def test_bench_rejects_unknown_contender(tmp_path):
    res = CliRunner().invoke(app, ["bench", "--quick", "--out", str(tmp_path),
                                   "--contenders", "gpuconv-cpu,nope"])
    assert res.exit_code == 2
    assert "unknown contender 'nope'" in res.output


@pytest.mark.gpu
def test_quick_bench_adds_gpu_contender(tmp_path):
    reason = gpu_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    from gpuconv.bench import run_bench
    doc = run_bench(tmp_path, quick=True, contenders=["gpuconv-cpu", "gpuconv-gpu"], quiet=True,
                    plot=False)
    by = {(r["workload"], r["contender"]): r for r in doc["results"]}
    for (wl, c), r in by.items():
        if c == "gpuconv-gpu":
            assert r["components"] == by[(wl, "gpuconv-cpu")]["components"]
            assert r["stages"]["h2d"] is not None
