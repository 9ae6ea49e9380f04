"""The options of one ``convert`` run: one dataclass, validated once, before anything is read.

``ConvertOptions`` holds every setting of a run (the Python API's keyword arguments and the
CLI's flags map onto its fields one to one: ``--val-fraction`` is ``val_fraction``).  Invalid
values raise :class:`gpuconv.errors.OptionError`, which names the field; the CLI prints the
flag instead.  Derived choices (the label formats, the pool) are methods, so nothing is decided
twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from gpuconv.errors import OptionError

FORMATS = ("boxes", "polygons", "table")
POOLS = ("auto", "process", "thread", "hybrid")
BACKENDS = ("auto", "cpu", "gpu")
PROCESS_MIN_FILES_PER_WORKER = 8   # below this, starting the processes costs more than it wins


def parse_formats(fmt) -> tuple[str, ...]:
    """'boxes' (default), 'polygons' (YOLO-seg), 'table', or a label format and the table
    joined by a comma ('boxes,table').  Boxes and polygons never go together: Ultralytics reads a
    whole label file as polygons when any line has more than 6 fields."""
    items = [f.strip().lower() for f in (fmt.split(",") if isinstance(fmt, str) else fmt)]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise OptionError("fmt", f"unknown format '{','.join(bad)}' (choose from "
                                 f"{', '.join(FORMATS)})")
    if "boxes" in items and "polygons" in items:
        raise OptionError("fmt", "boxes and polygons cannot go together (a label file holds "
                                 "one or the other)")
    return tuple(sorted(set(items), key=FORMATS.index))


def choose_pool(pool: str, n_workers: int, n_files: int, backend: str = "cpu") -> str:
    """'process' or 'thread' for ``pool`` = auto | process | thread; 'hybrid' only when asked.

    auto picks processes only for the CPU backend: on the H100 machine (16 cores) worker
    processes converted 97 scans/s against 77-81 with threads, but with the GPU backend 39-48
    against 55 (each process needs its own CUDA context, and the contexts take turns on the
    GPU); see benchmarks/results/h100-16core/RUN.md.  auto never picks 'hybrid' (CPU worker
    processes feeding one labeller process, hybrid_pool.py): it is tested with the CPU labeller
    only and unmeasured on a GPU."""
    if pool not in POOLS:
        raise OptionError("pool", f"unknown pool '{pool}' (choose from {', '.join(POOLS)})")
    if pool != "auto":
        return pool
    enough = n_files >= PROCESS_MIN_FILES_PER_WORKER * n_workers
    return "process" if backend == "cpu" and n_workers >= 4 and enough else "thread"


# End to end on the 16-core H100 server (benchmarks/results/h100-16core/RUN.md, run 5: 120
# sparse 512x512x64 scans): CPU backend in worker processes 278 scans/s, GPU backend with
# threads 47, GPU backend in worker processes 20, CPU backend with threads 45.
MEASURED_AUTO = ("CPU worker processes measured fastest end to end on the 16-core H100 server "
                 "(278 scans/s vs 47 with the GPU backend; benchmarks/results/h100-16core)")


def choose_execution(backend, pool: str, n_workers: int, n_files: int,
                     gpu_reason=None) -> tuple[object, str, str | None]:
    """(backend, pool, why) for the requested ``backend`` and ``pool``.

    ``backend='auto'`` never picks a configuration the committed measurements show slower:
    where worker processes pay off (``choose_pool`` with the CPU backend gives 'process'), the
    CPU backend in processes (the GPU server's fastest); otherwise the GPU when it is usable
    (threads; one CUDA context), else the CPU.  ``gpu_reason()``: None when the GPU backend
    can run here.  ``why`` says what auto decided and on what grounds (None when nothing was
    left to choose)."""
    if not isinstance(backend, str) or backend.lower() != "auto":
        name = backend if not isinstance(backend, str) else backend.lower()
        be_name = name if isinstance(name, str) else getattr(name, "name", "cpu")
        return name, choose_pool(pool, n_workers, n_files, be_name), None
    if choose_pool(pool, n_workers, n_files, "cpu") == "process":
        return "cpu", "process", f"auto: {MEASURED_AUTO}"
    reason = gpu_reason() if gpu_reason is not None else "GPU not probed"
    if reason is None:
        return "gpu", choose_pool(pool, n_workers, n_files, "gpu"), (
            "auto: the GPU (threads), as too few files or workers for worker processes")
    return "cpu", choose_pool(pool, n_workers, n_files, "cpu"), f"auto: {reason}"


@dataclass(frozen=True)
class ConvertOptions:
    """Every setting of a ``convert`` run (see :func:`gpuconv.convert` for their meaning)."""

    split_csv: Path | None = None
    val_fraction: float = 0.2
    seed: int = 0
    connectivity: int = 8
    classes: Path | None = None
    single_class: bool = False
    write_empty: bool = False
    backend: str = "auto"                 # or a Backend object (backends/base.py)
    workers: int | None = None
    queue: int | None = None
    fmt: str = "boxes"
    force: bool = False
    scheduler: str | None = None
    scheduler_file: Path | None = None
    batch_size: int = 4
    images: tuple | None = None
    window: str | None = None
    channels3: bool = False
    background_fraction: float | None = None
    compat: str | None = None
    instances: bool = False
    connectivity3d: int = 26
    pool: str = "auto"
    max_classes: int = 255        # plain maps with more distinct values are refused (a CT)

    def __post_init__(self) -> None:
        if self.images is not None and not isinstance(self.images, tuple):
            imgs = [self.images] if isinstance(self.images, (str, Path)) else list(self.images)
            object.__setattr__(self, "images", tuple(imgs) or None)
        if self.connectivity not in (4, 8):
            raise OptionError("connectivity", f"must be 4 or 8, got {self.connectivity}")
        if self.connectivity3d not in (6, 18, 26):
            raise OptionError("connectivity3d", f"must be 6, 18 or 26, got {self.connectivity3d}")
        if not 0.0 <= self.val_fraction <= 1.0:
            raise OptionError("val_fraction", f"must be between 0 and 1, got {self.val_fraction}")
        if self.background_fraction is not None and not 0.0 <= self.background_fraction <= 1.0:
            raise OptionError("background_fraction", "must be between 0 and 1, got "
                                                     f"{self.background_fraction}")
        for name in ("workers", "queue"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise OptionError(name, f"must be at least 1, got {v}")
        if self.max_classes < 1:
            raise OptionError("max_classes", f"must be at least 1, got {self.max_classes}")
        if self.batch_size < 1:
            raise OptionError("batch_size", f"must be at least 1, got {self.batch_size}")
        if not isinstance(self.backend, str):   # a Backend object (e.g. the simulator's)
            if not hasattr(self.backend, "slice_components"):
                raise OptionError("backend", f"not a backend: {self.backend!r}")
        elif self.backend.lower() not in BACKENDS:
            raise OptionError("backend", f"unknown backend '{self.backend}' (choose from "
                                         f"{', '.join(BACKENDS)})")
        choose_pool(self.pool, 1, 0)
        formats = parse_formats(self.fmt)
        if self.compat is not None:
            if self.compat != "coca":
                raise OptionError("compat", f"unknown compat '{self.compat}' (choose from coca)")
            if self.images or formats != ("boxes",):
                raise OptionError("compat", "'coca' writes the published script's box labels "
                                            "only; it cannot be combined with images or another "
                                            "format")
        if not self.images and (self.window is not None or self.channels3
                                or self.background_fraction is not None):
            raise OptionError("images", "window, channels3 and background_fraction need images")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @property
    def formats(self) -> tuple[str, ...]:
        return parse_formats(self.fmt)

    @property
    def distributed(self) -> bool:
        return self.scheduler is not None or self.scheduler_file is not None

    @property
    def n_workers(self) -> int:
        return max(1, self.workers or os.cpu_count() or 1)

    @property
    def depth(self) -> int:
        """Decoded volumes allowed to wait between two stages (bounds memory)."""
        return self.queue or 2 * self.n_workers
