"""Runs that cannot corrupt each other or lose work (issue 14): one run per output folder,
worker processes that die with their parent, Ctrl-C, manifest damage, a re-run in which an exam
now fails, the temporary-file marker, unusable output folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gpuconv
from gpuconv.conversion.output_lock import LOCK_NAME, OutputLock
from conftest import alive as _alive, descendants as _descendants

SKIP = {"manifest.jsonl", "summary.json"}


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gpuconv", *map(str, args)],
                          capture_output=True, text=True, **kw)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in SKIP}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("safety") / "corpus"
    r = cli("synth", d, "-n", 6, "--size", "96x80x12", "--seed", 11)
    assert r.returncode == 0, r.stderr
    return d


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory):
    """Enough work that a run with two worker processes is still going after a second."""
    d = tmp_path_factory.mktemp("safety_big") / "corpus"
    r = cli("synth", d, "-n", 48, "--size", "256x256x96", "--seed", 12)
    assert r.returncode == 0, r.stderr
    return d


def _one_error_line(stderr: str, *needles: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_a_second_run_on_a_locked_folder_is_refused_with_one_line(corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):
        r = cli("convert", corpus, "--out", out, "--backend", "cpu")
        assert r.returncode == 2
        _one_error_line(r.stderr, "another gpuconv run", f"pid {os.getpid()}")
        assert not (out / "labels").exists()        # the refused run wrote nothing
    assert not (out / LOCK_NAME).exists()           # released and removed
    r = cli("convert", corpus, "--out", out, "--backend", "cpu")
    assert r.returncode == 0, r.stderr


def test_two_concurrent_runs_one_refused_and_the_output_equals_a_fresh_run(big_corpus,
                                                                            tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "gpuconv", "convert", str(big_corpus), "--out", str(out),
           "--backend", "cpu", "--workers", "1"]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    codes = sorted(code for code, _ in results)
    if codes == [0, 0]:
        pytest.skip("one run finished before the other started")
    assert codes == [0, 2], results
    _one_error_line(next(err for code, err in results if code == 2), "another gpuconv run")
    fresh = tmp_path / "fresh"
    assert cli("convert", big_corpus, "--out", fresh, "--backend", "cpu").returncode == 0
    assert tree(out) == tree(fresh)
    recs = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(recs) == 48 and all(r["status"] == "ok" for r in recs)


# polygons and 3D instances too: enough work per exam that the run is still going when the
# test's signal arrives, however fast the labelling has become
HEAVY = ("--backend", "cpu", "--format", "polygons", "--instances")


def _start_process_pool_run(corpus, out):
    proc = subprocess.Popen([sys.executable, "-m", "gpuconv", "convert", str(corpus), "--out",
                             str(out), *HEAVY, "--workers", "2", "--pool", "process"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.time() + 60
    kids: list[int] = []
    while time.time() < deadline and proc.poll() is None:
        kids = _descendants(proc.pid)
        labels = list((out / "labels").rglob("*.txt")) if (out / "labels").exists() else []
        if len(kids) >= 3 and labels:   # forkserver + 2 workers (+ resource tracker), working
            break
        time.sleep(0.02)
    return proc, kids


def test_sigkill_of_the_parent_takes_the_worker_processes_with_it(big_corpus, tmp_path):
    proc, kids = _start_process_pool_run(big_corpus, tmp_path / "out")
    if proc.poll() is not None:
        pytest.skip("the run ended before it could be killed")
    assert len(kids) >= 3
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.05)
    assert not [k for k in kids if _alive(k)], "worker processes outlived their parent"


def test_ctrl_c_with_worker_processes_stops_cleanly_and_the_same_command_resumes(big_corpus,
                                                                                 tmp_path):
    out = tmp_path / "out"
    proc, kids = _start_process_pool_run(big_corpus, out)
    if proc.poll() is not None:
        pytest.skip("the run ended before Ctrl-C")
    os.killpg(proc.pid, signal.SIGINT)       # what a terminal does: the whole process group
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0 and "interrupted" not in err:
        pytest.skip("the conversion had finished when Ctrl-C arrived (its exit phase)")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted" in err
    recs = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert 0 < len(recs) < 48
    time.sleep(0.5)
    assert not [k for k in kids if _alive(k)]
    r = cli("convert", big_corpus, "--out", out, *HEAVY, "--workers", "2", "--pool", "process",
            "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["files"] == 48 and s["skipped_unchanged"] >= len(recs)
    fresh = tmp_path / "fresh"
    assert cli("convert", big_corpus, "--out", fresh, *HEAVY).returncode == 0
    assert tree(out) == tree(fresh)


def test_manifest_damage_is_ignored_said_once_and_redone(corpus, tmp_path):
    out = tmp_path / "out"
    assert cli("convert", corpus, "--out", out, "--backend", "cpu").returncode == 0
    m = out / "manifest.jsonl"
    lines = m.read_bytes().splitlines(True)
    first = json.loads(lines[0])
    broken = dict(first, files=None)
    m.write_bytes(b"".join(lines[1:]) + b'{"exam": "x\xff\xfe"}\n' + b"[1, 2]\n"
                  + json.dumps(broken).encode() + b"\n" + b'{"exam": "torn", "sta')
    r = cli("convert", corpus, "--out", out, "--backend", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    s = json.loads(r.stdout)
    assert s["manifest_damaged_lines"] == 4 and s["files"] == 6
    assert s["skipped_unchanged"] == 5                 # the exam with "files": null is redone
    assert "4 damaged line(s) of manifest.jsonl ignored" in r.stderr
    # the new record did not glue onto the torn line: it parses on its own line
    tail = m.read_bytes().splitlines()
    assert json.loads(tail[-1])["exam"] == first["exam"]
    r = cli("convert", corpus, "--out", out, "--backend", "cpu", "--json")
    assert json.loads(r.stdout)["skipped_unchanged"] == 6


def test_an_exam_that_fails_on_a_rerun_leaves_nothing_behind(corpus, tmp_path):
    import shutil
    src = tmp_path / "in"
    shutil.copytree(corpus, src)
    out = tmp_path / "out"
    assert cli("convert", src, "--out", out, "--backend", "cpu", "--format", "boxes,table",
               "--instances").returncode == 0
    victim = sorted(src.glob("*.seg.nrrd"))[2]
    exam = victim.name.split(".")[0].rsplit("_", 1)[1]
    assert list((out / "labels").rglob(f"{exam}_*.txt"))
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 200])         # truncated payload: fails in decoding
    r = cli("convert", src, "--out", out, "--backend", "cpu", "--format", "boxes,table",
            "--instances")
    assert r.returncode == 1 and victim.name in r.stderr
    assert not list((out / "labels").rglob(f"{exam}_*.txt"))
    fresh = tmp_path / "fresh"
    assert cli("convert", src, "--out", fresh, "--backend", "cpu", "--format", "boxes,table",
               "--instances").returncode == 1
    assert tree(out) == tree(fresh)


def test_only_this_tools_temporaries_are_cleaned(corpus, tmp_path):
    out = tmp_path / "out"
    (out / "labels" / "train").mkdir(parents=True)
    mine = out / ".notes.txt.tmp123"                        # a user's file of that shape
    mine.write_text("keep me")
    stale = out / "labels" / "train" / ".x_1.txt.tmp999-gpuconv"  # left by a killed run
    stale.write_text("partial")
    assert cli("convert", corpus, "--out", out, "--backend", "cpu").returncode == 0
    assert mine.read_text() == "keep me" and not stale.exists()


def test_unusable_output_locations_are_one_line_and_exit_2(corpus, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, needle in ((afile, "not a folder"), (afile / "sub", "under a file")):
        r = cli("convert", corpus, "--out", out, "--backend", "cpu")
        assert r.returncode == 2, r.stderr
        _one_error_line(r.stderr, needle, str(afile))
    with pytest.raises(gpuconv.errors.InputError, match="not a folder"):
        gpuconv.convert([corpus], afile, backend="cpu")


def test_a_full_disk_is_one_line_per_exam_then_a_run_level_line(corpus, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()})")
    try:
        (mnt / "filler").write_bytes(b"\0" * 60_000)
        r = cli("convert", corpus, "--out", mnt / "out", "--backend", "cpu", "--write-empty")
        assert r.returncode in (1, 2), r.stderr
        assert "Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert lines and all(ln.startswith("error: ") for ln in lines), r.stderr
        assert any("No space left" in ln for ln in lines)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_unknown_backend_and_bad_settings_are_one_line_naming_the_flag(corpus, tmp_path):
    for args, needle in ((["--backend", "foo"], "--backend: unknown backend 'foo'"),
                         (["--connectivity", "5"], "--connectivity: must be 4 or 8"),
                         (["--val-fraction", "2"], "--val-fraction: must be between 0 and 1"),
                         (["--format", "nope"], "--format: unknown format 'nope'")):
        r = cli("convert", corpus, "--out", tmp_path / "o", *args)
        assert r.returncode == 2, r.stderr
        _one_error_line(r.stderr, needle)
    assert not (tmp_path / "o").exists()
    with pytest.raises(gpuconv.errors.OptionError, match="^connectivity: must be 4 or 8"):
        gpuconv.convert([corpus], tmp_path / "o", connectivity=5)
    r = cli("-h")
    assert r.returncode == 0 and "convert" in r.stdout
    r = cli("convert", "-h")
    assert r.returncode == 0 and "--out" in r.stdout


def _sigint_disposition():
    return int(signal.getsignal(signal.SIGINT))


def test_forkserver_workers_ignore_sigint_from_their_first_instruction():
    """Before any pool initializer runs, a forked worker already ignores the terminal's SIGINT
    (the forkserver hands its workers the handler the preload module set): a worker started
    during Ctrl-C must not die and break the pool (seen: a run that hung after Ctrl-C)."""
    from concurrent.futures import ProcessPoolExecutor

    from gpuconv.conversion.process_pool import _context
    ctx = _context()
    if ctx.get_start_method() != "forkserver":
        pytest.skip("no forkserver on this platform")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        assert pool.submit(_sigint_disposition).result(timeout=60) == int(signal.SIG_IGN)
