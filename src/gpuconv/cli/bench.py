"""``gpuconv bench``: labelling and end-to-end throughput, GPU vs CPU vs the published method."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _split(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results folder (default "
                                           "benchmarks/results/<machine>)."),
        quick: bool = typer.Option(False, "--quick", help="Tiny smoke run (seconds)."),
        repeats: Optional[int] = typer.Option(None, help="Timed runs per contender and workload "
                                              "(default 5, quick 2; slow contenders stop "
                                              "early at --budget)."),
        contenders: Optional[str] = typer.Option(None, help="Comma list from gpuconv-cpu, "
                                                 "gpuconv-gpu, published, cc3d, cc3d-script, "
                                                 "kdtree-script (default all that can run "
                                                 "here)."),
        workloads: Optional[str] = typer.Option(None, help="Comma list of workload names, "
                                                "'corpus' for the end-to-end corpus (default "
                                                "all; names are listed in the JSON)."),
        seed: int = typer.Option(0, help="Seed the workloads are generated from."),
        workers: Optional[int] = typer.Option(None, help="Workers for the end-to-end runs "
                                              "(default: usable cores)."),
        machine: Optional[str] = typer.Option(None, help="Machine name for the results folder "
                                              "and report (default e.g. cpu-2core)."),
        budget: Optional[float] = typer.Option(None, help="Seconds one contender may spend "
                                               "repeating one workload (default 15)."),
        work_dir: Optional[Path] = typer.Option(None, help="Where the generated inputs go "
                                                "(default: system temp; removed after)."),
        plot: bool = typer.Option(True, "--plot/--no-plot", help="Write bench.png."),
        corpus_scans: Optional[int] = typer.Option(None, "--corpus-scans", help="Scans in the "
                                                   "end-to-end corpus (default 40, quick 4); "
                                                   "more shows the steady-state rate."),
        full_published: bool = typer.Option(False, "--full-published", help="Run the published "
                                            "method on every slice and scan (tens of minutes) "
                                            "instead of timing a sample and scaling."),
    ):
        """Benchmark labelling and end-to-end throughput on generated workloads: gpuconv CPU,
        gpuconv GPU (when a device is usable), the published COCA method and cc3d.  Writes
        bench.json, bench.md and bench.png."""
        from gpuconv.bench import run_bench
        given = [("--quick", quick), ("--out", out), ("--repeats", repeats),
                 ("--contenders", contenders), ("--workloads", workloads),
                 ("--seed", seed if seed else None), ("--workers", workers),
                 ("--machine", machine), ("--budget", budget), ("--work-dir", work_dir),
                 ("--no-plot", not plot), ("--full-published", full_published),
                 ("--corpus-scans", corpus_scans)]
        command = " ".join(["gpuconv bench"] + [
            flag if isinstance(v, bool) else f"{flag} {v}" for flag, v in given
            if v is not None and v is not False])
        try:
            doc = run_bench(out, quick=quick, repeats=repeats, contenders=_split(contenders),
                            workloads=_split(workloads), seed=seed, workers=workers,
                            machine_name=machine, budget_s=budget, work_dir=work_dir,
                            command=command, plot=plot,
                            full_published=full_published, corpus_scans=corpus_scans)
        except ValueError as exc:
            from gpuconv.cli.errors import err, message
            err(message(exc))
            raise typer.Exit(2) from None
        if not doc["gpu"]["available"]:
            typer.echo(f"GPU skipped: {doc['gpu']['skipped_reason']}")
        for t in doc["targets"] + doc.get("targets_vs_scripts", []):
            met = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
            typer.echo(f"[{met}] {t['target']}: {t['measured']}")
        typer.echo(f"results: {doc['out_dir']}/bench.json, bench.md"
                   + (", bench.png" if doc["plot_written"] else
                      " (no plot: matplotlib missing or --no-plot)"))
