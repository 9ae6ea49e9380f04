"""Bulk conversion: resumable manifest, kill-and-resume, one-table output, a real Dask cluster."""

import csv
import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gpuconv
from gpuconv.conversion.stages import Stage, run_stages
from gpuconv.dataset.synth import synth_corpus


def _outputs(root: Path) -> list[str]:
    """Relative paths of the files a user keeps (labels, dataset.yaml, tables)."""
    keep = []
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and (rel.startswith("labels/") or rel in ("dataset.yaml", "boxes.csv",
                                                                 "instances.csv")):
            keep.append(rel)
    return sorted(keep)


def assert_same_outputs(a: Path, b: Path):
    files = _outputs(a)
    assert files == _outputs(b)
    assert files, "nothing was written"
    _, mismatch, errors = filecmp.cmpfiles(a, b, [f for f in files if f != "dataset.yaml"],
                                           shallow=False)
    assert not mismatch and not errors, mismatch
    # dataset.yaml names its own folder in `path:`; everything else must match
    ya = (a / "dataset.yaml").read_text().splitlines()[1:]
    yb = (b / "dataset.yaml").read_text().splitlines()[1:]
    assert ya == yb


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    synth_corpus(d, n=6, shape=(64, 48, 10), seed=11)
    return d


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    s = gpuconv.convert([corpus], out, split_csv=corpus / "split.csv", backend="cpu",
                        fmt="boxes,table", workers=1, instances=True, progress=False)
    assert s["failed"] == 0 and s["boxes"] > 0
    return out


def test_convert_instances_match_scipy_3d_labelling(corpus, reference):
    """instances.csv from convert: per exam and class, the voxel counts of 26-connected 3D
    components equal scipy's, and volume_mm3 = voxels x the voxel size from the header."""
    import nrrd
    import numpy as np
    from scipy import ndimage
    rows = list(csv.DictReader(open(reference / "instances.csv")))
    names = json.loads((reference / "summary.json").read_text())["classes"]
    structure = np.ones((3, 3, 3), bool)
    for p in sorted(corpus.glob("*.seg.nrrd")):
        data, h = nrrd.read(str(p))
        exam = p.name.split("_")[1].split(".")[0]
        voxel_mm3 = abs(np.linalg.det(np.asarray(h["space directions"], float)))
        expected = {}
        for n in range(8):
            lab, k = ndimage.label(data == int(h[f"Segment{n}_LabelValue"]), structure)
            counts = sorted(np.bincount(lab.ravel())[1:].tolist())
            if counts:
                expected[h[f"Segment{n}_Name"]] = counts
        got = {}
        for r in rows:
            if r["exam"] == exam:
                got.setdefault(r["class_name"], []).append(int(r["voxels"]))
                assert float(r["volume_mm3"]) == pytest.approx(int(r["voxels"]) * voxel_mm3,
                                                               abs=1e-6)
                assert names[int(r["class_id"])] == r["class_name"]
        assert {c: sorted(v) for c, v in got.items()} == expected


def victim_exam(p):
    return p.name.split("_")[1].split(".")[0]


def victim_split(corpus, p):
    rows = dict(line.split(",") for line in (corpus / "split.csv").read_text().split()[1:])
    return rows[victim_exam(p)].replace("test", "val")


def test_manifest_skips_unchanged_and_redoes_changed(corpus, reference, tmp_path):
    import shutil
    work = tmp_path / "c"
    shutil.copytree(corpus, work)
    out = tmp_path / "out"
    kw = dict(split_csv=work / "split.csv", backend="cpu", fmt="boxes,table", instances=True,
              progress=False)
    assert gpuconv.convert([work], out, **kw)["skipped_unchanged"] == 0
    assert gpuconv.convert([work], out, **kw)["skipped_unchanged"] == 6
    # change one input: that exam, and only it, is redone
    import nrrd
    victim = sorted(work.glob("*.seg.nrrd"))[-1]
    data, header = nrrd.read(str(victim))
    data[0, 0, 0] = int(header["Segment0_LabelValue"])   # one more voxel, same segments
    nrrd.write(str(victim), data, header)
    s = gpuconv.convert([work], out, **kw)
    assert s["skipped_unchanged"] == 5
    assert (out / "labels" / victim_split(work, victim) / f"{victim_exam(victim)}_1.txt").exists()
    # an option change redoes everything, and so does --force
    assert gpuconv.convert([work], out, write_empty=True, **kw)["skipped_unchanged"] == 0
    assert gpuconv.convert([work], out, write_empty=True, force=True,
                           **kw)["skipped_unchanged"] == 0
    # back to the original input and options: identical to a clean run
    shutil.copy(corpus / victim.name, victim)
    gpuconv.convert([work], out, **kw)
    assert_same_outputs(out, reference)


def test_table_format_matches_label_files(reference):
    rows = list(csv.DictReader(open(reference / "boxes.csv")))
    from_files = {}
    for p in (reference / "labels").rglob("*.txt"):
        from_files[p.name] = p.read_text().splitlines()
    from_table = {}
    for r in rows:
        from_table.setdefault(r["file"], []).append(
            f"{r['class_id']} {r['cx']} {r['cy']} {r['w']} {r['h']}")
    assert from_table == from_files
    pq = pytest.importorskip("pyarrow.parquet")
    assert pq.read_table(reference / "boxes.parquet").num_rows == len(rows)


def test_kill_and_resume_gives_the_files_of_a_clean_run(tmp_path):
    corpus = tmp_path / "corpus"
    synth_corpus(corpus, n=40, shape=(256, 256, 48), seed=3)
    clean = tmp_path / "clean"
    gpuconv.convert([corpus], clean, split_csv=corpus / "split.csv", backend="cpu",
                    fmt="boxes,table", instances=True, progress=False)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "gpuconv", "convert", str(corpus), "--out", str(out),
           "--split", str(corpus / "split.csv"), "--backend", "cpu", "--format", "boxes,table",
           "--instances", "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_text().count("\n") >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = manifest.read_text().count("\n")
    assert 3 <= done_before < 40
    assert not (out / "summary.json").exists()
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_unchanged"] >= 3 and summary["files"] == 40
    assert_same_outputs(out, clean)


@pytest.fixture(scope="module")
def cluster():
    """A real dask.distributed cluster: scheduler and 2 worker processes on loopback."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as c:
        yield c


def test_dask_local_cluster_gives_the_same_files(corpus, reference, tmp_path, cluster):
    out = tmp_path / "dask"
    s = gpuconv.convert([corpus], out, split_csv=corpus / "split.csv", fmt="boxes,table",
                        instances=True, scheduler=cluster.scheduler_address, batch_size=2,
                        progress=False)
    assert s["backend"] == "dask" and s["files"] == 6 and s["failed"] == 0
    assert_same_outputs(out, reference)
    # resumed on the cluster: nothing to redo
    s = gpuconv.convert([corpus], out, split_csv=corpus / "split.csv", fmt="boxes,table",
                        instances=True, scheduler=cluster.scheduler_address, progress=False)
    assert s["skipped_unchanged"] == 6


def test_dask_reports_a_bad_file_and_converts_the_rest(corpus, tmp_path, cluster):
    import shutil
    work = tmp_path / "c"
    shutil.copytree(corpus, work)
    bad = sorted(work.glob("*.seg.nrrd"))[2]
    blob = bad.read_bytes()
    bad.write_bytes(blob[:-30])   # truncated gzip: the header still parses
    s = gpuconv.convert([work], tmp_path / "o", split_csv=work / "split.csv",
                        scheduler=cluster.scheduler_address, batch_size=3, progress=False)
    assert s["files"] == 5 and s["failed"] == 1
    assert bad.name in s["failures"][0]["file"] and "truncated" in s["failures"][0]["reason"]


def test_stage_runner_isolates_failures_and_bounds_the_queue():
    import threading
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def produce(item, _):
        nonlocal in_flight, peak
        if item == 3:
            raise ValueError("bad item")
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        return item * 10

    def consume(item, value):
        nonlocal in_flight
        time.sleep(0.002)
        with lock:
            in_flight -= 1
        return value + 1

    outcomes = list(run_stages(range(50), [Stage("produce", produce, 4),
                                           Stage("consume", consume, 1)], depth=2))
    assert len(outcomes) == 50
    bad = [o for o in outcomes if o.error is not None]
    assert [o.item for o in bad] == [3] and bad[0].stage == "produce"
    assert sorted(o.value for o in outcomes if o.error is None) == [
        i * 10 + 1 for i in range(50) if i != 3]
    # produced-but-not-consumed items: the queue (2) + one per producer thread (4) + one consuming
    assert peak <= 2 + 4 + 1


# ---- --pool process: worker processes (gpuconv/processes.py) ----------------------------------

def test_process_pool_gives_the_same_files_and_resumes(corpus, reference, tmp_path):
    out = tmp_path / "proc"
    s = gpuconv.convert([corpus], out, split_csv=corpus / "split.csv", fmt="boxes,table",
                        instances=True, workers=2, pool="process", progress=False)
    assert s["pool"] == "process" and s["files"] == 6 and s["failed"] == 0
    assert_same_outputs(out, reference)
    s = gpuconv.convert([corpus], out, split_csv=corpus / "split.csv", fmt="boxes,table",
                        instances=True, workers=2, pool="process", progress=False)
    assert s["skipped_unchanged"] == 6
    assert_same_outputs(out, reference)


def test_process_pool_polygons_match_threads(corpus, tmp_path):
    outs = {}
    for pool in ("thread", "process"):
        outs[pool] = tmp_path / pool
        s = gpuconv.convert([corpus], outs[pool], split_csv=corpus / "split.csv",
                            fmt="polygons", workers=2, pool=pool, progress=False)
        assert s["pool"] == pool and s["failed"] == 0 and s["boxes"] > 0
    assert_same_outputs(outs["process"], outs["thread"])


def test_process_pool_reports_a_bad_file_and_converts_the_rest(corpus, tmp_path):
    import shutil
    work = tmp_path / "c"
    shutil.copytree(corpus, work)
    bad = sorted(work.glob("*.seg.nrrd"))[4]
    bad.write_bytes(bad.read_bytes()[:-30])   # truncated gzip: the header still parses
    s = gpuconv.convert([work], tmp_path / "o", split_csv=work / "split.csv", workers=2,
                        pool="process", progress=False)
    assert s["pool"] == "process" and s["files"] == 5 and s["failed"] == 1
    assert bad.name in s["failures"][0]["file"] and "truncated" in s["failures"][0]["reason"]
    assert not list((tmp_path / "o").rglob("*.tmp*"))       # no partial files left behind
    labels = {p.name.rsplit("_", 1)[0] for p in (tmp_path / "o" / "labels").rglob("*.txt")}
    assert bad.name.split(".")[0] not in labels and len(labels) == 5


def test_choose_pool():
    from gpuconv.errors import InputError
    from gpuconv.conversion.options import PROCESS_MIN_FILES_PER_WORKER as m
    from gpuconv.conversion.options import choose_pool
    assert choose_pool("thread", 16, 10_000) == "thread"
    assert choose_pool("process", 2, 1) == "process"
    assert choose_pool("auto", 16, 16 * m) == "process"
    assert choose_pool("auto", 16, 16 * m - 1) == "thread"
    assert choose_pool("auto", 2, 10_000) == "thread"      # 2 cores: threads start at once
    assert choose_pool("auto", 16, 10_000, "gpu") == "thread"   # one CUDA context
    assert choose_pool("process", 16, 10_000, "gpu") == "process"
    with pytest.raises(InputError, match="pool: unknown pool 'fork'"):
        choose_pool("fork", 4, 100)


def test_process_pool_never_reruns_the_callers_script(corpus, tmp_path):
    """multiprocessing re-imports __main__ in new workers; a script without a main guard (or one
    read from stdin) must still convert exactly once."""
    marker = tmp_path / "runs.txt"
    script = (f"import gpuconv\n"
              f"open({str(marker)!r}, 'a').write('run\\n')\n"
              f"s = gpuconv.convert([{str(corpus)!r}], {str(tmp_path / 'o')!r}, workers=2,\n"
              f"                    pool='process', progress=False)\n"
              f"print(s['pool'], s['files'], s['failed'])\n")
    (tmp_path / "noguard.py").write_text(script)
    for how in ("file", "stdin"):
        marker.unlink(missing_ok=True)
        args = [sys.executable, str(tmp_path / "noguard.py")] if how == "file" else \
            [sys.executable, "-"]
        r = subprocess.run(args, input=None if how == "file" else script, capture_output=True,
                           text=True, timeout=120, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.split() == ["process", "6", "0"], (how, r.stdout, r.stderr[-2000:])
        assert marker.read_text() == "run\n", how


def test_auto_never_picks_a_configuration_measured_slower():
    """--backend auto on a machine with a usable GPU: where worker processes pay off, the CPU
    backend in processes (278 vs 47 scans/s measured on the H100 server); otherwise the GPU with
    threads; without a GPU, the CPU; an explicit backend is never overridden."""
    from gpuconv.conversion.options import PROCESS_MIN_FILES_PER_WORKER as m
    from gpuconv.conversion.options import choose_execution
    usable = lambda: None                                         # noqa: E731
    missing = lambda: "CuPy is not installed"                     # noqa: E731
    b, p, why = choose_execution("auto", "auto", 16, 16 * m, usable)
    assert (b, p) == ("cpu", "process") and "278 scans/s" in why
    b, p, why = choose_execution("auto", "auto", 16, 10, usable)
    assert (b, p) == ("gpu", "thread") and "GPU" in why
    b, p, why = choose_execution("auto", "process", 2, 3, usable)  # processes asked for: CPU
    assert (b, p) == ("cpu", "process")
    b, p, why = choose_execution("auto", "auto", 2, 100, missing)
    assert (b, p) == ("cpu", "thread") and "CuPy is not installed" in why
    assert choose_execution("gpu", "auto", 16, 16 * m, usable)[:2] == ("gpu", "thread")
    assert choose_execution("cpu", "auto", 16, 16 * m, usable) == ("cpu", "process", None)


def test_auto_backend_is_resolved_once_for_every_worker(tmp_path, monkeypatch):
    """Where auto picks CPU worker processes on a GPU machine, the workers get 'cpu', not
    'auto' (each would make its own CUDA context: the slowest configuration measured), and the
    parent makes no GPU backend of its own."""
    from gpuconv.conversion import pipeline, process_pool
    from gpuconv.conversion.options import PROCESS_MIN_FILES_PER_WORKER as m
    from gpuconv.dataset.synth import synth_corpus
    synth_corpus(tmp_path / "in", n=4 * m, shape=(12, 10, 2), seed=1)
    monkeypatch.setattr(pipeline, "gpu_unavailable_reason", lambda: None)   # "a GPU is here"
    made = []
    monkeypatch.setattr(pipeline, "backend_from", lambda spec: made.append(spec))
    seen = {}
    real = process_pool.run_on_processes

    def spy(jobs, skip, opts, writer, workers, **kw):
        seen["backend"] = opts.backend
        return real(jobs, skip, opts, writer, workers, **kw)
    monkeypatch.setattr(process_pool, "run_on_processes", spy)
    s = gpuconv.convert([str(tmp_path / "in")], tmp_path / "o", workers=4, progress=False)
    assert s["failed"] == 0 and s["pool"] == "process" and s["backend"] == "cpu"
    assert seen["backend"] == "cpu" and made == []
    assert "278 scans/s" in s["auto_choice"]
