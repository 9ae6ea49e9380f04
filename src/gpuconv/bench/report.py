"""The benchmark's human outputs: a Markdown report and a throughput-vs-size plot."""

from __future__ import annotations

from pathlib import Path

from gpuconv.bench.contenders import STAGES


E2E_NOTES = {
    "gpuconv-cpu": "gpuconv.convert, backend cpu, output under the work dir",
    "gpuconv-cpu-1w": "same, 1 worker",
    "gpuconv-cpu-tmpfs-out": "same, output written to /dev/shm (no disk cost)",
    "gpuconv-cpu-proc": "same, --pool process: one worker process each (forkserver already "
                        "running; a fresh CLI run adds its start, about a second)",
    "gpuconv-cpu-table": "same, --format table: all boxes in one boxes.csv (+ .parquet), no "
                         "per-slice files",
    "gpuconv-gpu": "gpuconv.convert, backend gpu",
    "gpuconv-gpu-proc": "same, --pool process: a CUDA context and stream per worker process",
    "gunzip-floor": "read + libdeflate gunzip of each payload, nothing else",
    "gunzip-floor-1w": "same, 1 thread",
}


def _ms(stat) -> str:
    if not stat:
        return "-"
    m = stat["median"] * 1e3
    return f"{m:.1f}" if m >= 10 else f"{m:.2f}"


def _spread(stat) -> str:
    if not stat:
        return "-"
    return f"{stat['min'] * 1e3:.3g}-{stat['max'] * 1e3:.3g}"


def _x(v) -> str:
    return "-" if v is None else f"{v:.1f}x" if v >= 10 else f"{v:.2f}x"


def _num(v, fmt="{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def markdown(doc: dict) -> str:
    m = doc["machine"]
    gpu = m.get("gpu")
    v = doc["versions"]
    lines = [
        f"# gpuconv bench: {m['name']}",
        "",
        f"- date: {doc['date']}; command: `{doc['command']}`",
        f"- machine: {m['cpu_model']}, {m['cores']} core(s) usable, "
        f"{m.get('memory_gb')} GB RAM; GPU: "
        + (f"{gpu['name']} ({gpu['memory_gb']} GB)" if gpu else "none"),
        "- libraries: " + ", ".join(f"{k} {v[k]}" for k in v),
        f"- repeats: up to {doc['options']['repeats']} per contender and workload "
        f"(median shown, min-max in the spread column), seed {doc['options']['seed']}, "
        f"{doc['options']['workers']} worker(s) end to end",
    ]
    if not doc["gpu"]["available"]:
        lines.append(f"- **GPU skipped**: {doc['gpu']['skipped_reason']}")
    for name, why in doc["skipped"].items():
        if name != "gpuconv-gpu":
            lines.append(f"- {name} skipped: {why}")
    lines += ["", "## Headline ratios", ""]
    h = doc["headline"]
    if "e2e_speedup_vs_published" in h:
        lines.append(f"- end to end, corpus: gpuconv CPU is **{_x(h['e2e_speedup_vs_published'])}"
                     f"** faster than the published method ({doc['options']['workers']} workers "
                     f"vs its single process)"
                     + (f"; {_x(h['e2e_speedup_vs_published_1_worker'])} with 1 worker"
                        if h.get("e2e_speedup_vs_published_1_worker") else ""))
    if "e2e_over_gunzip_floor" in h:
        lines.append(f"- end to end, corpus: gpuconv CPU takes **{_x(h['e2e_over_gunzip_floor'])}**"
                     " the time of just reading + gunzipping the same files (same workers)"
                     + "".join(f"; {_x(h[k])} {what}" for k, what in
                               (("e2e_proc_over_gunzip_floor", "with --pool process"),
                                ("e2e_table_over_gunzip_floor", "with --format table "
                                 "(no per-slice files)")) if k in h))
    if "e2e_gpu_speedup_vs_cpu" in h:
        lines.append(f"- end to end, corpus: GPU backend {_x(h['e2e_gpu_speedup_vs_cpu'])} the "
                     "CPU backend's throughput")
    lines += ["", "gpuconv CPU speed-up per workload (> 1: gpuconv faster).  Labelling is "
              "compared on wall time and on CPU time; the stages are single-threaded, so CPU "
              "time is the work itself and is far less disturbed by other load on the machine.",
              "", "| workload | label vs published (wall / CPU) | label vs cc3d (wall / CPU) | "
              "per scan, read to write, vs published |", "|---|---:|---:|---:|"]
    for wl, row in h["per_workload"].items():
        lines.append(f"| {wl} | {_x(row.get('label_speedup_vs_published'))} / "
                     f"{_x(row.get('label_speedup_vs_published_cpu_time'))} | "
                     f"{_x(row.get('label_speedup_vs_cc3d'))} / "
                     f"{_x(row.get('label_speedup_vs_cc3d_cpu_time'))} | "
                     f"{_x(row.get('end_to_end_speedup_vs_published'))} |")

    if doc["end_to_end"]:
        corpus = next(w for w in doc["workloads"] if w["family"] == "corpus")
        lines += ["", f"## End to end: {corpus['files']} scans "
                      f"{'x'.join(map(str, corpus['shape']))}"
                  f" ({corpus['foreground']:.3%} foreground on average)", "",
                  "| contender | workers | seconds (median) | min-max | scans/s | Mvox/s | "
                  "peak host MB | note |", "|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in doc["end_to_end"]:
            s = r["seconds"]
            note = E2E_NOTES.get(r["contender"], "")
            if isinstance(r.get("info"), dict) and r["info"].get("note"):
                note = r["info"]["note"]
            lines.append(f"| {r['contender']} | {r['workers']} | {s['median']:.3f} | "
                         f"{s['min']:.3f}-{s['max']:.3f} (n={s['n']}) | {r['scans_per_s']:.2f} | "
                         f"{r['mvox_s']:.0f} | {r['peak_host_mb']:.0f} | {note} |")

    if doc.get("whole_process"):
        from gpuconv.bench.whole_process import markdown_lines
        lines += markdown_lines(doc["whole_process"], doc["machine"], doc.get("load_average"))
    lines += ["", "## Stages per workload (one file at a time, single thread; ms)", "",
              "Wall-clock medians; CPU = this process's CPU time for the whole run (well below "
              "the wall total when the disk or other load on the machine is the wait).", "",
              "| workload | contender | " + " | ".join(STAGES) + " | total | spread | CPU | "
              "label Mvox/s | scans/s | components | peak host MB |",
              "|---|---|" + "---:|" * (len(STAGES) + 7)]
    for r in doc["results"]:
        st = r["stages"]
        flag = " *" if any("scaled" in n for n in r["notes"]) else ""
        lines.append(
            f"| {r['workload']} | {r['contender']}{flag} | "
            + " | ".join(_ms(st[s]) for s in STAGES)
            + f" | {_ms(r['total'])} | {_spread(r['total'])} | {_ms(r.get('total_cpu'))}"
            f" | {_num(r['label_mvox_s'], '{:.0f}')}"
            f" | {_num(r['scans_per_s'], '{:.2f}')} | {r['components']} | "
            f"{r['peak_host_mb']:.0f} |")
    lines += ["", "Workloads:", ""]
    for w in doc["workloads"]:
        exp = (f", {w['expected_components']} components by construction"
               if w["expected_components"] else "")
        lines.append(f"- {w['name']}: {w['files']} file(s) {'x'.join(map(str, w['shape']))}, "
                     f"{w['foreground']:.3%} foreground{exp}")
    lines += ["", "Notes:", ""]
    lines += [f"- {k}: {v}" for k, v in doc["conventions"].items()]
    if any("scaled" in n for r in doc["results"] for n in r["notes"]):
        lines.append("- `*`: the published method was timed on a sample of evenly spread slices "
                     "of that workload and scaled to all slices (a full run of its per-value "
                     "labelling on every slice takes minutes; `--full-published` runs it all)")
    la = doc.get("load_average") or {}
    if la.get("start"):
        lines.append(f"- load average (1, 5, 15 min) at start {la['start']}, at end {la['end']}: "
                     "other work on the machine slows every contender; compare ratios")
    lines.append("- components differ between contenders where connectivity differs (published "
                 "uses 4, the others 8)")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in doc["targets"] + doc.get("targets_vs_scripts", []):
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['measured'] or '-'} | {met} |")
    lines.append("")
    return "\n".join(lines)


def write_markdown(doc: dict, path: Path) -> None:
    Path(path).write_text(markdown(doc))


def write_plot(doc: dict, path: Path) -> bool:
    """Throughput vs volume size per contender (the ``sparse-*`` size sweep); False without
    matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = {w["name"]: w["voxels_per_file"] for w in doc["workloads"]}
    sweep = [r for r in doc["results"] if r["workload"].startswith("sparse-")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    styles = {"gpuconv-cpu": ("tab:blue", "o"), "gpuconv-gpu": ("tab:green", "s"),
              "published": ("tab:red", "v"), "cc3d": ("tab:orange", "^")}
    for ax, key, title in ((axes[0], "end_to_end_mvox_s", "End to end per scan (read..write)"),
                           (axes[1], "label_mvox_s", "Labelling stage only")):
        for name in dict.fromkeys(r["contender"] for r in sweep):
            pts = sorted((sizes[r["workload"]] / 1e6, r[key]) for r in sweep
                         if r["contender"] == name and r[key])
            if not pts:
                continue
            color, marker = styles.get(name, ("gray", "x"))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color,
                    label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("volume size (Mvoxel)")
        ax.set_ylabel("throughput (Mvoxel/s, single thread)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    m = doc["machine"]
    fg = [w["foreground"] for w in doc["workloads"] if w["name"].startswith("sparse-")]
    fig.suptitle(f"gpuconv bench on {m['name']} ({m['cpu_model']}, {m['cores']} cores"
                 + (f", {m['gpu']['name']}" if m.get("gpu") else ", no GPU") + ")"
                 + (f"; sparse calcium maps, {min(fg):.2%} foreground" if fg else ""),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
