"""Command line: a thin click layer over the Python API (``gpuconv.convert`` and friends).

click, not typer: typer 0.29 coerces every option through pydantic, about 130 ms of imports and
adapter building on each start, a quarter of a small conversion (issue 15)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from gpuconv.cli.errors import err, file_error, run_level

#: ``type=PATH``: the value arrives as a pathlib.Path
PATH = click.Path(path_type=Path)
CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


def _version(ctx: click.Context, _param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from gpuconv import __version__
        click.echo(f"gpuconv {__version__}")
        ctx.exit()


@click.group(context_settings=CONTEXT, no_args_is_help=True)
@click.option("--version", is_flag=True, callback=_version, is_eager=True, expose_value=False,
              help="Print the version and exit.")
def app() -> None:
    """Convert 3D segmentation NRRD volumes (3D Slicer .seg.nrrd or plain label maps) into YOLO
    datasets and statistics, on the GPU when there is one."""


@app.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "-o", type=PATH, required=True, help="Output dataset folder.")
@click.option("--split", type=PATH, default=None, help="CSV with columns exam,split "
              "(train/val/test: three splits; a CSV with train and test rows only has its test "
              "exams written to val).")
@click.option("--val-fraction", type=float, default=0.2,
              help="Share of exams sent to val when no --split.")
@click.option("--seed", type=int, default=0, help="Seed for the --val-fraction split.")
@click.option("--connectivity", type=int, default=8, help="2D connectivity of an instance: 8 "
              "(edges and corners, default) or 4 (edges only).")
@click.option("--classes", type=PATH, default=None, help="Fixed class list: YAML (list, "
              "{id: name} or dataset.yaml) or one name per line.")
@click.option("--single-class", is_flag=True, help="Write class 0 for all.")
@click.option("--max-classes", type=int, default=255, help="A plain label map with more "
              "distinct values (or any negative one) is refused as an image (a CT belongs in "
              "--images); ignored with --classes.")
@click.option("--write-empty", is_flag=True, help="Also write empty label files for slices "
              "without instances.")
@click.option("--backend", default="auto", help="auto (GPU when usable, else CPU), cpu or gpu.")
@click.option("--workers", type=int, default=None, help="Workers reading, decoding, labelling "
              "and writing (default: all cores).")
@click.option("--pool", default="auto", help="process (one process per worker: no shared GIL, "
              "fastest for many files), thread (one process; starts at once), hybrid (worker "
              "processes read, decode and write; one labeller process owns the backend; tested "
              "with the CPU, unmeasured on a GPU, never picked by auto) or auto (processes for "
              "--backend cpu from 4 workers and 8 files per worker; threads for the GPU).")
@click.option("--queue", type=int, default=None, help="Decoded volumes allowed to wait between "
              "stages; bounds memory (default 2 x workers).")
@click.option("--format", "fmt", default="boxes", help="boxes (YOLO text per slice), polygons "
              "(YOLO-seg outlines through the boundary pixels' centres, as Ultralytics reads "
              "them; holes filled), table (one boxes.csv/.parquet per run), or a label format "
              "and the table: boxes,table.")
@click.option("--images", multiple=True, help="CT volumes (NRRD, NIfTI, DICOM series folders; "
              "files, folders or globs; repeat the option) matched to label files by exam id, "
              "written as images/{split}/{exam}_{k+1}.png.")
@click.option("--window", default=None, help="HU window for --images: a preset (mediastinum "
              "[default], soft, lung, bone, calcium) or CENTER,WIDTH; three joined by '+' give "
              "RGB.")
@click.option("--channels3", is_flag=True, help="RGB PNGs, one window per channel (default "
              "lung+mediastinum+calcium).")
@click.option("--background-fraction", type=float, default=None, help="Write images only for "
              "labelled slices plus this share of the unlabelled ones (seeded by --seed); "
              "default: every slice.")
@click.option("--compat", default=None, help="coca: what the COCA repository's nrrd_to_yolo.py "
              "writes, byte for byte (class-0 boxes in OUT/yolo/{train,val}_labels; not the "
              "published polygon labels; see docs/datasets.md).")
@click.option("--instances", is_flag=True, help="Also write OUT/instances.csv (+ .parquet): 3D "
              "instances with volumes in mm3, bounds, centroids (see docs/stats.md).")
@click.option("--connectivity3d", type=int, default=26, help="3D connectivity of an instance "
              "for --instances: 26 (default), 18 or 6.")
@click.option("--force", is_flag=True, help="Redo every exam, even those the manifest of an "
              "earlier run records as done.")
@click.option("--scheduler", default=None, help="Dask scheduler address (tcp://host:8786): "
              "label on that cluster.")
@click.option("--scheduler-file", type=PATH, default=None, help="Dask scheduler file, instead "
              "of --scheduler.")
@click.option("--batch-size", type=int, default=4, help="Files per Dask task.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--progress/--no-progress", default=None, show_default=False,
              help="Progress bar (default: on a terminal).")
def convert(inputs, out, split, val_fraction, seed, connectivity, classes, single_class,
            max_classes, write_empty, backend, workers, pool, queue, fmt, images, window,
            channels3, background_fraction, compat, instances, connectivity3d, force,
            scheduler, scheduler_file, batch_size, as_json, progress):
    """Convert label volumes to an Ultralytics dataset:
    OUT/labels/{train,val[,test]}/{exam}_{k+1}.txt, OUT/dataset.yaml and OUT/summary.json.

    Boxes: x = first NRRD axis (i), y = second (j), file per slice k (numbered from 1); a box
    covers whole pixels.  Re-running into the same OUT skips exams whose input and options are
    unchanged (OUT/manifest.jsonl); --force redoes them.  Classes are matched by segment name
    across files.  Exit status is 1 when any file failed (each failure is printed as
    'error: FILE: reason'), 2 when the run could not start (one line), 130 after Ctrl-C (what
    finished is kept; the same command resumes).
    """
    from gpuconv.conversion.options import ConvertOptions
    from gpuconv.conversion.pipeline import convert as run_convert
    with run_level(2):
        opts = ConvertOptions(
            split_csv=split, val_fraction=val_fraction, seed=seed, connectivity=connectivity,
            classes=classes, single_class=single_class, write_empty=write_empty,
            backend=backend, workers=workers, queue=queue, fmt=fmt, force=force,
            scheduler=scheduler, scheduler_file=scheduler_file, batch_size=batch_size,
            images=tuple(images) or None, window=window, channels3=channels3,
            background_fraction=background_fraction, compat=compat, pool=pool,
            instances=instances, connectivity3d=connectivity3d, max_classes=max_classes)
        summary = run_convert(list(inputs), out, opts, progress=progress, on_error=file_error)
    if summary.get("manifest_damaged_lines"):
        click.echo(f"note: {summary['manifest_damaged_lines']} damaged line(s) of "
                   "manifest.jsonl ignored; those exams were converted again", err=True)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif summary.get("compat"):
        click.echo(f"{summary['files']} file(s) converted, {summary['failed']} failed; "
                   f"{summary['boxes']} boxes in {summary['label_files']} label files "
                   f"[--compat {summary['compat']}, {summary['seconds']:.2f} s]")
        click.echo(f"labels: {Path(summary['out']) / 'yolo'}")
    else:
        skipped = summary["skipped_unchanged"]
        click.echo(
            f"{summary['files']} file(s) converted"
            + (f" ({skipped} unchanged since the last run, skipped)" if skipped else "")
            + f", {summary['failed']} failed; {summary['boxes']} boxes in "
            f"{summary['label_files']} label files [backend {summary['backend']}"
            + (f" (auto: {summary['gpu_unavailable']})" if summary.get("gpu_unavailable")
               else "") + ", " + _workers_text(summary) + ", "
            f"{summary['seconds']:.2f} s, {summary['files_per_second']} files/s]")
        if summary.get("auto_choice") and not summary.get("gpu_unavailable"):
            click.echo(f"backend and pool: {summary['auto_choice']}")
        if summary.get("images"):
            click.echo(f"{summary['images']} slice images written")
        share = ", ".join(f"{k} {v:.0%}" for k, v in summary["stage_share"].items())
        click.echo(f"time per stage: {share}")
        click.echo(f"dataset: {summary['dataset_yaml']}")
        click.echo("exams per split: " + ", ".join(
            f"{k} {v}" for k, v in summary["exams_per_split"].items()))
        if summary.get("split_note"):
            click.echo(f"note: {summary['split_note']}")
    if summary.get("interrupted"):
        click.echo("interrupted: the exams above are complete; run the same command again to "
                   "convert the rest", err=True)
        raise click.exceptions.Exit(130)
    raise click.exceptions.Exit(1 if summary["failed"] else 0)


def _workers_text(summary: dict) -> str:
    pool = summary.get("pool", "thread")
    return "on the Dask cluster" if pool == "dask" else f"{summary['workers']} {pool} worker(s)"


@app.command()
@click.argument("file", type=PATH)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def inspect(file, as_json):
    """Show sizes, type, encoding, spacing and segments (name, layer, value, voxels)."""
    from gpuconv.io.describe import inspect_file, render_inspection
    with run_level(1):
        info = inspect_file(file)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        render_inspection(info)


@app.command()
@click.argument("out", type=PATH)
@click.option("-n", "n", type=int, default=20, help="Number of exams.")
@click.option("--size", default="512x512x64", help="Volume size IxJxK.")
@click.option("--seed", type=int, default=0, help="Random seed (the corpus is a function of "
              "it).")
@click.option("--format", "fmt", default="nrrd", help="nrrd (.seg.nrrd), nifti (.nii.gz + "
              "classes.txt) or dicom-seg (.dcm).")
@click.option("--ct/--no-ct", default=True, help="Also write a matching synthetic CT per "
              "exam, OUT/ct/CT_NNNN.nrrd (HU, same grid, calcium where the labels are), for "
              "convert --images.")
@click.option("--ct-format", "ct_fmt", default="nrrd", help="The CTs as nrrd, nifti (.nii.gz) "
              "or dicom (a series folder per exam).")
def synth(out, n, size, seed, fmt, ct, ct_fmt):
    """Write a synthetic COCA-like corpus (.seg.nrrd with 8 named classes + split.csv, and a
    matching CT per exam in OUT/ct)."""
    from gpuconv.dataset.synth import CLASS_NAMES, synth_corpus
    from gpuconv.io.corpus_formats import CT_FORMATS, FORMATS, rewrite_corpus, rewrite_cts
    if fmt not in FORMATS or ct_fmt not in CT_FORMATS:
        err(f"--format must be one of {', '.join(FORMATS)} and --ct-format one of "
            f"{', '.join(CT_FORMATS)}, got '{fmt}', '{ct_fmt}'")
        raise click.exceptions.Exit(2)
    try:
        shape = tuple(int(s) for s in size.lower().split("x"))
        assert len(shape) == 3 and min(shape) > 0
    except (ValueError, AssertionError):
        err(f"--size must look like 512x512x64, got '{size}'")
        raise click.exceptions.Exit(2) from None
    paths = rewrite_corpus(synth_corpus(out, n=n, shape=shape, seed=seed, ct=ct), fmt,
                           CLASS_NAMES)
    if ct:
        rewrite_cts(Path(out) / "ct", ct_fmt)
    click.echo(f"wrote {len(paths)} exams" + (f", their CTs in {Path(out) / 'ct'}" if ct else "")
               + f" and split.csv to {out}")

#: click >= 8.2 raises this for a command given no arguments (its message is the help text)
_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main() -> None:
    """The console entry point: click's usage errors (a bad value, a missing option, an unknown
    command) become the project's one ``error:`` line, exit status 2, like every other error."""
    try:
        code = app.main(prog_name="gpuconv", standalone_mode=False)
    except _NO_ARGS as exc:  # bare ``gpuconv`` / ``gpuconv convert``: the help, as asked
        click.echo(exc.format_message())
        sys.exit(0)
    except click.exceptions.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "gpuconv"
        err(f"{exc.format_message()} (see '{where} -h')")
        sys.exit(2)
    except click.exceptions.Abort:
        err("aborted")
        sys.exit(1)
    sys.exit(code or 0)


def _register_commands() -> None:
    """The commands that live in their own modules."""
    from gpuconv.cli import agree, assemble, bench, preview, stats
    for module in (agree, stats, bench, preview, assemble):
        module.register(app)


_register_commands()



if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
