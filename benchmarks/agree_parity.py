"""CPU vs GPU agreement (Dice, HD95) on a folder pair, for a machine with a CUDA device.

    python benchmarks/agree_parity.py --json agree_parity.json
    python benchmarks/agree_parity.py --n 2 --size 64 48 12 --backends cpu scipy   # no GPU

Folder A is a synthetic corpus; folder B holds the same exams with every label shifted by one
voxel along j (even exams) or two along i (odd exams), so the HD95 values are non-trivial.  Both
backends run ``agree_many`` over the pairs with every HD95 definition (after a warm-up pair);
Dice must be equal and HD95 equal to 1e-9 mm.  The ``gpuconv agree A B --backend gpu --json``
command is run too, as a user would.  Exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def shifted_copy(src: Path, dst: Path, axis: int, step: int) -> None:
    """``src`` with its label grid rolled by ``step`` voxels on ``axis`` (0 = i, 1 = j)."""
    from gpuconv.io.nrrd_read import decode_layers, read_data_blob, read_header
    hdr = read_header(src)
    blob = src.read_bytes()
    layers = decode_layers(hdr, read_data_blob(hdr, blob))
    assert layers.shape[0] == 1 and hdr.data_path == src
    vol = np.roll(layers[0], step, axis=axis)
    vol[(slice(None),) * axis + (slice(0, step),)] = 0          # no wrap-around
    payload = gzip.compress(np.asfortranarray(vol).tobytes(order="F"), 1)
    dst.write_bytes(blob[:hdr.data_offset] + payload)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--size", type=int, nargs=3, default=(512, 512, 64))
    ap.add_argument("--out", default="/tmp/gpuconv_agree")
    ap.add_argument("--backends", nargs=2, default=("cpu", "gpu"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import shutil

    from gpuconv.analysis.agreement import HD95_DEFINITIONS
    from gpuconv.analysis.agreement_files import agree_many, pair_folders
    from gpuconv.dataset.synth import synth_corpus

    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    a, b = root / "a", root / "b"
    synth_corpus(a, n=args.n, shape=tuple(args.size), seed=3)
    b.mkdir(parents=True)
    for idx, p in enumerate(sorted(a.glob("*.seg.nrrd"))):
        shifted_copy(p, b / p.name, axis=1 if idx % 2 == 0 else 0, step=1 if idx % 2 == 0 else 2)
    pairs, only_a, only_b = pair_folders(a, b)
    defs = list(HD95_DEFINITIONS)
    report = {"pairs": len(pairs), "size": list(args.size), "definitions": defs,
              "backends": list(args.backends), "seconds": {}, "differences": []}
    results = {}
    for be in args.backends:
        agree_many(pairs[:1], None, defs, be)                     # warm-up (JIT, CUDA context)
        t0 = time.perf_counter()
        results[be] = agree_many(pairs, None, defs, be)
        report["seconds"][be] = round(time.perf_counter() - t0, 3)
    x, y = (results[be] for be in args.backends)
    worst = 0.0
    for ra, rb in zip(x, y):
        if ra.error or rb.error:
            report["differences"].append(f"{ra.exam}: {ra.error or rb.error}")
            continue
        for ca, cb in zip(ra.classes, rb.classes):
            if ca["class"] != cb["class"] or ca["dice"] != cb["dice"]:
                report["differences"].append(f"{ra.exam} {ca['class']}: dice {ca['dice']} "
                                             f"!= {cb['dice']}")
            for d in defs:
                u, v = ca[f"hd95_{d}"], cb[f"hd95_{d}"]
                if math.isinf(u) and math.isinf(v):
                    continue
                worst = max(worst, abs(u - v))
                if not abs(u - v) <= 1e-9:
                    report["differences"].append(f"{ra.exam} {ca['class']} hd95_{d}: {u} != {v}")
    report["max_abs_hd95_difference_mm"] = worst
    report["example"] = x[0].classes[:3] if x and x[0].classes else []
    if "gpu" in args.backends:
        t0 = time.perf_counter()
        cli = subprocess.run([sys.executable, "-m", "gpuconv", "agree", str(a), str(b),
                              "--hd95", "all", "--backend", "gpu", "--json"],
                             capture_output=True, text=True)
        report["cli_seconds"] = round(time.perf_counter() - t0, 3)
        report["cli_returncode"] = cli.returncode
        try:
            doc = json.loads(cli.stdout)
            report["cli_backend"] = doc.get("backend")
            report["cli_summary"] = doc.get("summary")
        except json.JSONDecodeError:
            report["differences"].append(f"CLI gave no JSON: {cli.stderr[-500:]}")
    report["parity"] = not report["differences"]
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if report["parity"] else 1


if __name__ == "__main__":
    sys.exit(main())
