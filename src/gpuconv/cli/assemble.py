"""``gpuconv assemble``: per-slice YOLO text files (Ultralytics predictions or a dataset's own
labels) + each exam's reference volume -> one 3D Slicer ``.seg.nrrd`` per exam.
Thin layer over ``analysis.assemble``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from gpuconv.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command()
    def assemble(
        predictions: List[Path] = typer.Argument(..., help="Folders (searched recursively) or "
                                                 "files of {exam}_{slice}.txt: Ultralytics "
                                                 "save_txt output (runs/.../labels) or a "
                                                 "dataset's labels/{split}."),
        reference: List[Path] = typer.Option(..., "--reference", "-r", help="Each exam's "
                                             "reference volume for the grid: its CT or label "
                                             "file (.nrrd/.seg.nrrd), files or folders, "
                                             "matched by exam id; repeat the option."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder for {exam}.seg.nrrd."),
        names: Optional[Path] = typer.Option(None, "--names", help="dataset.yaml (or a class "
                                             "file) naming the classes; default: a "
                                             "dataset.yaml in or up to 3 levels above the "
                                             "first prediction folder."),
        conf: Optional[float] = typer.Option(None, "--conf", help="Drop objects whose trailing "
                                             "confidence (save_conf) is below this; lines "
                                             "without one are kept."),
        kind: str = typer.Option("auto", "--kind", help="auto (5/6 fields: box [+conf]; more: "
                                 "segment, +conf when even), boxes or segments."),
        images: Optional[List[Path]] = typer.Option(None, "--images", help="Folders/files of "
                                                    "the slices the model saw "
                                                    "({exam}_{slice}.png): their exams are "
                                                    "assembled even without any detection."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ):
        """Rasterise per-slice boxes (filled rectangles) and segments (exactly as Ultralytics'
        polygon2mask: float32 x size, int32 truncation, cv2.fillPoly) into a 3D label volume on
        the exam's grid, written as a 3D Slicer .seg.nrrd (layered when classes overlap).

        Exit status 1 when an exam failed or had no reference, 2 when nothing could start.
        """
        from gpuconv.analysis import assemble as asm
        from gpuconv.cli.errors import err, message

        try:
            yaml_path = names or asm.find_dataset_yaml(predictions)
            if yaml_path is None:
                raise InputError("no --names given and no dataset.yaml found near the "
                                 "predictions: give --names dataset.yaml")
            class_names = asm.load_names(yaml_path)
            exams = asm.image_exams(images) if images else None
            summary = asm.assemble(predictions, reference, out, class_names, kind=kind.lower(),
                                   conf=conf, exams=exams, on_error=err)
        except InputError as exc:
            err(message(exc))
            raise typer.Exit(2) from None
        if as_json:
            typer.echo(json.dumps({"names": str(yaml_path), **summary.as_dict()}, indent=2))
        else:
            for w in summary.written:
                vox = ", ".join(f"{k} {v}" for k, v in w["voxels"].items()) or "empty"
                typer.echo(f"{w['exam']}: {w['kept']}/{w['objects']} objects -> {w['file']} "
                           f"({vox} voxels)")
            typer.echo(f"{len(summary.written)} exam(s) assembled into {out}, "
                       f"{len(summary.failures) + len(summary.no_reference)} failed "
                       f"[names from {yaml_path}]")
        raise typer.Exit(1 if (summary.failures or summary.no_reference) else 0)
