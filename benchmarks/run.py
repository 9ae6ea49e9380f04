#!/usr/bin/env python
"""Thin runner: ``python benchmarks/run.py [gpuconv bench options]`` == ``gpuconv bench ...``.

The benchmark itself lives in ``gpuconv/bench/`` so the installed CLI can run it anywhere;
results measured on named machines are committed under ``benchmarks/results/<machine>/``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpuconv.cli.app import app  # noqa: E402

if __name__ == "__main__":
    app(args=["bench", *sys.argv[1:]], prog_name="gpuconv")
