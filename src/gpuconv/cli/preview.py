"""``gpuconv preview``: labels drawn over their CT slice, to check alignment by eye."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gpuconv.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command()
    def preview(
        out: Path = typer.Argument(..., help="A dataset folder written by 'gpuconv convert'."),
        exam: str = typer.Option(..., "--exam", help="Exam id, as in the file names."),
        slice_number: Optional[int] = typer.Option(
            None, "--slice", help="Slice number as in the file names ({exam}_{N}.png, from 1); "
            "default: the slice with the most labels."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write the "
                                              "PNG (default OUT/preview/{exam}_{N}.png)."),
        scale: Optional[int] = typer.Option(None, help="Integer upsampling factor (default: up "
                                            "to 1024 px, at most 8)."),
    ):
        """Draw the boxes/polygons of one slice over its PNG (nearest-neighbour upsampled, box
        outlines on the outer border of the covered pixels) and write a preview PNG."""
        from gpuconv.errors import error_line
        from gpuconv.images.preview import render_preview
        try:
            path = render_preview(out, exam, slice_number, output, scale)
        except InputError as exc:
            typer.echo(error_line(exc), err=True)
            raise typer.Exit(1) from None
        except (OSError, MemoryError) as exc:  # whatever the disk or PIL says: one line
            typer.echo(error_line(f"{exc.__class__.__name__}: {exc}"), err=True)
            raise typer.Exit(1) from None
        typer.echo(str(path))
