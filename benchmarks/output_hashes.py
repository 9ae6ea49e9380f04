"""SHA-256 of every output file of a fixed set of conversions: the before/after check of a
refactor or a speed change ("outputs byte-identical").

    python benchmarks/output_hashes.py OUT.json      # record
    python benchmarks/output_hashes.py OUT.json --compare BEFORE.json

Inputs: a seeded synthetic corpus (4 exams), a dense multi-organ map and the two Slicer-written
files that slicerio ships.  Outputs hashed: label files, dataset.yaml, boxes.csv, instances.csv,
PNGs (everything except the manifest and summary.json, which carry versions and times, and
the ``path:`` line of dataset.yaml, which names the temporary folder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SKIP = {"manifest.jsonl", "summary.json", "run.lock"}


def _run(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "gpuconv", *args], check=True,
                   stdout=subprocess.DEVNULL)


def _hash_tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in SKIP and not p.name.endswith(".parquet"):
            data = p.read_bytes()
            if p.name == "dataset.yaml":  # its path: line names the temporary folder
                data = b"".join(ln for ln in data.splitlines(True) if not ln.startswith(b"path:"))
            out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def _dense(path: Path) -> None:
    import numpy as np
    import nrrd
    rng = np.random.default_rng(7)
    vol = np.zeros((96, 80, 12), np.uint8)
    for _ in range(150):
        v = int(rng.integers(1, 40))
        i, j, k = (int(rng.integers(0, s)) for s in vol.shape)
        vol[max(0, i - 6):i + 6, max(0, j - 5):j + 5, max(0, k - 2):k + 2] = v
    nrrd.write(str(path), vol, {"space": "left-posterior-superior",
                                "space directions": np.diag([0.7, 0.7, 2.5]),
                                "space origin": np.zeros(3), "encoding": "gzip"})


def record(dest: Path) -> dict:
    import slicerio
    data = Path(slicerio.__file__).parent / "data"
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        _run("synth", str(t / "corpus"), "-n", "4", "--size", "96x80x16", "--seed", "3")
        _dense(t / "dense.nrrd")
        slicer = [str(data / "Segmentation.seg.nrrd"),
                  str(data / "SegmentationOverlapping.seg.nrrd")]
        jobs = {
            "synth-boxes": [str(t / "corpus"), "--split", str(t / "corpus" / "split.csv"),
                            "--instances"],
            "synth-polygons": [str(t / "corpus"), "--format", "polygons"],
            "synth-table": [str(t / "corpus"), "--format", "boxes,table"],
            "synth-c4": [str(t / "corpus"), "--connectivity", "4", "--write-empty"],
            "dense": [str(t / "dense.nrrd"), "--instances", "--format", "boxes,table"],
            "dense-polygons": [str(t / "dense.nrrd"), "--format", "polygons"],
            "slicer": [*slicer, "--instances"],
            "slicer-polygons": [*slicer, "--format", "polygons"],
        }
        for name, args in jobs.items():
            out = t / f"out-{name}"
            _run("convert", *args, "--out", str(out), "--no-progress", "--workers", "2")
            result[name] = _hash_tree(out)
    dest.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("--compare", type=Path)
    a = ap.parse_args()
    now = record(a.dest)
    if a.compare is None:
        print(f"recorded {sum(len(v) for v in now.values())} files in {a.dest}")
        return 0
    before = json.loads(a.compare.read_text())
    bad = 0
    for job in sorted(set(before) | set(now)):
        b, n = before.get(job, {}), now.get(job, {})
        for f in sorted(set(b) | set(n)):
            if b.get(f) != n.get(f):
                bad += 1
                if bad <= 20:
                    print(f"DIFF {job}: {f}")
    print(f"{bad} differing files" if bad else "identical")
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
