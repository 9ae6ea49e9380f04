"""Peak memory of `gpuconv convert` against corpus length: it should stay flat.

The pipeline holds at most ``--queue`` decoded volumes between stages, so a corpus four times
longer must not need more memory.  Each conversion runs in a fresh process and reports its peak
resident set size (``ru_maxrss``), so the numbers are not mixed with this script's own.

    python benchmarks/memory_flat.py [--sizes 10,40] [--shape 512x512x64] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import resource, sys, time, json
import gpuconv
t0 = time.perf_counter()
s = gpuconv.convert([sys.argv[1]], sys.argv[2], backend="cpu", workers=int(sys.argv[3]),
                    progress=False)
print(json.dumps({"files": s["files"], "seconds": time.perf_counter() - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,40")
    ap.add_argument("--shape", default="512x512x64")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSON result file (default: print only)")
    args = ap.parse_args()
    from gpuconv.dataset.synth import synth_corpus
    shape = tuple(int(v) for v in args.shape.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(v) for v in args.sizes.split(",")):
            corpus = Path(tmp) / f"c{n}"
            synth_corpus(corpus, n=n, shape=shape, seed=n)
            r = subprocess.run([sys.executable, "-c", CHILD, str(corpus), str(Path(tmp) / f"o{n}"),
                                str(args.workers)], capture_output=True, text=True, check=True)
            row = {"files": n, **json.loads(r.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(f"{n:5d} files: peak RSS {row['peak_rss_mb']:.0f} MB, {row['seconds']:.1f} s")
    volume_mb = shape[0] * shape[1] * shape[2] / 2**20
    doc = {"benchmark": "memory_flat", "date": time.strftime("%Y-%m-%d"),
           "machine": platform.node(), "cpu": platform.processor() or platform.machine(),
           "shape": list(shape), "volume_mb": volume_mb, "workers": args.workers, "runs": rows,
           "growth_mb": rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]}
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"peak grows by {doc['growth_mb']:.0f} MB from {rows[0]['files']} to "
          f"{rows[-1]['files']} files (one volume is {volume_mb:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
