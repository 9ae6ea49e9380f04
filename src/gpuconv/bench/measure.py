"""Measuring tools: repeat statistics, peak host memory, the machine and library versions.

Peak host memory is sampled from a background thread (RSS every 2 ms, reported above the level
at the start of the measured call) because the kernels allocate outside ``tracemalloc``'s view
(Numba's allocator) and ``ru_maxrss`` cannot be reset between contenders.
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from datetime import datetime, timezone
from importlib import metadata

LIBRARIES = ("gpuconv", "numpy", "scipy", "numba", "numba-cuda", "pynrrd", "deflate", "zlib-ng",
             "isal", "connected-components-3d", "psutil", "matplotlib", "cupy-cuda13x",
             "cupy-cuda12x", "cucim-cu13", "cucim-cu12")


def summarise(values: list[float]) -> dict:
    """median / min / max / n of repeated timings (seconds)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def _rss_reader():
    try:
        import psutil
        proc = psutil.Process()
        return lambda: proc.memory_info().rss
    except ImportError:
        page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

        def statm():
            try:
                with open("/proc/self/statm") as fh:
                    return int(fh.read().split()[1]) * page
            except OSError:
                return 0
        return statm


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.peak_mb``: highest RSS above the starting RSS."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self._rss = _rss_reader()
        self.peak_mb = 0.0

    def __enter__(self):
        self._base = self._rss()
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss())
        self.peak_mb = (self._peak - self._base) / 2**20
        return False


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    """Cores this process may use (affinity-aware), which is what the workers can get."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def gpu_info() -> dict | None:
    """Name, memory and driver of device 0 when CuPy sees one; None otherwise."""
    try:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        return {"name": name.decode() if isinstance(name, bytes) else str(name),
                "memory_gb": round(props["totalGlobalMem"] / 2**30, 1),
                "driver": cupy.cuda.runtime.driverGetVersion(),
                "runtime": cupy.cuda.runtime.runtimeGetVersion()}
    except Exception:
        return None


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine(name: str | None = None) -> dict:
    gpu = gpu_info()
    n = cores()
    auto = (f"{gpu['name'].split()[-1].lower()}-" if gpu else "cpu-") + f"{n}core"
    return {"name": name or auto, "hostname": platform.node(), "platform": platform.platform(),
            "cpu_model": cpu_model(), "cores": n, "logical_cpus": os.cpu_count(),
            "memory_gb": memory_gb(), "gpu": gpu}


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Stopwatch:
    """Named stage timings for one run: ``with sw("decode"): ...``.

    ``seconds`` is wall time (what the issue's numbers are); ``cpu_seconds`` is this process's
    CPU time over the same spans, which other load on a shared machine inflates far less.
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    def __call__(self, stage: str):
        sw = self

        class _Ctx:
            def __enter__(self):
                self.c0 = time.process_time()
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                sw.seconds[stage] = sw.seconds.get(stage, 0.0) + time.perf_counter() - self.t0
                sw.cpu_seconds[stage] = (sw.cpu_seconds.get(stage, 0.0)
                                         + time.process_time() - self.c0)
                return False
        return _Ctx()
