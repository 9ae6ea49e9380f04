"""``gpuconv agree`` (Dice / HD95 between two label files or folders) and ``gpuconv vote``
(majority-vote consensus).  Thin layer over ``analysis.agreement_files`` and ``analysis.vote``."""

from __future__ import annotations

import json

import click

from gpuconv.cli.errors import err as _err
from gpuconv.cli.errors import message as _message
from gpuconv.errors import InputError, OptionError


def resolve_backend(name: str) -> str:
    """``cpu`` (Numba EDT) or ``scipy`` (SciPy EDT); ``gpu`` (this module's CuPy path must be
    usable, else OptionError); ``auto``: GPU when the project's GPU backend reports usable
    (``backends.gpu_unavailable_reason``) and the CuPy distance transform is there, else CPU."""
    from gpuconv.analysis import agreement
    from gpuconv.backends import gpu_unavailable_reason
    name = name.lower()
    if name in ("cpu", "scipy"):
        return name
    if name == "gpu":
        reason = agreement.gpu_unavailable_reason()
        if reason:
            raise OptionError("backend", f"'gpu' cannot run here: {reason}")
        return "gpu"
    if name == "auto":
        if gpu_unavailable_reason() is None and agreement.gpu_unavailable_reason() is None:
            return "gpu"
        return "cpu"
    raise OptionError("backend", f"unknown backend '{name}' (choose from auto, cpu, gpu, "
                                 "scipy)")


def _definitions(text: str) -> list[str]:
    from gpuconv.analysis.agreement import HD95_DEFINITIONS, check_definitions
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return list(HD95_DEFINITIONS)
    return check_definitions(names)


def register(app: click.Group) -> None:
    from gpuconv.cli.app import PATH

    @app.command()
    @click.argument("a", type=PATH)
    @click.argument("b", type=PATH)
    @click.option("--class", "classes", multiple=True, help="Class to compare: segment name "
                  "(.seg.nrrd) or label value; repeat for several.  Default: every class in "
                  "either file.")
    @click.option("--hd95", default="asoca_challenge,asoca_mm", help="HD95 definition(s), "
                  "comma-separated: asoca_challenge (the ASOCA challenge's evaluation.py "
                  "exactly: all foreground voxels, max of directed P95, VOXEL units), asoca_mm "
                  "(the same in mm), medpy (surface voxels, pooled P95, mm), surface (surface "
                  "voxels, max of directed P95, mm), or all.  'asoca' is a deprecated alias of "
                  "asoca_mm.")
    @click.option("--backend", default="auto", help="auto (GPU when usable, else CPU), cpu, "
                  "gpu, or scipy (CPU with SciPy's slower EDT, for cross-checks).")
    @click.option("--csv", "csv_path", type=PATH, default=None, help="Also write one row per "
                  "file pair and class to this CSV.")
    @click.option("--json", "as_json", is_flag=True, help="Print results as JSON on stdout "
                  "(infinite HD95 is null; see 'empty').")
    @click.option("--lesions", is_flag=True, help="Also match 3D lesions (connected "
                  "components; A = reference, B = prediction): detected, missed, false "
                  "positives, split, merged, sensitivity, precision, F1, FP per scan.")
    @click.option("--connectivity3d", type=int, default=26, help="3D connectivity of a lesion "
                  "for --lesions: 26 (default), 18 or 6.")
    def agree(a, b, classes, hd95, backend, csv_path, as_json, lesions, connectivity3d):
        """Dice and 95th-percentile Hausdorff distance (named definitions; mm from the header
        spacing, or voxel steps for asoca_challenge) per class and file, and with --lesions
        lesion-wise detection.  Two folders: files paired by exam id; unpaired ones are listed.

        Empty masks: both empty -> dice 1, hd95 0; one empty -> dice 0, hd95 inf (JSON null).
        Exit status 1 when a pair failed, 2 when the run could not start.
        """
        from gpuconv.analysis import agreement_files as aio
        from gpuconv.writers.atomic import write_text_atomic
        try:
            definitions = _definitions(hd95)
            if not definitions:
                raise InputError("--hd95 names no definition")
            if lesions and connectivity3d not in (6, 18, 26):
                raise InputError("--connectivity3d must be 6, 18 or 26")
            used = resolve_backend(backend)
            if a.is_dir() != b.is_dir():
                raise InputError("give two files or two folders, not one of each")
            if a.is_dir():
                pairs, only_a, only_b = aio.pair_folders(a, b)
                if not pairs:
                    raise InputError(f"no exam id is in both {a} and {b}")
            else:
                from gpuconv.dataset.exams import exam_id
                pairs, only_a, only_b = [(exam_id(a), a, b)], [], []
        except (InputError, RuntimeError, ValueError) as exc:
            _err(_message(exc))
            raise click.exceptions.Exit(2) from None
        for e in only_a:
            _err(f"exam '{e}' is only in {a}")
        for e in only_b:
            _err(f"exam '{e}' is only in {b}")
        for d in definitions:
            from gpuconv.analysis.agreement import HD95_ALIASES
            if d in HD95_ALIASES:
                click.echo(f"warning: --hd95 {d} is deprecated, it is {HD95_ALIASES[d]} (mm); "
                           "the challenge's own number is asoca_challenge (voxels)", err=True)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            results = aio.agree_many(pairs, list(classes) or None, definitions, used, on_error=_err,
                                     lesions=connectivity3d if lesions else None)
        if csv_path is not None:
            try:
                write_text_atomic(csv_path, aio.to_csv(results, definitions))
            except OSError as exc:
                _err(f"{csv_path}: cannot write CSV ({exc.strerror or exc})")
                raise click.exceptions.Exit(2) from None
        if as_json:
            from gpuconv.analysis.lesions import RULE_TEXT
            rule = (f"{RULE_TEXT}; connectivity {connectivity3d}") if lesions else None
            click.echo(json.dumps(aio.to_json(results, definitions, used, (only_a, only_b),
                                              lesion_rule=rule), indent=2))
        else:
            aio.render_table(results, definitions, used)
        raise click.exceptions.Exit(1 if any(r.error for r in results) else 0)

    @app.command()
    @click.argument("inputs", nargs=-1, required=True, type=PATH)
    @click.option("--out", "-o", type=PATH, required=True, help="Consensus NRRD to write.")
    @click.option("--tie", default="background", help="Tie rule: background (write 0; "
                  "default, = strict majority for binary masks) or first (label of the "
                  "earliest annotator among the tied).")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    def vote(inputs, out, tie, as_json):
        """Per-voxel majority vote (background counts as a label) -> NRRD with the first
        input's geometry and Slicer Segment fields.  Exit status 2 on bad input."""
        from gpuconv.analysis.vote import vote_files
        try:
            res = vote_files(list(inputs), out, tie=tie.lower())
        except InputError as exc:
            _err(_message(exc))
            raise click.exceptions.Exit(2) from None
        for s in res.ignored_segments:
            click.echo(f"warning: segment not in the first input, ignored: {s}", err=True)
        if as_json:
            click.echo(json.dumps(res.as_dict(), indent=2))
        else:
            click.echo(f"voted {len(res.inputs)} label maps -> {res.out} "
                       f"({res.tie_voxels} tied voxels, rule '{res.tie_rule}')")
