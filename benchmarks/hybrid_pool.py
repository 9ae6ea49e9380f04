"""The hybrid pool (CPU worker processes + one labeller process) against the CPU process pool,
end to end with ``gpuconv convert`` as a user runs it (issue 18).

Two corpora: sparse COCA-like scans (``gpuconv synth``, 512x512x64) and a dense multi-organ one
(100 labels, 35 % foreground, ``bench.workloads.organs``; one volume written once and copied
under n exam names, so building it is quick).  Each contender converts each corpus into a
fresh folder; the wall time of the whole command, the summary's files/s and whether the label
files are byte-identical to the process pool's are recorded.  Every run is time-boxed; what did
not fit is recorded as skipped.

    python benchmarks/hybrid_pool.py --json OUT/hybrid_pool.json            # on the GPU machine
    python benchmarks/hybrid_pool.py --quick --hybrid-backend cpu --json x.json   # anywhere

Runs on the GPU machine from benchmarks/gpu_session.sh; without a GPU, ``--hybrid-backend cpu``
checks the script itself (those numbers say nothing about a GPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_corpora(root: Path, n_sparse: int, n_dense: int, sparse_shape, dense_shape) -> dict:
    from gpuconv.bench.workloads import organs, write_seg
    from gpuconv.dataset.synth import synth_corpus
    import numpy as np
    sparse = root / "sparse"
    synth_corpus(sparse, n=n_sparse, shape=sparse_shape, seed=18)
    dense = root / "dense"
    dense.mkdir(parents=True, exist_ok=True)
    first = write_seg(dense / "organs_0001.seg.nrrd",
                      organs(np.random.default_rng(18), dense_shape, 0.35, 100),
                      tuple(f"organ_{v + 1}" for v in range(100)))
    for e in range(2, n_dense + 1):
        shutil.copyfile(first, dense / f"organs_{e:04d}.seg.nrrd")
    return {f"sparse-{n_sparse}x{'x'.join(map(str, sparse_shape))}": sparse,
            f"dense-organs-{n_dense}x{'x'.join(map(str, dense_shape))}": dense}


def label_digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((out / "labels").rglob("*.txt")) if (out / "labels").exists() else []:
        h.update(p.relative_to(out).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def run_one(corpus: Path, out: Path, args: list[str], workers: int, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "gpuconv", "convert", str(corpus), "--out", str(out),
           "--workers", str(workers), "--json", "--force", *args]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"args": args, "timed_out": True, "timeout_s": round(timeout, 1)}
    wall = time.perf_counter() - t0
    rec = {"args": args, "returncode": r.returncode, "wall_s": round(wall, 3)}
    try:
        s = json.loads(r.stdout)
        rec.update(files=s["files"], failed=s["failed"], pool=s["pool"], backend=s["backend"],
                   seconds=s["seconds"], files_per_second=s["files_per_second"],
                   stage_share=s["stage_share"])
        rec["files_per_second_wall"] = round(s["files"] / wall, 2) if wall > 0 else None
    except (ValueError, KeyError):
        rec["stderr_tail"] = r.stderr[-800:]
    rec["labels_sha256"] = label_digest(out)
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--hybrid-backend", default="gpu", help="the labeller's backend (gpu)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--n-sparse", type=int, default=48)
    ap.add_argument("--n-dense", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--budget", type=float, default=170.0, help="seconds for everything")
    ap.add_argument("--quick", action="store_true", help="tiny corpora (checks the script)")
    a = ap.parse_args()
    start = time.perf_counter()
    sparse_shape, dense_shape = (512, 512, 64), (512, 512, 128)
    if a.quick:
        a.n_sparse, a.n_dense, a.repeats = 6, 3, 1
        sparse_shape, dense_shape = (96, 96, 16), (96, 96, 24)
    contenders = {"process-cpu": ["--pool", "process", "--backend", "cpu"],
                  f"hybrid-{a.hybrid_backend}": ["--pool", "hybrid", "--backend",
                                                 a.hybrid_backend]}
    result = {"workers": a.workers, "hybrid_backend": a.hybrid_backend, "corpora": {},
              "note": "wall_s: the whole convert command (start-up included)"}
    def save(res: dict) -> None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="gpuconv-hybrid-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        corpora = build_corpora(root / "in", a.n_sparse, a.n_dense, sparse_shape, dense_shape)
        result["build_s"] = round(time.perf_counter() - t0, 1)
        for name, corpus in corpora.items():
            runs: dict = {c: [] for c in contenders}
            for rep in range(a.repeats):
                for c, args in contenders.items():
                    left = a.budget - (time.perf_counter() - start)
                    if left < 10:
                        runs[c].append({"skipped": "budget spent"})
                        continue
                    out = root / "out" / f"{name}-{c}-{rep}"
                    runs[c].append(run_one(corpus, out, args, a.workers, left - 5))
                    shutil.rmtree(out, ignore_errors=True)
            best = {c: min([r["wall_s"] for r in rs if r.get("returncode") == 0] or [None],
                           key=lambda v: float("inf") if v is None else v)
                    for c, rs in runs.items()}
            digests = {r.get("labels_sha256") for rs in runs.values() for r in rs
                       if r.get("returncode") == 0}
            hyb, proc = best[f"hybrid-{a.hybrid_backend}"], best["process-cpu"]
            result["corpora"][name] = {
                "runs": runs, "best_wall_s": best,
                "hybrid_speedup_vs_process": (round(proc / hyb, 3) if hyb and proc else None),
                "labels_identical": len(digests) == 1 if digests else None}
            save(result)            # what is done so far survives a timeout
            print(name, json.dumps(result["corpora"][name]["best_wall_s"]),
                  "speedup", result["corpora"][name]["hybrid_speedup_vs_process"],
                  "identical", result["corpora"][name]["labels_identical"], flush=True)
    result["seconds"] = round(time.perf_counter() - start, 1)
    save(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
