"""Cold start of ``gpuconv convert`` (issue 15): what a box conversion imports, and that the
fast exit after the outputs are written loses nothing and keeps the exit status.

Times are measured by the benchmark (``gpuconv bench``: whole-process contenders, and
``python -X importtime``), never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpuconv.bench.workloads import sparse_calcium, write_seg


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    d = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    for n in (1, 2):
        write_seg(d / f"S_{n:04d}.seg.nrrd", sparse_calcium(rng, (64, 48, 12), 0.01))
    return d


def _run(*args, env=None, **kw):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "gpuconv", *args],
                          capture_output=True, text=True, env=e, timeout=300, **kw)


def _imported(stderr: str) -> set[str]:
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_converting_boxes_imports_no_scipy(scans, tmp_path):
    done = _run("convert", str(scans), "--out", str(tmp_path / "o"), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    mods = _imported(done.stderr)
    assert "gpuconv.conversion.pipeline" in mods or "gpuconv.cli.app" in mods
    assert not [m for m in mods if m == "scipy" or m.startswith("scipy.")]
    from gpuconv.backends import native
    if native.get() is not None:  # the C kernels ran: Numba was never needed
        assert "numba" not in mods
    # nor what the job does not use: no pydantic (typer 0.29 built adapters through it, ~130 ms),
    # no NIfTI / DICOM readers for NRRD inputs, no rich progress bar with --no-progress
    for unused in ("pydantic", "typer", "rich", "gpuconv.io.nifti", "gpuconv.io.dicom_series",
                   "gpuconv.io.dicom_seg"):
        assert unused not in mods, unused


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("summary.json", "manifest.jsonl", "run.lock")}


def test_fast_exit_writes_everything_and_keeps_the_status(scans, tmp_path):
    fast = _run("convert", str(scans), "--out", str(tmp_path / "fast"), "--no-progress")
    slow = _run("convert", str(scans), "--out", str(tmp_path / "slow"), "--no-progress",
                env={"GPUCONV_NO_FAST_EXIT": "1"})
    assert fast.returncode == slow.returncode == 0
    assert "file(s) converted" in fast.stdout and "file(s) converted" in slow.stdout
    a, b = _tree(tmp_path / "fast"), _tree(tmp_path / "slow")
    assert a.keys() == b.keys() and a == b and any(k.startswith("labels/") for k in a)
    summary = json.loads((tmp_path / "fast" / "summary.json").read_text())
    assert summary["files"] == 2
    assert len((tmp_path / "fast" / "manifest.jsonl").read_text().splitlines()) == 2


def test_fast_exit_status_for_a_failed_file_and_a_bad_option(scans, tmp_path):
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "S_0001.seg.nrrd").write_bytes((scans / "S_0001.seg.nrrd").read_bytes())
    (bad / "S_0009.seg.nrrd").write_bytes((scans / "S_0002.seg.nrrd").read_bytes()[:300])
    failed = _run("convert", str(bad), "--out", str(tmp_path / "o"), "--no-progress")
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "S_0009" in failed.stderr
    assert list((tmp_path / "o" / "labels").rglob("0001_*.txt"))
    usage = _run("convert", str(bad), "--out", str(tmp_path / "o2"), "--connectivity", "5",
                 "--no-progress")
    assert usage.returncode == 2


def test_exit_code_mapping():
    from gpuconv.cli.fast_exit import exit_code
    assert exit_code(None) == 0 and exit_code(0) == 0 and exit_code(2) == 2
    assert exit_code("message") == 1


def test_first_numba_call_imports_no_scipy_linalg():
    code = ("import sys, numpy as np\n"
            "from gpuconv.backends import cpu_kernels as k\n"
            "v = np.zeros((4, 8), np.uint8); v[1, 2] = 3\n"
            "assert k.occupied_rows_any(v).tolist() == [False, True, False, False]\n"
            "print('scipy.linalg' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
