"""The dataset summary picture: per-class volume distributions (log scale) and instances per
scan.  Drawn with matplotlib's Agg canvas directly (no pyplot, no display, safe on servers)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from gpuconv.writers.atomic import write_bytes_atomic


def _figure_classes():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RuntimeError("the stats picture needs matplotlib: pip install 'gpuconv[stats]'"
                           ) from None
    return Figure, FigureCanvasAgg


def summary_png(tables, exams, class_names: list[str], title: str = "") -> bytes:
    """PNG bytes: left, each class's instance volumes (mm³, log axis; box + points); right,
    instances of each class per scan over ALL scans (zeros included; box + mean marker)."""
    Figure, FigureCanvasAgg = _figure_classes()
    from matplotlib.ticker import FuncFormatter, MaxNLocator
    exams = sorted(set(exams))
    row_of = {e: n for n, e in enumerate(exams)}
    n_classes = len(class_names)
    volumes = [[] for _ in range(n_classes)]
    per_scan = np.zeros((n_classes, len(exams)), np.int64)
    for t in tables:
        for c, v in zip(t.cls.tolist(), t.volume_mm3.tolist()):
            if c < n_classes:
                volumes[c].append(v)
                if t.exam in row_of:
                    per_scan[c, row_of[t.exam]] += 1
    labels = [f"{name}\n(n={len(v)})" for name, v in zip(class_names, volumes)]
    pos = np.arange(1, n_classes + 1)
    rng = np.random.default_rng(0)  # fixed jitter: the same data gives the same picture

    width = max(10.0, 1.1 * n_classes + 4)
    fig = Figure(figsize=(width, 5.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax_v, ax_n = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})

    filled = [i for i, v in enumerate(volumes) if v]
    if filled:
        ax_v.boxplot([volumes[i] for i in filled], positions=pos[filled], widths=0.6,
                     showfliers=False, medianprops={"color": "tab:red"})
        for i in filled:
            v = np.asarray(volumes[i])
            x = pos[i] + rng.uniform(-0.22, 0.22, len(v))
            ax_v.scatter(x, v, s=10, alpha=0.55, color="tab:blue", linewidths=0, zorder=3)
        ax_v.set_yscale("log")
        ax_v.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    else:
        ax_v.text(0.5, 0.5, "no instances", ha="center", va="center", transform=ax_v.transAxes)
    ax_v.set_xticks(pos, labels, rotation=30, ha="right", fontsize=8)
    ax_v.set_xlim(0.4, n_classes + 0.6)
    ax_v.set_ylabel("instance volume (mm³, log scale)")
    ax_v.set_title("3D instance volumes per class")
    ax_v.grid(axis="y", which="both", alpha=0.25)

    if len(exams) and n_classes:
        ax_n.boxplot(list(per_scan), positions=pos, widths=0.6, showfliers=True,
                     medianprops={"color": "tab:red"},
                     flierprops={"markersize": 3, "alpha": 0.5})
        ax_n.scatter(pos, per_scan.mean(axis=1), marker="D", s=18, color="black", zorder=3,
                     label="mean over all scans")
        ax_n.legend(fontsize=8, loc="upper right")
    ax_n.set_xticks(pos, list(class_names), rotation=30, ha="right", fontsize=8)
    ax_n.set_xlim(0.4, n_classes + 0.6)
    ax_n.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_n.set_ylabel("instances per scan")
    ax_n.set_title(f"Instances per scan ({len(exams)} scans)")
    ax_n.grid(axis="y", alpha=0.25)
    if title:
        fig.suptitle(title)

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_summary_png(path, tables, exams, class_names: list[str], title: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, summary_png(tables, exams, class_names, title))
    return path
