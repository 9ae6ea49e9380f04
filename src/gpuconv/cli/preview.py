"""``gpuconv preview``: labels drawn over their CT slice, to check alignment by eye."""

from __future__ import annotations

import click

from gpuconv.errors import InputError


def register(app: click.Group) -> None:
    from gpuconv.cli.app import PATH

    @app.command()
    @click.argument("out", type=PATH)
    @click.option("--exam", required=True, help="Exam id, as in the file names.")
    @click.option("--slice", "slice_number", type=int, default=None, help="Slice number as in "
                  "the file names ({exam}_{N}.png, from 1); default: the slice with the most "
                  "labels.")
    @click.option("--output", "-o", type=PATH, default=None, help="Where to write the PNG "
                  "(default OUT/preview/{exam}_{N}.png).")
    @click.option("--scale", type=int, default=None, help="Integer upsampling factor (default: "
                  "up to 1024 px, at most 8).")
    def preview(out, exam, slice_number, output, scale):
        """Draw the boxes/polygons of one slice over its PNG (nearest-neighbour upsampled, box
        outlines on the outer border of the covered pixels) and write a preview PNG."""
        from gpuconv.errors import error_line
        from gpuconv.images.preview import render_preview
        try:
            path = render_preview(out, exam, slice_number, output, scale)
        except InputError as exc:
            click.echo(error_line(exc), err=True)
            raise click.exceptions.Exit(1) from None
        except (OSError, MemoryError) as exc:  # whatever the disk or PIL says: one line
            click.echo(error_line(f"{exc.__class__.__name__}: {exc}"), err=True)
            raise click.exceptions.Exit(1) from None
        click.echo(str(path))
