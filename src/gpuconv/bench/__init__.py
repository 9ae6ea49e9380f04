"""Throughput benchmark (``gpuconv bench``): gpuconv CPU/GPU vs the published COCA method and
cc3d, with stage timings, on synthetic workloads generated from a seed.  See benchmarks/README.md.
"""

from gpuconv.bench.runner import run_bench

__all__ = ["run_bench"]
