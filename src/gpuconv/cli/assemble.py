"""``gpuconv assemble``: per-slice YOLO text files (Ultralytics predictions or a dataset's own
labels) + each exam's reference volume -> one 3D Slicer ``.seg.nrrd`` per exam.
Thin layer over ``analysis.assemble``."""

from __future__ import annotations

import json

import click

from gpuconv.errors import InputError


def register(app: click.Group) -> None:
    from gpuconv.cli.app import PATH

    @app.command()
    @click.argument("predictions", nargs=-1, required=True, type=PATH)
    @click.option("--reference", "-r", multiple=True, required=True, type=PATH, help="Each "
                  "exam's reference volume for the grid: its CT or label file "
                  "(.nrrd/.seg.nrrd), files or folders, matched by exam id; repeat the option.")
    @click.option("--out", "-o", type=PATH, required=True, help="Folder for {exam}.seg.nrrd.")
    @click.option("--names", type=PATH, default=None, help="dataset.yaml (or a class file) "
                  "naming the classes; default: a dataset.yaml in or up to 3 levels above the "
                  "first prediction folder.")
    @click.option("--conf", type=float, default=None, help="Drop objects whose trailing "
                  "confidence (save_conf) is below this; lines without one are kept.")
    @click.option("--kind", default="auto", help="auto (5/6 fields: box [+conf]; more: segment, "
                  "+conf when even), boxes or segments.")
    @click.option("--images", multiple=True, type=PATH, help="Folders/files of the slices the "
                  "model saw ({exam}_{slice}.png): their exams are assembled even without any "
                  "detection.")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    def assemble(predictions, reference, out, names, conf, kind, images, as_json):
        """Rasterise per-slice boxes (filled rectangles) and segments (exactly as Ultralytics'
        polygon2mask: float32 x size, int32 truncation, cv2.fillPoly) into a 3D label volume on
        the exam's grid, written as a 3D Slicer .seg.nrrd (layered when classes overlap).

        Exit status 1 when an exam failed or had no reference, 2 when nothing could start.
        """
        from gpuconv.analysis import assemble as asm
        from gpuconv.cli.errors import err, message

        try:
            yaml_path = names or asm.find_dataset_yaml(list(predictions))
            if yaml_path is None:
                raise InputError("no --names given and no dataset.yaml found near the "
                                 "predictions: give --names dataset.yaml")
            class_names = asm.load_names(yaml_path)
            exams = asm.image_exams(list(images)) if images else None
            summary = asm.assemble(list(predictions), list(reference), out, class_names,
                                   kind=kind.lower(), conf=conf, exams=exams, on_error=err)
        except InputError as exc:
            err(message(exc))
            raise click.exceptions.Exit(2) from None
        if as_json:
            click.echo(json.dumps({"names": str(yaml_path), **summary.as_dict()}, indent=2))
        else:
            for w in summary.written:
                vox = ", ".join(f"{k} {v}" for k, v in w["voxels"].items()) or "empty"
                click.echo(f"{w['exam']}: {w['kept']}/{w['objects']} objects -> {w['file']} "
                           f"({vox} voxels)")
            click.echo(f"{len(summary.written)} exam(s) assembled into {out}, "
                       f"{len(summary.failures) + len(summary.no_reference)} failed "
                       f"[names from {yaml_path}]")
        raise click.exceptions.Exit(1 if (summary.failures or summary.no_reference) else 0)
