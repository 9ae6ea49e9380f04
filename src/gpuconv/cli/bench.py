"""``gpuconv bench``: labelling and end-to-end throughput, GPU vs CPU vs the published method."""

from __future__ import annotations

from typing import Optional

import click


def _split(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def register(app: click.Group) -> None:
    from gpuconv.cli.app import PATH

    @app.command()
    @click.option("--out", "-o", type=PATH, default=None, help="Results folder (default "
                  "benchmarks/results/<machine>).")
    @click.option("--quick", is_flag=True, help="Tiny smoke run (seconds).")
    @click.option("--repeats", type=int, default=None, help="Timed runs per contender and "
                  "workload (default 5, quick 2; slow contenders stop early at --budget).")
    @click.option("--contenders", default=None, help="Comma list from gpuconv-cpu, gpuconv-gpu, "
                  "published, cc3d, cc3d-script, kdtree-script (default all that can run "
                  "here).")
    @click.option("--workloads", default=None, help="Comma list of workload names, 'corpus' "
                  "for the end-to-end corpus, 'vessel-pairs' for the agreement pairs (default "
                  "all; names are listed in the JSON).")
    @click.option("--seed", type=int, default=0, help="Seed the workloads are generated from.")
    @click.option("--workers", type=int, default=None, help="Workers for the end-to-end runs "
                  "(default: usable cores).")
    @click.option("--machine", default=None, help="Machine name for the results folder and "
                  "report (default e.g. cpu-2core).")
    @click.option("--budget", type=float, default=None, help="Seconds one contender may spend "
                  "repeating one workload (default 15).")
    @click.option("--work-dir", type=PATH, default=None, help="Where the generated inputs go "
                  "(default: system temp; removed after).")
    @click.option("--plot/--no-plot", default=True, help="Write bench.png.")
    @click.option("--corpus-scans", type=int, default=None, help="Scans in the end-to-end "
                  "corpus (default 40, quick 4); more shows the steady-state rate.")
    @click.option("--full-published", is_flag=True, help="Run the published method on every "
                  "slice and scan (tens of minutes) instead of timing a sample and scaling.")
    def bench(out, quick, repeats, contenders, workloads, seed, workers, machine, budget,
              work_dir, plot, corpus_scans, full_published):
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
            raise click.exceptions.Exit(2) from None
        if not doc["gpu"]["available"]:
            click.echo(f"GPU skipped: {doc['gpu']['skipped_reason']}")
        for t in doc["targets"] + doc.get("targets_vs_scripts", []):
            met = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
            click.echo(f"[{met}] {t['target']}: {t['measured']}")
        click.echo(f"results: {doc['out_dir']}/bench.json, bench.md"
                   + (", bench.png" if doc["plot_written"] else
                      " (no plot: matplotlib missing or --no-plot)"))
