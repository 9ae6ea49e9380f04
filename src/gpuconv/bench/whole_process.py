"""gpuconv against the scripts a skilled user writes instead, whole process, cold and warm.

- ``cc3d-script`` (``cc3d_script.py``: pynrrd + cc3d per slice, the same label files) against
  ``gpuconv convert`` on the issue-15 workloads: one small file, two files, a dense multi-organ
  map, two 40 % maps (``WHOLE_PROCESS_PLAN``) and the sparse corpus;
- ``kdtree-script`` (``agree_script.py``: pynrrd + the ASOCA challenge's cKDTree HD95) against
  ``gpuconv agree --hd95 asoca_challenge`` on two vessel pairs 512x512x300 (0.2 % and 2 %).

Cold = a fresh process per run, as a user runs it (interpreter, imports, Numba or the C
library, the exit), timed from the parent (wall) with the child's CPU time and peak RSS from
``os.wait4``.  Warm = the same work called again inside this process after a warm-up run.
Runs are interleaved (gpuconv, script, gpuconv, ...) so drifting load hits both alike; the
ratio of each pair is kept and the report gives its median and range.  Before timing, one
output of each pair is compared: label files byte for byte, agreement numbers exactly.  The
``python -X importtime`` profile of a box conversion is recorded too (top imports, and
whether scipy or numba were imported at all).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gpuconv.bench import measure

CC3D_SCRIPT = Path(__file__).with_name("cc3d_script.py")
AGREE_SCRIPT = Path(__file__).with_name("agree_script.py")



def _warm_pairs(ours_once, theirs_once, repeats: int):
    """In-process (warm) timings of two contenders, one untimed warm-up each, then ``repeats``
    interleaved pairs: (gpuconv walls, script walls, gpuconv peak MB, script peak MB)."""
    ours_once()
    theirs_once()
    warm_g, warm_s, peak_g, peak_s = [], [], 0.0, 0.0
    for _ in range(repeats):
        with measure.PeakMemory() as m:
            warm_g.append({"wall": ours_once()})
        peak_g = max(peak_g, m.peak_mb)
        with measure.PeakMemory() as m:
            warm_s.append({"wall": theirs_once()})
        peak_s = max(peak_s, m.peak_mb)
    return warm_g, warm_s, peak_g, peak_s

def _child(cmd: list[str], cwd=None) -> dict:
    """Run ``cmd``; wall seconds (parent clock), CPU seconds and peak RSS MB of the child."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    # communicate() reaped it: its rusage is in RUSAGE_CHILDREN; take it from wait4 instead
    return {"wall": wall, "rc": p.returncode, "stdout": out.decode(errors="replace"),
            "stderr": err.decode(errors="replace")}


_LAUNCHER = """
import json, os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    try:
        os.execv(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(out, "w") as fh:
    json.dump({"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024,
               "rc": os.waitstatus_to_exitcode(status)}, fh)
"""


def _timed_child(cmd: list[str]) -> dict:
    """Run ``cmd`` (stdout discarded) from a small launcher process and return its wall
    seconds, CPU seconds and peak RSS (MB) from ``os.wait4``.  The launcher (``python -S``,
    ~10 MB) forks the command: Linux carries a process's peak RSS across fork and exec, so a
    command forked from this (large) benchmark process would report the benchmark's peak."""
    import tempfile
    fd, res = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        p = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, res, *cmd],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        r = json.loads(Path(res).read_text() or "{}") if p.returncode == 0 else {}
    finally:
        os.unlink(res)
    if not r:
        raise RuntimeError(f"launcher failed for {cmd[:4]}: {p.stderr.decode()[-500:]}")
    r["stderr"] = p.stderr.decode(errors="replace")[-2000:]
    return r


def _label_files(root: Path) -> dict[str, bytes]:
    """{file name: bytes} of every label file under ``root`` (split folders ignored)."""
    return {p.name: p.read_bytes() for p in sorted(Path(root).rglob("*.txt"))
            if p.parent.name != ".parts"}


def _stat(values: list[float]) -> dict:
    return measure.summarise(values) if values else None


def _pair_record(name: str, ours: list[dict], theirs: list[dict], key: str) -> dict:
    ratios = [t[key] / o[key] for o, t in zip(ours, theirs) if o[key] > 0]
    return {"ours": _stat([o[key] for o in ours]), "script": _stat([t[key] for t in theirs]),
            "script_over_gpuconv": _stat(ratios)}


def _gpuconv_convert_cmd(folder: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "gpuconv", "convert", str(folder), "--out", str(out),
            "--no-progress", "--workers", str(workers), "--backend", "cpu"]


def _script_cmd(paths, out: Path) -> list[str]:
    return [sys.executable, str(CC3D_SCRIPT), str(out), *map(str, paths)]


def convert_pair(workload, scratch: Path, repeats: int, workers: int, log) -> dict:
    """gpuconv convert vs the cc3d script on one workload (its files share one folder)."""
    folder = Path(workload.paths[0]).parent
    scratch.mkdir(parents=True, exist_ok=True)
    counter = [0]

    def fresh() -> Path:
        counter[0] += 1
        return scratch / f"run-{counter[0]}"

    # one untimed run of each (page cache, the C library, Numba's cache), then compare outputs
    g_out, s_out = fresh(), fresh()
    g = _child(_gpuconv_convert_cmd(folder, g_out, workers))
    s = _child(_script_cmd(workload.paths, s_out))
    if g["rc"] != 0 or s["rc"] != 0:
        raise RuntimeError(f"{workload.name}: warm-up failed: gpuconv rc {g['rc']} "
                           f"{g['stderr'][-500:]}; script rc {s['rc']} {s['stderr'][-500:]}")
    ours, theirs = _label_files(g_out), _label_files(s_out)
    identical = ours == theirs
    n_files = len(ours)
    boxes = sum(v.count(b"\n") for v in ours.values())
    shutil.rmtree(g_out, ignore_errors=True)
    shutil.rmtree(s_out, ignore_errors=True)

    cold_g, cold_s = [], []
    for _ in range(repeats):
        g_out, s_out = fresh(), fresh()   # a new folder per run: no run deletes before another
        for cmd, acc in ((_gpuconv_convert_cmd(folder, g_out, workers), cold_g),
                         (_script_cmd(workload.paths, s_out), cold_s)):
            r = _timed_child(cmd)
            if r["rc"] != 0:
                raise RuntimeError(f"{workload.name}: {cmd[1:3]} exited {r['rc']}: "
                                   f"{r['stderr'][-500:]}")
            acc.append(r)
        shutil.rmtree(g_out, ignore_errors=True)
        shutil.rmtree(s_out, ignore_errors=True)

    # warm: the same calls inside this process
    import gpuconv
    from gpuconv.bench import cc3d_script

    def ours_once():
        out = fresh()
        t0 = time.perf_counter()
        gpuconv.convert([str(folder)], out, workers=workers, backend="cpu", progress=False)
        dt = time.perf_counter() - t0
        shutil.rmtree(out, ignore_errors=True)
        return dt

    def theirs_once():
        out = fresh()
        out.mkdir(parents=True)
        t0 = time.perf_counter()
        for p in workload.paths:
            cc3d_script.convert_file(str(p), str(out))
        dt = time.perf_counter() - t0
        shutil.rmtree(out, ignore_errors=True)
        return dt
    warm_g, warm_s, peak_g, peak_s = _warm_pairs(ours_once, theirs_once, repeats)
    rec = {
        "workload": workload.name, "kind": "convert", "files": len(workload.paths),
        "shape": list(workload.shape), "foreground": round(workload.foreground, 4),
        "label_files": n_files, "boxes": boxes, "identical_output": identical,
        "workers": workers, "repeats": repeats,
        "cold_wall": _pair_record("wall", cold_g, cold_s, "wall"),
        "cold_cpu": _pair_record("cpu", cold_g, cold_s, "cpu"),
        "cold_peak_rss_mb": _pair_record("rss", cold_g, cold_s, "rss_mb"),
        "warm_wall": _pair_record("wall", warm_g, warm_s, "wall"),
        "warm_peak_above_start_mb": {"ours": round(peak_g, 1), "script": round(peak_s, 1)},
    }
    cw = rec["cold_wall"]
    log(f"  {workload.name}: cold gpuconv {cw['ours']['median']:.3f} s, script "
        f"{cw['script']['median']:.3f} s (x{cw['script_over_gpuconv']['median']:.2f}); "
        f"warm x{rec['warm_wall']['script_over_gpuconv']['median']:.2f}; peak RSS "
        f"{rec['cold_peak_rss_mb']['ours']['max']:.0f} vs "
        f"{rec['cold_peak_rss_mb']['script']['max']:.0f} MB; identical {identical}")
    return rec


def _agree_cmd(a: Path, b: Path) -> list[str]:
    return [sys.executable, "-m", "gpuconv", "agree", str(a), str(b), "--hd95",
            "asoca_challenge", "--backend", "cpu", "--json"]


def _agree_script_cmd(a: Path, b: Path) -> list[str]:
    return [sys.executable, str(AGREE_SCRIPT), str(a), str(b)]


def _agree_numbers(stdout: str) -> tuple[float, float]:
    doc = json.loads(stdout)
    found = []

    def walk(x):
        if isinstance(x, dict):
            if "dice" in x and "hd95_asoca_challenge" in x and isinstance(x["dice"], float):
                found.append((x["dice"], x["hd95_asoca_challenge"]))
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(doc)
    if not found:
        raise RuntimeError("gpuconv agree --json: no dice/hd95 found")
    return found[0]


def agree_pair(name: str, a: Path, b: Path, repeats: int, log) -> dict:
    g = _child(_agree_cmd(a, b))
    s = _child(_agree_script_cmd(a, b))
    if g["rc"] != 0 or s["rc"] != 0:
        raise RuntimeError(f"{name}: agree warm-up failed: {g['stderr'][-500:]} "
                           f"{s['stderr'][-500:]}")
    ours = _agree_numbers(g["stdout"])
    ref = json.loads(s["stdout"])
    identical = ours == (ref["dice"], ref["hd95"])
    cold_g, cold_s = [], []
    for _ in range(repeats):
        cold_g.append(_timed_child(_agree_cmd(a, b)))
        cold_s.append(_timed_child(_agree_script_cmd(a, b)))
    from gpuconv.analysis.agreement_files import agree_files
    from gpuconv.bench import agree_script

    def ours_once():
        t0 = time.perf_counter()
        agree_files(a, b, definitions=("asoca_challenge",), backend="cpu")
        return time.perf_counter() - t0

    def theirs_once():
        t0 = time.perf_counter()
        import io
        import contextlib
        with contextlib.redirect_stdout(io.StringIO()):
            agree_script.main([str(a), str(b)])
        return time.perf_counter() - t0
    warm_g, warm_s, peak_g, peak_s = _warm_pairs(ours_once, theirs_once, repeats)
    rec = {"workload": name, "kind": "agree", "identical_output": identical,
           "numbers": {"gpuconv": list(ours), "script": [ref["dice"], ref["hd95"]]},
           "repeats": repeats,
           "cold_wall": _pair_record("wall", cold_g, cold_s, "wall"),
           "cold_cpu": _pair_record("cpu", cold_g, cold_s, "cpu"),
           "cold_peak_rss_mb": _pair_record("rss", cold_g, cold_s, "rss_mb"),
           "warm_wall": _pair_record("wall", warm_g, warm_s, "wall"),
           "warm_peak_above_start_mb": {"ours": round(peak_g, 1), "script": round(peak_s, 1)}}
    cw = rec["cold_wall"]
    log(f"  {name}: cold gpuconv agree {cw['ours']['median']:.3f} s, script "
        f"{cw['script']['median']:.3f} s (x{cw['script_over_gpuconv']['median']:.2f}); "
        f"peak RSS {rec['cold_peak_rss_mb']['ours']['max']:.0f} vs "
        f"{rec['cold_peak_rss_mb']['script']['max']:.0f} MB; identical {identical}")
    return rec


def import_profile(path: Path, scratch: Path, workers: int) -> dict:
    """``python -X importtime -m gpuconv convert FILE``: the slowest imports (cumulative ms of
    top-level imports), their total, and whether scipy / numba / typer were imported."""
    out = scratch / "importtime"
    cmd = [sys.executable, "-X", "importtime", "-m", "gpuconv", "convert", str(path), "--out",
           str(out), "--no-progress", "--workers", str(workers), "--backend", "cpu"]
    r = _child(cmd)
    shutil.rmtree(out, ignore_errors=True)
    rows = []
    for line in r["stderr"].splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:"):].split("|")
        try:
            cum_us = int(parts[1])
        except ValueError:
            continue
        name = parts[2]
        rows.append((name.strip(), cum_us, len(name) - len(name.lstrip())))
    top = [(n, c) for n, c, indent in rows if indent <= 1]
    names = {n for n, _, _ in rows}
    return {"command": " ".join(cmd[1:]), "top_level_ms": round(sum(c for _, c in top) / 1e3, 1),
            "slowest": [{"module": n, "ms": round(c / 1e3, 1)}
                        for n, c in sorted(top, key=lambda x: -x[1])[:12]],
            "imported": {m: any(n == m or n.startswith(m + ".") for n in names)
                         for m in ("scipy", "numba", "llvmlite", "click", "typer", "pydantic",
                                   "yaml", "rich")}}


def bytecode_ready() -> bool:
    """Byte-compile the gpuconv package first, as a wheel install does: an editable install
    where ``PYTHONDONTWRITEBYTECODE=1`` (the build machine) would otherwise compile ~45 modules
    from source in every cold run, a cost no installed user pays (scripts/setup.sh does the
    same).  True when every module has its bytecode."""
    import compileall
    import gpuconv
    return bool(compileall.compile_dir(str(Path(gpuconv.__file__).parent), quiet=1))


def run_whole_process(workloads, agree_pairs, corpus, scratch: Path, repeats: int,
                      workers: int, log) -> dict:
    compiled = bytecode_ready()
    records = []
    for wl in workloads:
        records.append(convert_pair(wl, scratch / wl.name, repeats, workers, log))
    if corpus is not None:
        records.append(convert_pair(corpus, scratch / "corpus", max(1, min(repeats, 2)),
                                    workers, log))
    for name, a, b in agree_pairs:
        records.append(agree_pair(name, a, b, repeats, log))
    small = min(workloads, key=lambda w: w.voxels * len(w.paths)) if workloads else None
    prof = import_profile(small.paths[0], scratch, workers) if small else None
    return {"records": records, "import_profile": prof, "bytecode_precompiled": compiled}


def headline_rows(doc_wp: dict) -> list[dict]:
    """One row per workload: medians and ranges of the paired ratios (> 1: gpuconv ahead)."""
    rows = []
    for r in doc_wp.get("records", []):
        rows.append({
            "workload": r["workload"], "kind": r["kind"],
            "cold": r["cold_wall"]["script_over_gpuconv"],
            "cold_cpu": r["cold_cpu"]["script_over_gpuconv"],
            "warm": r["warm_wall"]["script_over_gpuconv"],
            "rss_ratio": (r["cold_peak_rss_mb"]["ours"]["max"]
                          / max(r["cold_peak_rss_mb"]["script"]["max"], 1e-9)),
            "identical": r["identical_output"]})
    return rows


def vessel_pairs(root: Path, seed: int, quick: bool) -> list[tuple[str, Path, Path]]:
    """Two annotators' vessel trees, 512x512x300 at 0.2 % and 2 % foreground (96x96x48 quick),
    written as plain gzip NRRD on an ASOCA-like grid."""
    from gpuconv.bench.workloads import (AGREE_SPACING, _sub_rng, second_annotator,
                                         vessel_tree)
    from gpuconv.io.nrrd_write import write_nrrd
    shape = (96, 96, 48) if quick else (512, 512, 300)
    out = []
    for fg, radius in ((0.002, 4), (0.02, 7)):
        name = f"vessel-pair-{fg * 100:g}%"
        rng = _sub_rng(seed, name)
        a = vessel_tree(rng, shape, fg, root_radius=radius if not quick else 3)
        b = second_annotator(rng, a)
        d = Path(root) / name
        d.mkdir(parents=True, exist_ok=True)
        pa = write_nrrd(d / "A_0001.nrrd", a, directions=np.diag(AGREE_SPACING),
                        origin=(0.0, 0.0, 0.0))
        pb = write_nrrd(d / "B_0001.nrrd", b, directions=np.diag(AGREE_SPACING),
                        origin=(0.0, 0.0, 0.0))
        out.append((name, pa, pb))
    return out


def ratio_text(stat: dict | None) -> str:
    if not stat:
        return "-"
    return f"{stat['median']:.2f}x ({stat['min']:.2f}-{stat['max']:.2f})"


def markdown_lines(wp: dict, machine: dict, load: dict | None) -> list[str]:
    lines = ["", "## gpuconv against the script a skilled user writes (whole process)", "",
             f"Machine: {machine.get('name')} ({machine.get('cpu_model')}, {machine.get('cores')} "
             f"core(s)); load average {load}.  Ratio = script time / gpuconv time of paired, "
             "interleaved runs: median (min-max); > 1 means gpuconv is faster.  Cold = a fresh "
             "process per run; warm = called again in one process.  Peak RSS = the whole "
             "process (cold runs, max).  gpuconv's modules were byte-compiled first, as a "
             "wheel install does" + ("" if wp.get("bytecode_precompiled", True) else
                                     " (compiling FAILED: cold runs include compiling)") + ".",
             "",
             "| workload | output identical | cold wall | cold CPU | warm wall | gpuconv cold s "
             "| script cold s | peak RSS gpuconv / script MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in wp.get("records", []):
        cw = r["cold_wall"]
        lines.append(
            f"| {r['workload']} ({r['kind']}) | {'yes' if r['identical_output'] else 'NO'} | "
            f"{ratio_text(cw['script_over_gpuconv'])} | "
            f"{ratio_text(r['cold_cpu']['script_over_gpuconv'])} | "
            f"{ratio_text(r['warm_wall']['script_over_gpuconv'])} | "
            f"{cw['ours']['median']:.3f} | {cw['script']['median']:.3f} | "
            f"{r['cold_peak_rss_mb']['ours']['max']:.0f} / "
            f"{r['cold_peak_rss_mb']['script']['max']:.0f} |")
    prof = wp.get("import_profile")
    if prof:
        imp = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in prof["imported"].items())
        lines += ["", f"`python -X importtime` of one box conversion: top-level imports "
                      f"{prof['top_level_ms']} ms; imported: {imp}.  Slowest: "
                  + ", ".join(f"{s['module']} {s['ms']} ms" for s in prof["slowest"][:8])]
    return lines


def summary_stat(values):
    return statistics.median(values) if values else None
