"""``gpuconv stats``: Table 1 of a corpus (terminal, CSV, Markdown), instances.csv and a PNG."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gpuconv.errors import InputError


def register(app: click.Group) -> None:
    from gpuconv.cli.app import PATH

    @app.command()
    @click.argument("inputs", nargs=-1, required=True)
    @click.option("--out", "-o", type=PATH, default=Path("gpuconv_stats"), help="Folder for "
                  "stats.csv, stats.md, stats.png and instances.csv (+ .parquet with pyarrow).")
    @click.option("--connectivity3d", type=int, default=26, help="3D connectivity of an "
                  "instance: 26 (faces, edges and corners; default), 18 (faces and edges) or 6 "
                  "(faces).")
    @click.option("--patients", type=PATH, default=None, help="CSV exam,patient when a patient "
                  "has several scans (default: one patient per exam).")
    @click.option("--classes", type=PATH, default=None, help="Fixed class list, as for "
                  "convert.")
    @click.option("--single-class", is_flag=True, help="Pool all classes.")
    @click.option("--split", type=PATH, default=None, help="CSV exam,split, as for convert "
                  "(fills the split column).")
    @click.option("--val-fraction", type=float, default=0.2, help="As for convert, when no "
                  "--split.")
    @click.option("--seed", type=int, default=0, help="As for convert, when no --split.")
    @click.option("--backend", default="auto", help="auto (GPU when usable, else CPU), cpu or "
                  "gpu.")
    @click.option("--workers", type=int, default=None, help="Files read at once (default: "
                  "cores).")
    @click.option("--plot/--no-plot", default=True, help="Write stats.png.")
    @click.option("--json", "as_json", is_flag=True, help="Print Table 1 as JSON on stdout.")
    @click.option("--ct", multiple=True, help="CT volumes (files, folders or globs; repeat the "
                  "option) matched by exam id: adds calcium scores (Agatston, volume, mass) per "
                  "class beside Table 1 and writes OUT/calcium.csv per exam.")
    @click.option("--mass-calibration", "calibration", type=float, default=1.0,
                  help="Hydroxyapatite calibration factor c_HA (mg/cm³ per HU) for the mass "
                  "score; default 1.0 = uncalibrated HU·cm³.")
    @click.option("--calcium-connectivity", type=int, default=8, help="2D connectivity of a "
                  "calcium lesion in a slice: 8 (default) or 4.")
    def stats(inputs, out, connectivity3d, patients, classes, single_class, split, val_fraction,
              seed, backend, workers, plot, as_json, ct, calibration, calcium_connectivity):
        """Per-class dataset statistics (Table 1): 3D instances, patients, mean and SD volume
        (mm³), instances per scan, shares of instances and patients.

        Writes OUT/stats.csv, OUT/stats.md, OUT/stats.png (volume distributions, instances per
        scan) and OUT/instances.csv (one row per 3D instance: volume, bounds, centroids).  Exit
        status 1 when any file failed, 2 when the run could not start.
        """
        from gpuconv.results.instances import scan_instances, write_instances
        from gpuconv.analysis.stats import (PNG_NAME, read_patients_csv, render_table1, table1,
                                            table1_json, write_table1)

        from gpuconv.errors import error_line

        def err(msg: str) -> None:
            click.echo(error_line(msg), err=True)

        problem = _unusable_out(out)  # before an hour of reading, not after
        if problem:
            err(problem)
            raise click.exceptions.Exit(2) from None
        try:
            patient_of = read_patients_csv(patients) if patients is not None else None
            scan = scan_instances(list(inputs), backend=backend, connectivity3d=connectivity3d,
                                  classes=classes, single_class=single_class, split_csv=split,
                                  val_fraction=val_fraction, seed=seed, workers=workers,
                                  on_error=lambda p, r: err(f"{p}: {r}"))
            t1 = table1(scan.tables, scan.exams, scan.class_names, patient_of)
            calcium_exams = None
            if ct:  # issue 17: calcium scores beside Table 1, per exam in calcium.csv
                from gpuconv.analysis.calcium import calcium_for_scan
                calcium_exams, t1.calcium = calcium_for_scan(
                    list(inputs), list(ct), scan, classes=classes, single_class=single_class,
                    split_csv=split, val_fraction=val_fraction, seed=seed,
                    calibration=calibration, connectivity=calcium_connectivity,
                    on_error=lambda p, r: err(f"{p}: {r}"))
                for e in calcium_exams.without_ct:
                    click.echo(f"warning: exam '{e}': no CT given, left out of the calcium "
                               "columns", err=True)
            written = write_instances(out, scan.tables, scan.class_names)
            written += write_table1(out, t1)
            if calcium_exams is not None:
                from gpuconv.analysis.calcium import write_exam_csv
                written.append(write_exam_csv(out, calcium_exams.exams, scan.class_names))
            if plot:
                from gpuconv.analysis.plots import write_summary_png
                written.append(write_summary_png(
                    out / PNG_NAME, scan.tables, scan.exams, scan.class_names,
                    title=f"{t1.n_scans} scans, {t1.total.instances} 3D instances "
                          f"(connectivity {connectivity3d})"))
        except (InputError, RuntimeError, ValueError) as exc:
            err(str(exc))
            raise click.exceptions.Exit(2) from None
        except OSError as exc:  # --out vanished, full disk, ...: one line, not a traceback
            where = exc.filename or out
            err(f"{where}: cannot write ({exc.strerror or exc})")
            raise click.exceptions.Exit(2) from None
        if as_json:
            try:  # allow_nan=False: never the non-JSON NaN / Infinity tokens
                doc = {**table1_json(t1), "failed": scan.failures}
                if calcium_exams is not None:
                    doc["calcium"] = calcium_exams.as_json(scan.class_names)
                text = json.dumps(doc, indent=2, allow_nan=False)
            except ValueError as exc:
                err(f"cannot write Table 1 as JSON ({exc})")
                raise click.exceptions.Exit(2) from None
            click.echo(text)
        else:
            render_table1(t1)
            click.echo(f"{len(scan.exams)} file(s) read, {len(scan.failures)} failed "
                       f"[backend {scan.backend}, {scan.seconds:.2f} s]; wrote "
                       + ", ".join(str(p) for p in written))
        failed = scan.failures or (calcium_exams is not None and calcium_exams.failures)
        raise click.exceptions.Exit(1 if failed else 0)


def _unusable_out(out: Path) -> str | None:
    """Why ``--out`` cannot take the results (one line), or None: it is, or can be made, a
    writable folder."""
    import os
    import tempfile
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"{out}: --out is not a folder"
    except OSError as exc:
        return f"{out}: cannot create the --out folder ({exc.strerror or exc})"
    if not out.is_dir():
        return f"{out}: --out is not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".gpuconv-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"{out}: cannot write in the --out folder ({exc.strerror or exc})"
    return None
