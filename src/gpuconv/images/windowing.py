"""HU windowing: CT values -> 8-bit grey levels, on the CPU or (lazily imported) CuPy.

Formula: the linear VOI LUT of DICOM PS3.3 C.11.2.1.2, with output range 0..255 rounded half up:
    x <= c - 0.5 - (w-1)/2  -> 0
    x >  c - 0.5 + (w-1)/2  -> 255
    else                    -> floor(((x - (c - 0.5)) / (w - 1) + 0.5) * 255 + 0.5)
Integer CT (the usual case) is windowed through a lookup table built on the host with that
formula, so the CPU and GPU paths give the same bytes by construction (the GPU only indexes the
table); float CT is windowed with the formula directly (float64 on both devices).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpuconv.errors import OptionError

# name -> (center, width) in HU.  mediastinum/lung/bone are the usual radiology presets;
# "calcium" is this project's high-density window: 100..1100 HU, so soft tissue and blood are
# black and calcifications (>= 130 HU by the Agatston threshold) and bone are graded bright.
PRESETS: dict[str, tuple[float, float]] = {
    "mediastinum": (40.0, 400.0),
    "soft": (50.0, 350.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "calcium": (600.0, 1000.0),
}
DEFAULT_WINDOW = "mediastinum"
DEFAULT_WINDOWS_3 = "lung+mediastinum+calcium"
_LUT_MAX = 1 << 22  # integer ranges up to this many values go through a table


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    name: str = ""

    def __str__(self) -> str:
        return self.name or f"{self.center:g},{self.width:g}"


def parse_window(spec: str) -> Window:
    """``mediastinum`` (a preset) or ``CENTER,WIDTH`` in HU."""
    s = spec.strip().lower()
    if s in PRESETS:
        c, w = PRESETS[s]
        return Window(c, w, s)
    parts = s.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        c, w = float(parts[0]), float(parts[1])
    except ValueError:
        raise OptionError("window", f"'{spec}' is neither a preset ({', '.join(PRESETS)}) nor "
                         "CENTER,WIDTH in HU") from None
    if not (np.isfinite(c) and np.isfinite(w)) or w < 1:
        raise OptionError("window", f"width must be >= 1 HU, got '{spec}'")
    return Window(c, w)


def parse_windows(spec: str | None, channels3: bool = False) -> list[Window]:
    """One window (grey PNG) or three joined by '+' (RGB PNG, one window per channel).

    ``spec`` None means the default: ``mediastinum``, or ``lung+mediastinum+calcium`` with
    ``channels3``."""
    if spec is None:
        spec = DEFAULT_WINDOWS_3 if channels3 else DEFAULT_WINDOW
    windows = [parse_window(p) for p in spec.split("+")]
    if channels3 and len(windows) != 3:
        raise OptionError("window", f"channels3 needs three windows joined by '+', got '{spec}'")
    if len(windows) not in (1, 3):
        raise OptionError("window", f"one window or three joined by '+', got '{spec}'")
    return windows


def window_formula(x: np.ndarray, w: Window, xp=np) -> np.ndarray:
    """The DICOM linear window on float64 values, as uint8 (``xp`` is numpy or cupy)."""
    x = x.astype(xp.float64, copy=False)
    c, width = float(w.center), float(w.width)
    lo = c - 0.5 - (width - 1.0) / 2.0
    hi = c - 0.5 + (width - 1.0) / 2.0
    if width > 1.0:
        y = xp.floor(((x - (c - 0.5)) / (width - 1.0) + 0.5) * 255.0 + 0.5)
    else:
        y = xp.zeros_like(x)
    y = xp.where(x <= lo, 0.0, xp.where(x > hi, 255.0, y))
    return xp.clip(y, 0, 255).astype(xp.uint8)


def window_lut(vmin: int, vmax: int, w: Window) -> np.ndarray:
    """uint8 table for the integers vmin..vmax (index = value - vmin)."""
    return window_formula(np.arange(vmin, vmax + 1, dtype=np.int64), w)


def _use_lut(ct) -> bool:
    return ct.dtype.kind in "iu" and ct.size > 0


def window_cpu(ct: np.ndarray, windows: list[Window]) -> list[np.ndarray]:
    """One uint8 array per window, same shape as ``ct``."""
    if _use_lut(ct):
        vmin, vmax = int(ct.min()), int(ct.max())
        if vmax - vmin < _LUT_MAX:
            idx = ct.astype(np.int64) - vmin if vmin else ct
            return [np.take(window_lut(vmin, vmax, w), idx) for w in windows]
    return [window_formula(ct, w) for w in windows]


def window_gpu(ct: np.ndarray, windows: list[Window]) -> list[np.ndarray]:
    """Same result as ``window_cpu`` computed with CuPy; returns host arrays.

    Integer CT: the tables are built on the host (the same code as the CPU path) and the GPU
    only gathers from them, so the bytes are identical to the CPU path by construction.
    Not run in this project's CI (no GPU there); see tests/test_images.py::test_gpu_window.
    """
    import cupy as cp
    d = cp.asarray(ct)
    if _use_lut(ct):
        vmin, vmax = int(d.min()), int(d.max())
        if vmax - vmin < _LUT_MAX:
            idx = d.astype(cp.int64) - vmin
            return [cp.asnumpy(cp.asarray(window_lut(vmin, vmax, w))[idx]) for w in windows]
    return [cp.asnumpy(window_formula(d, w, xp=cp)) for w in windows]


def window_volume(ct: np.ndarray, windows: list[Window], use_gpu: bool = False) -> np.ndarray:
    """(I, J, K) CT -> uint8 (I, J, K) for one window or (I, J, K, 3) for three."""
    planes = window_gpu(ct, windows) if use_gpu else window_cpu(ct, windows)
    if len(planes) == 1:
        return planes[0]
    return np.stack(planes, axis=-1)
