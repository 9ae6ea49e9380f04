"""``--pool hybrid`` (conversion/hybrid_pool.py, issue 18) with the CPU backend as the labeller:
byte-identical outputs to the thread pool, resume, a bad file failing alone, the labeller or a
worker killed with SIGKILL (one line per exam, no shared-memory block left, no hang), the
converting process killed (every child goes), Ctrl-C (exit 130, the same command resumes)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gpuconv
from gpuconv.conversion.hybrid_pool import IN_FLIGHT, SHM_PREFIX
from conftest import alive as _alive, descendants as _descendants

SKIP = {"manifest.jsonl", "summary.json"}
N = 8


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gpuconv", *map(str, args)],
                          capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)


def tree(root: Path) -> dict[str, bytes]:
    """Every file a run leaves (dataset.yaml without its `path:` line), summary and manifest
    aside."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in SKIP:
            data = p.read_bytes()
            if p.name == "dataset.yaml":
                data = b"\n".join(data.splitlines()[1:])
            out[p.relative_to(root).as_posix()] = data
    return out


def blocks_of(pid: int) -> list[str]:
    """The shared-memory blocks a run in process ``pid`` made (hybrid_pool.shm_name)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return []
    return sorted(p.name for p in shm.iterdir() if p.name.startswith(f"{SHM_PREFIX}{pid}x"))


def convert(corpus, out, pool, **kw):
    s = gpuconv.convert([corpus], out, backend="cpu", pool=pool, workers=2, progress=False,
                        **kw)
    assert s["pool"] == pool
    return s


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("hybrid") / "corpus"
    r = cli("synth", d, "-n", N, "--size", "64x48x10", "--seed", 5)
    assert r.returncode == 0, r.stderr
    return d


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The thread pool's outputs with boxes, the table and 3D instances."""
    out = tmp_path_factory.mktemp("ref") / "out"
    s = convert(corpus, out, "thread", fmt="boxes,table", instances=True)
    assert s["failed"] == 0 and s["boxes"] > 0
    return out


@pytest.mark.parametrize("fmt,instances", [("boxes,table", True), ("polygons", False)])
def test_outputs_equal_the_thread_pools_and_a_second_run_skips_all(corpus, reference, tmp_path,
                                                                   fmt, instances):
    kw = {"fmt": fmt, "instances": instances}
    if fmt == "polygons":
        kw["images"] = corpus / "ct"        # CT slices as PNGs, written by the workers too
    out = tmp_path / "hybrid"
    s = convert(corpus, out, "hybrid", **kw)
    assert s["failed"] == 0 and s["files"] == N
    assert blocks_of(os.getpid()) == []
    if fmt == "boxes,table":
        ref = reference
    else:
        ref = tmp_path / "thread"
        convert(corpus, ref, "thread", **kw)
        assert s["images"] > 0
    assert tree(out) == tree(ref)
    assert "instances.csv" in tree(out) or not instances
    again = convert(corpus, out, "hybrid", **kw)
    assert again["skipped_unchanged"] == N and again["failed"] == 0
    assert tree(out) == tree(ref)


def test_slicer_files_layered_4d_included(slicer_data, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("Segmentation.seg.nrrd", "SegmentationOverlapping.seg.nrrd"):
        shutil.copy(slicer_data / name, src / name)
    outs = {}
    for pool in ("thread", "hybrid"):
        outs[pool] = tmp_path / pool
        s = convert(src, outs[pool], pool, fmt="polygons,table", instances=True)
        assert s["failed"] == 0 and s["files"] == 2 and s["label_files"] > 0
    assert tree(outs["hybrid"]) == tree(outs["thread"])


def test_a_truncated_file_fails_alone_with_one_line_and_no_partial_files(corpus, reference,
                                                                         tmp_path):
    src = tmp_path / "in"
    shutil.copytree(corpus, src)
    victim = sorted(src.glob("*.seg.nrrd"))[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 200])
    exam = victim.name.split(".")[0].rsplit("_", 1)[1]
    out = tmp_path / "out"
    r = cli("convert", src, "--out", out, "--backend", "cpu", "--pool", "hybrid", "--workers",
            2, "--format", "boxes,table", "--instances", "--json")
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and victim.name in lines[0], lines
    assert "Traceback" not in r.stderr
    s = json.loads(r.stdout)
    assert s["files"] == N - 1 and s["failed"] == 1
    got = tree(out)
    assert [f for f in got if Path(f).name.startswith(f"{exam}_") or "-gpuconv" in f] == []
    ref = {f: v for f, v in tree(reference).items() if f.startswith("labels/")
           and not Path(f).name.startswith(f"{exam}_")}
    assert ref and {f: v for f, v in got.items() if f.startswith("labels/")} == ref
    assert blocks_of(os.getpid()) == []


# --- processes killed mid-run: a slowed CPU labeller that says which process it runs in -------

SLOW_BACKEND = '''
import os, time
from gpuconv.backends.cpu import CpuBackend

class SlowBackend(CpuBackend):
    """The CPU backend, slowed down, writing the labelling process's pid and how many blocks
    the run has in /dev/shm to ``pidfile``."""

    def __init__(self, pidfile, delay, prefix):
        self.pidfile, self.delay, self.prefix = pidfile, delay, prefix

    def slice_components(self, layers, connectivity=8):
        blocks = [n for n in os.listdir("/dev/shm") if n.startswith(self.prefix)]
        with open(self.pidfile, "a") as f:
            f.write(f"{os.getpid()} {len(blocks)}\\n")
        time.sleep(self.delay)
        return super().slice_components(layers, connectivity)
'''

RUN_SLOW = '''
import json, os, sys
sys.path.insert(0, sys.argv[1])
import gpuconv
from gpuconv.errors import InputError
from slow_backend import SlowBackend
corpus, out, pidfile = sys.argv[2:5]
fails, result = [], {}
try:
    slow = SlowBackend(pidfile, 0.25, f"gpuconv-{os.getpid()}x")
    s = gpuconv.convert([corpus], out, backend=slow, pool="hybrid", workers=2, progress=False,
                        fmt="boxes,table", instances=True,
                        on_error=lambda p, r: fails.append([os.path.basename(str(p)), r]))
    result["summary"] = {k: s[k] for k in ("files", "failed", "interrupted")}
except InputError as exc:
    result["error"] = str(exc)
result["fails"] = fails
print(json.dumps(result))
'''


def _gone(pids, seconds: float = 15) -> list[int]:
    deadline = time.time() + seconds
    while time.time() < deadline and any(_alive(k) for k in pids):
        time.sleep(0.05)
    return [k for k in pids if _alive(k)]


def _slow_run(tmp_path, src):
    """The run in a process of its own; returns (process, labeller pid) once the labeller has
    taken two volumes."""
    pytest.importorskip("psutil")
    (tmp_path / "slow_backend.py").write_text(SLOW_BACKEND)
    (tmp_path / "run_slow.py").write_text(RUN_SLOW)
    pidfile = tmp_path / "labeller.pid"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "run_slow.py"), str(tmp_path),
                             str(src), str(tmp_path / "out"), str(pidfile)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        pids = pidfile.read_text().splitlines() if pidfile.exists() else []
        if len(pids) >= 2:
            return proc, int(pids[0].split()[0])
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"the labeller never started: {proc.communicate()}")


def _finish(proc) -> dict:
    try:
        stdout, stderr = proc.communicate(timeout=60)   # no hang
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the run hung")
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    return json.loads(stdout)


def test_the_labeller_killed_fails_the_exams_it_had_and_stops_the_run(corpus, reference,
                                                                      tmp_path):
    src = tmp_path / "in"
    shutil.copytree(corpus, src)
    proc, labeller = _slow_run(tmp_path, src)
    kids = _descendants(proc.pid)
    os.kill(labeller, signal.SIGKILL)
    result = _finish(proc)
    assert "summary" not in result
    assert result["error"].startswith("the labeller process died (killed by SIGKILL); the run "
                                      "stopped: "), result
    assert "run the same command again" in result["error"]
    fails = result["fails"]
    assert 1 <= len(fails) <= 4, fails          # at most 2 volumes per worker were handed over
    for _name, reason in fails:
        assert reason == "the labeller process died (killed by SIGKILL)", reason
    assert blocks_of(proc.pid) == []
    assert not _gone([k for k in kids if k != labeller])
    r = cli("convert", src, "--out", tmp_path / "out", "--backend", "cpu", "--pool", "hybrid",
            "--workers", 2, "--format", "boxes,table", "--instances", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["files"] == N and s["skipped_unchanged"] < N
    assert tree(tmp_path / "out") == tree(reference)


def test_a_worker_killed_fails_its_batch_and_the_others_convert(tmp_path):
    psutil = pytest.importorskip("psutil")
    src = tmp_path / "in"
    r = cli("synth", src, "-n", 12, "--size", "48x40x6", "--seed", 9)
    assert r.returncode == 0, r.stderr
    proc, labeller = _slow_run(tmp_path, src)
    forkserver = psutil.Process(labeller).parent()
    workers = [c.pid for c in forkserver.children() if c.pid != labeller]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    result = _finish(proc)
    s, fails = result["summary"], result["fails"]
    assert 1 <= s["failed"] <= 4 and s["files"] + s["failed"] == 12, result   # a batch is 4
    for _name, reason in fails:
        assert reason == "worker process died (killed by SIGKILL)", reason
    assert blocks_of(proc.pid) == []
    # memory stays bounded: never more than IN_FLIGHT volumes per worker handed over
    seen = [int(ln.split()[1]) for ln in (tmp_path / "labeller.pid").read_text().splitlines()]
    assert seen and max(seen) <= 2 * IN_FLIGHT, seen


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory):
    """Enough work that a run with two workers is still going after a second or two."""
    d = tmp_path_factory.mktemp("hybrid_big") / "corpus"
    r = cli("synth", d, "-n", 24, "--size", "256x256x96", "--seed", 12)
    assert r.returncode == 0, r.stderr
    return d


HEAVY = ("--backend", "cpu", "--workers", "2", "--pool", "hybrid", "--format", "polygons",
         "--instances")


def _start_cli_run(corpus, out):
    proc = subprocess.Popen([sys.executable, "-m", "gpuconv", "convert", str(corpus), "--out",
                             str(out), *HEAVY], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    kids: list[int] = []
    while time.time() < deadline and proc.poll() is None:
        kids = _descendants(proc.pid)
        labels = list((out / "labels").rglob("*.txt")) if (out / "labels").exists() else []
        if len(kids) >= 4 and labels:   # forkserver, labeller, 2 workers (+ resource tracker)
            break
        time.sleep(0.02)
    return proc, kids


def test_sigkill_of_the_parent_takes_every_child_with_it(big_corpus, tmp_path):
    proc, kids = _start_cli_run(big_corpus, tmp_path / "out")
    if proc.poll() is not None:
        pytest.skip("the run ended before it could be killed")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not _gone(kids), "processes outlived the converting process"
    deadline = time.time() + 10     # the resource tracker, last to go, unlinks what was left
    while time.time() < deadline and blocks_of(proc.pid):
        time.sleep(0.05)
    assert blocks_of(proc.pid) == []


def test_ctrl_c_exits_130_and_the_same_command_resumes(big_corpus, tmp_path):
    out = tmp_path / "out"
    proc, kids = _start_cli_run(big_corpus, out)
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
    assert 0 < len(recs) < 24 and all(r["status"] == "ok" for r in recs)
    assert not _gone(kids, 5)
    assert blocks_of(proc.pid) == []
    r = cli("convert", big_corpus, "--out", out, *HEAVY, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["files"] == 24 and s["skipped_unchanged"] >= len(recs) and s["failed"] == 0


def test_a_run_closed_early_ends_its_processes_promptly_and_leaves_no_block(corpus, tmp_path):
    """What ``convert`` does when the manifest cannot be written: it closes the executor."""
    import multiprocessing
    from gpuconv.conversion.exam_unit import ExamJob, LabelOptions
    from gpuconv.conversion.exam_writer import ExamWriter
    from gpuconv.conversion.hybrid_pool import run_on_hybrid
    from gpuconv.dataset.exams import exam_id
    from gpuconv.dataset.plan import expand_inputs, plan_run
    plan = plan_run(expand_inputs([corpus]))
    jobs = [ExamJob(exam_id(p), p, plan.split_of[exam_id(p)], plan.headers[p])
            for p in sorted(plan.headers, key=exam_id)]
    writer = ExamWriter(tmp_path / "out", plan.class_map.names, ("boxes",), False)
    outcomes = run_on_hybrid(jobs, {}, LabelOptions(plan.class_map, backend="cpu"), writer, 2)
    assert next(outcomes).status == "ok"
    t0 = time.time()
    outcomes.close()
    assert time.time() - t0 < 20
    assert not [p for p in multiprocessing.active_children()
                if p.name.startswith(("gpuconv-hybrid", "gpuconv-labeller"))]
    assert blocks_of(os.getpid()) == []


def test_auto_never_picks_hybrid_and_a_gpu_labeller_without_a_gpu_is_one_line(corpus, tmp_path):
    from gpuconv.conversion.options import choose_execution, choose_pool
    for workers, files in ((1, 1), (4, 100), (16, 1000)):
        for be in ("cpu", "gpu"):
            assert choose_pool("auto", workers, files, be) != "hybrid"
        assert choose_execution("auto", "auto", workers, files, lambda: None)[1] != "hybrid"
        assert choose_execution("cpu", "hybrid", workers, files)[1] == "hybrid"
    if gpuconv.backends.gpu_unavailable_reason() is None:
        pytest.skip("a GPU is usable here")
    r = cli("convert", corpus, "--out", tmp_path / "o", "--backend", "gpu", "--pool", "hybrid")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr
