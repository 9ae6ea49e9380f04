"""``gpuconv inspect``: what is in one label file, as a table a person reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpuconv.io.formats import format_name, read_volume  # NRRD, NIfTI, DICOM-SEG


def inspect_file(path) -> dict:
    vol = read_volume(path)
    h = vol.header
    info = {
        "file": str(Path(path)),
        "type": str(h.dtype.name),
        "encoding": h.encoding,
        "sizes": [int(s) for s in h.fields.get("sizes", [])],
        "layers": h.n_layers,
        "spacing_mm": [round(float(s), 6) for s in h.spacing],
        "voxel_volume_mm3": round(h.voxel_volume_mm3, 6),
        "origin": [float(o) for o in h.origin],
        "kind": "slicer-segmentation" if h.segments is not None else "plain-label-map",
        "format": format_name(h),   # nrrd | nifti | dicom-seg: one table for every format
        "segments": [],
    }
    counts = {}
    for layer in range(h.n_layers):
        values, n = np.unique(vol.layers[layer], return_counts=True)
        for v, c in zip(values.tolist(), n.tolist()):
            if v != 0:
                counts[(layer, v)] = c
    if h.segments is not None:
        for s in h.segments:
            info["segments"].append({"name": s.name, "layer": s.layer, "value": s.label_value,
                                     "id": s.id, "voxels": counts.pop((s.layer, s.label_value), 0)})
    if h.segments is None:   # a CT is not a label map (the class rules: dataset/classes.py)
        from gpuconv.dataset.classes import image_hint, plain_map_problem
        problem = plain_map_problem([v for _, v in counts])
        info["not_a_label_map"] = image_hint(problem) if problem else None
    for (layer, v), c in sorted(counts.items()):  # values no segment declares, or a plain map
        info["segments"].append({"name": None if h.segments is not None else str(v),
                                 "layer": layer, "value": v, "id": "", "voxels": c})
    return info


def render_inspection(info: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from gpuconv.errors import one_line
    con = Console()
    # every text from the user (file name, segment names) escaped: a '[' is not rich markup,
    # a control character cannot move the cursor
    con.print(f"[bold]{escape(one_line(info['file']))}[/]  {info['kind']}")
    con.print(escape(f"sizes {info['sizes']}  type {info['type']}  encoding {info['encoding']}  "
                     f"layers {info['layers']}"))
    con.print(escape(f"spacing {info['spacing_mm']} mm  voxel {info['voxel_volume_mm3']} mm³"))
    segments = info["segments"]
    if info.get("not_a_label_map"):
        con.print(f"[red]{escape(info['not_a_label_map'])}[/]")
        if len(segments) > 20:
            con.print(f"(the first 20 of {len(segments)} values)")
            segments = segments[:20]
    t = Table("name", "layer", "value", "voxels")
    for s in segments:
        name = escape(one_line(s["name"])) if s["name"] is not None else "[red](undeclared)[/]"
        t.add_row(name, str(s["layer"]), str(s["value"]), str(s["voxels"]))
    con.print(t)
