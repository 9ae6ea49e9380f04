"""``gpuconv bench``: generate the workloads, run every contender on the same files, report.

Timing rules: every contender gets one untimed warm-up on each workload (Numba compile and the
page cache are out of the numbers; the published method is warmed on the smallest workload only,
it has nothing to compile), then up to ``repeats`` timed runs, stopping early once a contender
has spent ``budget_s`` on one workload (at least one run).  Medians are reported with min/max.
"""

from __future__ import annotations

import json
import os

import numpy as np
import shutil
import sys
import tempfile
import time
from pathlib import Path

from gpuconv.bench import contenders as C
from gpuconv.bench import measure
from gpuconv.bench.workloads import (CORPUS_DEFAULT, CORPUS_QUICK, DEFAULT_PLAN, QUICK_PLAN,
                                     WHOLE_PROCESS_PLAN, WHOLE_PROCESS_QUICK, build_corpus,
                                     build_workload)

SCHEMA = 1
ALL_CONTENDERS = ("gpuconv-cpu", "gpuconv-gpu", "published", "cc3d", "cc3d-script",
                  "kdtree-script")
WHOLE_PROCESS = ("cc3d-script", "kdtree-script")   # bench/whole_process.py


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _available(requested, gpu_reason) -> tuple[list[str], dict[str, str]]:
    """Contenders that can run here, and {name: why skipped} for the others."""
    run, skipped = [], {}
    for name in requested:
        if name not in ALL_CONTENDERS:
            raise ValueError(f"unknown contender '{name}' (choose from "
                             f"{', '.join(ALL_CONTENDERS)})")
        if name == "gpuconv-gpu" and gpu_reason is not None:
            skipped[name] = gpu_reason
        elif name in ("cc3d", "cc3d-script"):
            try:
                import cc3d  # noqa: F401
                run.append(name)
            except ImportError:
                skipped[name] = ("connected-components-3d is not installed "
                                 "(pip install 'gpuconv[bench]')")
        else:
            run.append(name)
    return run, skipped


def _repeat(fn, repeats: int, budget_s: float) -> tuple[list[dict], float]:
    """Timed runs of ``fn()`` (each returns a result dict); peak host MB over all runs."""
    outs, peak, spent = [], 0.0, 0.0
    while len(outs) < max(1, repeats) and (not outs or spent < budget_s):
        t0 = time.perf_counter()
        with measure.PeakMemory() as mem:
            outs.append(fn())
        spent += time.perf_counter() - t0
        peak = max(peak, mem.peak_mb)
    return outs, peak


def _staged_record(workload, contender: str, outs: list[dict], peak_mb: float) -> dict:
    per_run = [o["seconds"] for o in outs]
    stages = {}
    for s in C.STAGES:
        vals = [r[s] for r in per_run if s in r]
        stages[s] = measure.summarise(vals) if vals else None
    stages_cpu = {}
    for s in C.STAGES:
        vals = [o["cpu_seconds"][s] for o in outs if s in o.get("cpu_seconds", {})]
        stages_cpu[s] = measure.summarise(vals) if vals else None
    totals = [sum(r.values()) for r in per_run]
    total = measure.summarise(totals)
    cpu = [sum(o.get("cpu_seconds", {}).values()) for o in outs]
    label = stages["label"]["median"] if stages["label"] else None
    full = contender != "cc3d"
    rec = {
        "workload": workload.name, "contender": contender, "runs": len(outs),
        "stages": stages, "total": total,
        "total_cpu": measure.summarise(cpu) if any(cpu) else None,
        "stages_cpu": stages_cpu,
        "label_mvox_s": workload.voxels * len(workload.paths) / label / 1e6 if label else None,
        "end_to_end_mvox_s": (workload.voxels * len(workload.paths) / total["median"] / 1e6
                              if full else None),
        "scans_per_s": len(workload.paths) / total["median"] if full else None,
        "peak_host_mb": round(peak_mb, 1),
        "peak_device_mb": max((o.get("device_mb", 0.0) for o in outs), default=None) or None,
        "components": outs[0]["components"],
        "notes": outs[0].get("notes", []),
    }
    return rec


def _published_sample(workload, scratch: Path, budget_s: float | None) -> int | None:
    """Slices per file the published method gets so one run costs about ``budget_s``: probed
    on 4 evenly spread slices of the first file (None: run every slice)."""
    if budget_s is None:
        return None
    out = _fresh(scratch / "probe")
    r = C.published(workload.paths[0], out, sample=4)
    _discard(out)
    per_run = sum(r["seconds"][s] for s in ("label", "reduce", "write")) * len(workload.paths)
    n_slices = r["n_slices"]
    if per_run <= budget_s:
        return None
    return max(2, min(n_slices, int(np.ceil(n_slices * budget_s / per_run))))


def _run_staged(workload, contender: str, scratch: Path, repeats: int, budget_s: float,
                warm: bool, published_budget_s: float | None = None) -> dict:
    fn = C.STAGED_FUNCS[contender]
    counter = [0]
    kw = {}
    if contender == "published":
        kw["sample"] = _published_sample(workload, scratch, published_budget_s)

    def once():
        total = {"seconds": {}, "cpu_seconds": {}, "components": 0, "notes": [],
                 "device_mb": 0.0}
        for path in workload.paths:
            counter[0] += 1
            out = scratch / f"{contender}-{counter[0]}"
            out.mkdir(parents=True)
            r = fn(path, out, **kw)
            _discard(out)
            for key in ("seconds", "cpu_seconds"):
                for s, v in r.get(key, {}).items():
                    total[key][s] = total[key].get(s, 0.0) + v
            total["components"] += r["components"]
            total["notes"] = r.get("notes", [])
            total["device_mb"] = max(total["device_mb"], r.get("device_mb", 0.0))
        return total
    if warm:
        once()
    outs, peak = _repeat(once, repeats, budget_s / 3 if contender == "published" else budget_s)
    return _staged_record(workload, contender, outs, peak)


def _e2e_published_sampled(paths, scratch: Path, budget_s: float | None) -> dict:
    """The published method over the corpus, one process, as published.  With a budget it runs
    on an evenly spread sample of the scans, chosen after timing the first one, and its time is
    scaled to the whole corpus (the scans are drawn i.i.d., so the sample is unbiased)."""
    out = _fresh(scratch / "e2e-published")
    t0 = time.perf_counter()
    C.e2e_published(paths[:1], out)
    first = time.perf_counter() - t0
    n = len(paths)
    n_sample = n if budget_s is None else max(1, min(n, int(budget_s // max(first, 1e-9))))
    idx = sorted(set(np.linspace(0, n - 1, n_sample).round().astype(int).tolist()))
    spent = first
    for i in idx:
        if i == 0:
            continue
        t0 = time.perf_counter()
        C.e2e_published([paths[i]], out)
        spent += time.perf_counter() - t0
    _discard(out)
    n_done = len(set(idx) | {0})
    return {"seconds": spent * n / n_done, "scans_timed": n_done}


def _tmpfs() -> Path | None:
    """A RAM-backed folder for the output-on-tmpfs variant (shows what the disk costs)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return None


def _run_e2e(corpus, contenders: list[str], scratch: Path, repeats: int, budget_s: float,
             workers: int, quiet: bool, published_budget_s: float | None = None) -> list[dict]:
    paths = corpus.paths
    jobs = C.gunzip_jobs(paths)
    plan = []
    shm = _tmpfs()
    if "gpuconv-cpu" in contenders:
        plan.append(("gpuconv-cpu", workers, lambda out: C.e2e_convert(paths, out, workers, "cpu")))
        if workers > 1:
            plan.append(("gpuconv-cpu-1w", 1, lambda out: C.e2e_convert(paths, out, 1, "cpu")))
        if shm is not None:
            plan.append(("gpuconv-cpu-tmpfs-out", workers,
                         lambda out: C.e2e_convert(paths, shm / f"gpuconv-bench-{os.getpid()}-"
                                                   f"{out.name}", workers, "cpu")))
        plan.append(("gpuconv-cpu-table", workers,
                     lambda out: C.e2e_convert(paths, out, workers, "cpu", fmt="table")))
        if workers > 1:  # the warm-up run below leaves the forkserver running (see note)
            plan.append(("gpuconv-cpu-proc", workers,
                         lambda out: C.e2e_convert(paths, out, workers, "cpu", "process")))
    if "gpuconv-gpu" in contenders:
        plan.append(("gpuconv-gpu", workers, lambda out: C.e2e_convert(paths, out, workers, "gpu")))
        if workers > 1:
            plan.append(("gpuconv-gpu-proc", workers,
                         lambda out: C.e2e_convert(paths, out, workers, "gpu", "process")))
    plan.append(("gunzip-floor", workers, lambda out: C.e2e_gunzip(jobs, workers)))
    if workers > 1:
        plan.append(("gunzip-floor-1w", 1, lambda out: C.e2e_gunzip(jobs, 1)))
    records = []
    for name, n_workers, fn in plan:
        _log(f"  end to end: {name} ({n_workers} worker(s), {len(paths)} scans)", quiet)
        counter = [0]

        def once(counter=counter, name=name, fn=fn):
            counter[0] += 1
            out = scratch / f"e2e-{name}-{counter[0]}"
            t0 = time.perf_counter()
            info = fn(out)
            dt = time.perf_counter() - t0
            _discard(out)
            if shm is not None:
                shutil.rmtree(shm / f"gpuconv-bench-{os.getpid()}-{out.name}", ignore_errors=True)
            return {"seconds": dt, "info": info}
        if name != "published":
            once()  # warm-up: page cache, Numba, thread pools
        outs, peak = _repeat(once, repeats, budget_s)
        secs = measure.summarise([o["seconds"] for o in outs])
        records.append({
            "contender": name, "workers": n_workers, "scans": len(paths),
            "seconds": secs, "scans_per_s": len(paths) / secs["median"],
            "mvox_s": corpus.voxels * len(paths) / secs["median"] / 1e6,
            "peak_host_mb": round(peak, 1), "info": outs[0]["info"]})
    if "published" in contenders:
        _log(f"  end to end: published (1 process, {len(paths)} scans"
             + (", sampled" if published_budget_s else "") + ")", quiet)
        with measure.PeakMemory() as mem:
            r = _e2e_published_sampled(paths, scratch, published_budget_s)
        secs = measure.summarise([r["seconds"]])
        note = (f"timed on {r['scans_timed']} of {len(paths)} scans (evenly spread) and scaled"
                if r["scans_timed"] < len(paths) else "all scans, one run")
        records.append({
            "contender": "published", "workers": 1, "scans": len(paths), "seconds": secs,
            "scans_per_s": len(paths) / secs["median"],
            "mvox_s": corpus.voxels * len(paths) / secs["median"] / 1e6,
            "peak_host_mb": round(mem.peak_mb, 1), "info": {"note": note,
                                                            "scans_timed": r["scans_timed"]}})
    return records


def _ratio(a, b):
    return a / b if a and b else None


def headline(results: list[dict], e2e: list[dict]) -> dict:
    """Ratios between contenders: the numbers that survive run-to-run drift."""
    by = {(r["workload"], r["contender"]): r for r in results}
    per_workload = {}
    for wl in dict.fromkeys(r["workload"] for r in results):
        g = by.get((wl, "gpuconv-cpu"))
        if not g:
            continue
        row = {}
        for other in ("published", "cc3d", "gpuconv-gpu"):
            o = by.get((wl, other))
            if not o:
                continue
            gl, ol = g["stages"]["label"], o["stages"]["label"]
            row[f"label_speedup_vs_{other}"] = _ratio(ol["median"], gl["median"]) if ol else None
            gc, oc = g["stages_cpu"]["label"], o["stages_cpu"]["label"]
            if gc and oc:  # single-threaded stages: CPU time is the work, whatever else runs
                row[f"label_speedup_vs_{other}_cpu_time"] = _ratio(oc["median"], gc["median"])
            if other != "cc3d":
                row[f"end_to_end_speedup_vs_{other}"] = _ratio(o["total"]["median"],
                                                               g["total"]["median"])
        per_workload[wl] = row
    e = {r["contender"]: r for r in e2e}
    out = {"per_workload": per_workload}
    if "gpuconv-cpu" in e:
        g = e["gpuconv-cpu"]["seconds"]["median"]
        if "published" in e:
            out["e2e_speedup_vs_published"] = e["published"]["seconds"]["median"] / g
        if "gpuconv-cpu-1w" in e and "published" in e:
            out["e2e_speedup_vs_published_1_worker"] = (
                e["published"]["seconds"]["median"] / e["gpuconv-cpu-1w"]["seconds"]["median"])
        if "gunzip-floor" in e:
            out["e2e_over_gunzip_floor"] = g / e["gunzip-floor"]["seconds"]["median"]
            for name, ratio in (("gpuconv-cpu-table", "e2e_table_over_gunzip_floor"),
                                ("gpuconv-cpu-proc", "e2e_proc_over_gunzip_floor")):
                if name in e:
                    out[ratio] = (e[name]["seconds"]["median"]
                                  / e["gunzip-floor"]["seconds"]["median"])
    if "gpuconv-gpu" in e and "gpuconv-cpu" in e:
        out["e2e_gpu_speedup_vs_cpu"] = (e["gpuconv-cpu"]["seconds"]["median"]
                                         / e["gpuconv-gpu"]["seconds"]["median"])
    return out


def targets(results: list[dict], e2e: list[dict], ratios: dict, machine: dict,
            gpu_reason: str | None) -> list[dict]:
    """Where the project stands against the issue's targets (measured, never asserted)."""
    out = []
    sp = ratios.get("e2e_speedup_vs_published")
    out.append({"target": "CPU end to end, default settings, sparse corpus: >= 20x faster than "
                          "the published method",
                "measured": None if sp is None else f"{sp:.1f}x",
                "met": None if sp is None else sp >= 20})
    fl = ratios.get("e2e_over_gunzip_floor")
    others = [f"{ratios[k]:.2f}x {what}" for k, what in
              (("e2e_proc_over_gunzip_floor", "with --pool process"),
               ("e2e_table_over_gunzip_floor", "with --format table")) if k in ratios]
    out.append({"target": "CPU end to end within 2x of just gunzipping the same files "
                          "(fastest decoder, same workers)",
                "measured": None if fl is None else (f"{fl:.2f}x the gunzip time"
                                                     + (f" ({'; '.join(others)})" if others
                                                        else "")),
                "met": None if fl is None else fl <= 2})
    gpu = [r for r in results if r["contender"] == "gpuconv-gpu"
           and r["workload"].startswith("sparse-512x512x320")]
    if gpu_reason is not None:
        out.append({"target": "GPU labelling+boxes+counts, 512x512x300 on device: < 1 ms (H100)",
                    "measured": f"not measured: {gpu_reason}", "met": None})
    elif gpu:
        ms = gpu[0]["stages"]["label"]["median"] * 1e3
        out.append({"target": "GPU labelling+boxes+counts, 512x512x300 on device: < 1 ms (H100)",
                    "measured": f"{ms:.3f} ms on 512x512x320 "
                                f"({(machine.get('gpu') or {}).get('name')})",
                    "met": ms < 1.0})
    e = {r["contender"]: r for r in e2e}
    ours = [r for name, r in e.items() if name.startswith("gpuconv-")
            and "tmpfs" not in name and not name.endswith("-1w")]
    best = max(ours, key=lambda r: r["scans_per_s"]) if ours else None
    out.append({"target": "End to end on a 16-core GPU server: hundreds of scans/s",
                "measured": (None if best is None else
                             f"{best['scans_per_s']:.1f} scans/s with {best['contender']} on "
                             f"{machine['cores']} core(s)"
                             + ("" if machine.get("gpu") else ", no GPU (not the target machine)")),
                "met": (None if best is None or not machine.get("gpu") or machine["cores"] < 16
                        else best["scans_per_s"] >= 100)})
    return out


def _cold_ratio(r: dict) -> str:
    return f"{r['workload']} {r['cold_wall']['script_over_gpuconv']['median']:.2f}x"


def _rss(r: dict, who: str) -> float:
    return r["cold_peak_rss_mb"][who]["max"]


def script_targets(whole: dict | None) -> list[dict]:
    """Issue 15's targets against the users' scripts (measured, never asserted)."""
    if not whole:
        return []
    out = []
    conv = [r for r in whole["records"] if r["kind"] == "convert"]
    agree = [r for r in whole["records"] if r["kind"] == "agree"]

    def worst(rows, key):
        vals = [r[key]["script_over_gpuconv"]["median"] for r in rows]
        return min(vals) if vals else None
    if conv:
        w = worst(conv, "cold_wall")
        out.append({"target": "whole process, cold: gpuconv convert ahead of the pynrrd+cc3d "
                              "script on every workload (same label files)",
                    "measured": "; ".join(_cold_ratio(r) for r in conv),
                    "met": w is not None and w > 1 and all(r["identical_output"] for r in conv)})
        dense = [r for r in conv if r["workload"].startswith(("organs", "cells"))]
        if dense:
            out.append({"target": "dense maps (100 labels 35 %, 40 % maps): >= 2x faster than the "
                                  "script, whole process",
                        "measured": "; ".join(_cold_ratio(r) for r in dense),
                        "met": min(r["cold_wall"]["script_over_gpuconv"]["median"]
                                   for r in dense) >= 2})
            rss = [(r["workload"], r["cold_peak_rss_mb"]["ours"]["max"]
                    / r["cold_peak_rss_mb"]["script"]["max"]) for r in dense]
            out.append({"target": "peak memory on dense maps within 1.5x the script's (whole "
                                  "process)",
                        "measured": "; ".join(f"{n} {x:.2f}x" for n, x in rss),
                        "met": max(x for _, x in rss) <= 1.5})
    if agree:
        w = worst(agree, "cold_wall")
        out.append({"target": "gpuconv agree ahead of the cKDTree script on both vessel pairs, "
                              "memory no higher",
                    "measured": "; ".join(
                        f"{_cold_ratio(r)}, RSS {_rss(r, 'ours'):.0f}/{_rss(r, 'script'):.0f} MB"
                        for r in agree),
                    "met": (w is not None and w > 1
                            and all(_rss(r, "ours") <= _rss(r, "script") for r in agree)
                            and all(r["identical_output"] for r in agree))})
    return out


def run_bench(out_dir=None, *, quick: bool = False, repeats: int | None = None,
              contenders=None, workloads=None, seed: int = 0, workers: int | None = None,
              machine_name: str | None = None, budget_s: float | None = None,
              work_dir=None, command: str | None = None, plot: bool = True,
              full_published: bool = False, quiet: bool = False,
              corpus_scans: int | None = None) -> dict:
    """Run the benchmark; write ``bench.json``, ``bench.md`` and ``bench.png`` into ``out_dir``
    (default ``benchmarks/results/<machine>``); return the result document."""
    from gpuconv.conversion.malloc_tuning import reuse_freed_memory
    from gpuconv.bench.report import write_markdown, write_plot
    t_start = time.perf_counter()
    reuse_freed_memory()  # what `convert` does; applies to every contender in this process
    from gpuconv.backends import gpu_unavailable_reason
    gpu_reason = gpu_unavailable_reason()
    requested = list(contenders or ALL_CONTENDERS)
    run_list, skipped = _available(requested, gpu_reason)
    for name, why in skipped.items():
        _log(f"skipping {name}: {why}", quiet)
    plan = dict(QUICK_PLAN if quick else DEFAULT_PLAN)
    wp_plan = dict(WHOLE_PROCESS_QUICK if quick else WHOLE_PROCESS_PLAN)
    if workloads:
        unknown = [w for w in workloads if w not in plan and w not in wp_plan
                   and w not in ("corpus", "vessel-pairs")]
        if unknown:
            raise ValueError(f"unknown workload(s) {', '.join(unknown)} (choose from "
                             f"{', '.join([*plan, *wp_plan, 'corpus', 'vessel-pairs'])})")
    selected = [w for w in plan if not workloads or w in workloads]
    wp_selected = [w for w in wp_plan if not workloads or w in workloads]
    with_pairs = not workloads or "vessel-pairs" in workloads
    with_corpus = not workloads or "corpus" in workloads
    repeats = repeats or (2 if quick else 5)
    budget_s = budget_s if budget_s is not None else (2.0 if quick else 15.0)
    n_workers = workers or measure.cores()
    # the published method takes tens of seconds per 512x512x64 scan: unless asked for a full
    # run, it is timed on a sample of slices (staged) or scans (end to end) and scaled
    published_budget_s = None if (quick or full_published) else 2.0
    mach = measure.machine(machine_name)
    load_start = _load()
    out_dir = Path(out_dir) if out_dir else Path("benchmarks/results") / mach["name"]

    tmp = Path(tempfile.mkdtemp(prefix="gpuconv-bench-", dir=work_dir))
    (tmp / ".discarded").mkdir()
    _TRASH[:] = [tmp / ".discarded"]
    try:
        _log(f"generating workloads in {tmp} (seed {seed})", quiet)
        t0 = time.perf_counter()
        wls = [build_workload(w, plan[w], tmp / "data", seed) for w in selected]
        spec = dict(CORPUS_QUICK if quick else CORPUS_DEFAULT)
        if corpus_scans:
            spec["n"] = int(corpus_scans)
        corpus = (build_corpus(tmp / "data", seed, spec["n"], spec["shape"], spec["fg"])
                  if with_corpus else None)
        gen_s = time.perf_counter() - t0
        compile_s = C.warm_up_numba()
        if "published" in run_list and wls:  # published: nothing to compile, warm it once
            smallest = min(wls, key=lambda w: w.voxels)
            C.published(smallest.paths[0], _fresh(tmp / "warm"), sample=2)

        staged_run = [n for n in run_list if n not in WHOLE_PROCESS]
        results = []
        for wl in wls:
            _log(f"workload {wl.name}: {wl.shape}, {wl.foreground:.3%} foreground", quiet)
            for name in staged_run:
                rec = _run_staged(wl, name, tmp / "scratch", repeats, budget_s,
                                  warm=name != "published",
                                  published_budget_s=published_budget_s)
                _log(f"  {name:12s} total {rec['total']['median'] * 1e3:9.1f} ms  "
                     f"label {rec['stages']['label']['median'] * 1e3:9.2f} ms  "
                     f"({rec['runs']} run(s), {rec['components']} components)", quiet)
                results.append(rec)
        e2e = []
        if corpus is not None:
            _log(f"corpus {corpus.name}: {corpus.foreground:.3%} foreground on average", quiet)
            e2e = _run_e2e(corpus, run_list, tmp / "scratch", min(repeats, 3),
                           budget_s * 2, n_workers, quiet,
                           None if published_budget_s is None else published_budget_s * 20)
        whole = None
        if any(n in run_list for n in WHOLE_PROCESS):
            from gpuconv.bench import whole_process as WP
            wp_wls = ([build_workload(w, wp_plan[w], tmp / "data-wp", seed) for w in wp_selected]
                      if "cc3d-script" in run_list else [])
            pairs = (WP.vessel_pairs(tmp / "data-wp", seed, quick)
                     if "kdtree-script" in run_list and with_pairs else [])
            _log("whole process: gpuconv vs the cc3d script and the cKDTree agree script "
                 "(cold and warm)", quiet)
            whole = WP.run_whole_process(wp_wls, pairs,
                                         corpus if "cc3d-script" in run_list else None,
                                         tmp / "scratch-wp", 2 if quick else min(repeats, 5),
                                         n_workers, lambda m: _log(m, quiet))
            wls_wp = wp_wls
        else:
            wls_wp = []
        described = [_describe(w) for w in wls] + ([_describe(corpus)] if corpus else [])
        if whole is not None:
            whole["workloads"] = [_describe(w) for w in wls_wp]
    finally:
        _TRASH.clear()
        shutil.rmtree(tmp, ignore_errors=True)  # every output of the run, deleted once

    ratios = headline(results, e2e)
    if whole:
        from gpuconv.bench.whole_process import headline_rows
        ratios["vs_user_scripts"] = headline_rows(whole)
    doc = {
        "schema": SCHEMA,
        "date": measure.now_utc(),
        "command": command or f"gpuconv.bench.run_bench(quick={quick}) from {sys.argv[0]}",
        "machine": mach,
        "versions": measure.versions(),
        "options": {"quick": quick, "repeats": repeats, "budget_s": budget_s, "seed": seed,
                    "workers": n_workers, "contenders": requested,
                    "full_published": published_budget_s is None,
                    "workloads": selected + (["corpus"] if with_corpus else [])},
        "contenders_run": [n for n in run_list if n not in WHOLE_PROCESS],
        "whole_process_contenders": [n for n in run_list if n in WHOLE_PROCESS],
        "skipped": skipped,
        "gpu": {"available": gpu_reason is None, "skipped_reason": gpu_reason},
        "workloads": described,
        "results": results,
        "end_to_end": e2e,
        "whole_process": whole,
        "headline": ratios,
        "targets": _quick_targets(targets(results, e2e, ratios, mach, gpu_reason), quick),
        "targets_vs_scripts": _quick_targets(script_targets(whole), quick),
        "load_average": {"start": load_start, "end": _load()},
        "numba_warm_up_s": round(compile_s, 3),
        "generate_s": round(gen_s, 2),
        "wall_s": None,
        "conventions": {
            "stages": "read = file bytes; decode = header parse + payload decode; h2d = host to "
                      "device; label = connected components; reduce = components -> canonical "
                      "box table (gpuconv) or find_objects min/max (published); write = YOLO "
                      "text files",
            "published": "the COCA repository's nrrd_to_yolo.py as writers/compat_coca.py "
                         "models it (timed by gpuconv/bench/published.py): nrrd.read, per "
                         "slice np.unique + ndimage.label (4-connectivity) + find_objects, a "
                         "file for every slice; its read is inside nrrd.read, so it shows as "
                         "decode",
            "cc3d": "labelling stage only: cc3d.connected_components per 2D slice, "
                    "connectivity 8, multi-label",
            "gpuconv": "connectivity 8 (the default); staged runs are single-threaded, one file "
                       "at a time; end to end uses gpuconv.convert with workers set explicitly",
            "timing": "median of repeats (min/max alongside) after one untimed warm-up; "
                      "GPU stages with CUDA events",
        },
    }
    doc["wall_s"] = round(time.perf_counter() - t_start, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
    write_markdown(doc, out_dir / "bench.md")
    doc["plot_written"] = bool(plot and write_plot(doc, out_dir / "bench.png"))
    doc["out_dir"] = str(out_dir)
    return doc


def _load():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _quick_targets(rows: list[dict], quick: bool) -> list[dict]:
    """A --quick run's inputs are toys: its numbers say nothing about the targets."""
    if quick:
        for t in rows:
            t["measured"] = f"quick smoke run, not comparable ({t['measured']})"
            t["met"] = None
    return rows


#: where finished outputs go until the run ends (see ``_discard``); set by ``run_bench``
_TRASH: list[Path] = []


def _discard(p: Path) -> None:
    """Put a finished output folder aside instead of deleting it: on ext4, creating small
    files in block groups where many were just deleted costs 400-1300 us a file for minutes
    (25-57 us otherwise), which would slow every later disk measurement of the same run.  The
    folders are renamed into the run's scratch folder, deleted once, at the end.  RAM-backed
    folders (/dev/shm) are deleted at once."""
    p = Path(p)
    if not p.exists():
        return
    if not _TRASH or str(p).startswith("/dev/shm"):
        shutil.rmtree(p, ignore_errors=True)
        return
    try:
        p.rename(_TRASH[0] / f"{len(list(_TRASH[0].iterdir()))}-{p.name}")
    except OSError:  # another file system: delete after all
        shutil.rmtree(p, ignore_errors=True)


def _fresh(p: Path) -> Path:
    _discard(p)
    p.mkdir(parents=True)
    return p


def _describe(w) -> dict:
    return {"name": w.name, "family": w.family, "shape": list(w.shape), "files": len(w.paths),
            "voxels_per_file": w.voxels, "foreground": round(w.foreground, 6),
            "expected_components": w.expected_components,
            "bytes_on_disk": sum(os.path.getsize(p) for p in w.paths)}


def _jsonable(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
    except ImportError:
        pass
    return str(o)
