"""Per-voxel majority vote of several annotators' label maps (the ASOCA consensus step).

Rule: at every voxel each annotator casts one vote for the label it has there, background (0)
included; the label with the most votes wins.  When several labels share the top count (a tie),
``tie="background"`` (default) writes 0 and ``tie="first"`` writes the label of the earliest
annotator (input order) among those that voted for a top label.  For binary masks the default
is the strict majority: foreground needs more than half of the votes (2 of 3, 3 of 4, ...).

Files: all plain label maps (same layer count; each layer voted on its own) or all 3D Slicer
segmentations.  Slicer segmentations are matched by segment *name* and the result uses the
first input's layout (layers, label values, Segment fields; each segment's Extent is
recomputed; values no segment declares are dropped); segments the first input lacks are
ignored (reported), a segment an annotator
lacks counts as background in that annotator's vote, and where an annotator's segments overlap
but share a layer in the first input, that annotator votes for the one listed first there.
All inputs must share the grid (sizes, spacing, origin, directions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from gpuconv.dataset.grid import check_same_grid
from gpuconv.errors import InputError, OptionError
from gpuconv.io.formats import read_volume  # any supported label format
from gpuconv.io.nrrd_read import LabelVolume
from gpuconv.io.nrrd_write import segment_extent, write_nrrd

TIE_RULES = ("background", "first")
_SEGMENT_FIELD = re.compile(r"^(Segment\d+_\w+|Segmentation_\w+)$")


def majority_vote(maps: Sequence[np.ndarray], tie: str = "background"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(winner labels, tie mask) of same-shape integer arrays, one per annotator.

    ``support[n]`` = how many annotators agree with annotator n at a voxel; the top label has
    ``top = max support``, and ``count(support == top) / top`` distinct labels share that top,
    so a tie is ``count(support == top) > top``.  O(N^2) array passes: fine for a few annotators.
    """
    if tie not in TIE_RULES:
        raise ValueError(f"tie rule must be one of {', '.join(TIE_RULES)}, got '{tie}'")
    if len(maps) < 2:
        raise ValueError("a vote needs at least two label maps")
    maps = [np.asarray(m) for m in maps]
    shape = maps[0].shape
    if any(m.shape != shape for m in maps):
        raise ValueError("label maps differ in shape")
    if all(m.flags.f_contiguous for m in maps) and not all(m.flags.c_contiguous for m in maps):
        # pynrrd's Fortran-order layers: vote on the C-order transposed views (same memory),
        # mixing orders would make every array pass strided and many times slower
        won, ties = majority_vote([m.T for m in maps], tie)
        return won.T, ties.T
    count_t = np.uint8 if len(maps) < 256 else np.uint32
    support = []
    for m in maps:
        s = np.zeros(shape, count_t)
        for other in maps:
            s += (other == m)
        support.append(s)
    top = np.maximum.reduce(support)
    at_top = np.zeros(shape, count_t)
    for s in support:
        at_top += (s == top)
    ties = at_top > top
    dtype = np.result_type(*[m.dtype for m in maps])
    if dtype.kind not in "iu":  # e.g. uint64 with int64
        dtype = np.dtype(np.int64)
    out = np.zeros(shape, dtype)
    for m, s in zip(reversed(maps), reversed(support)):  # earliest annotator written last
        win = s == top
        out[win] = m[win]
    if tie == "background":
        out[ties] = 0
    return out, ties


@dataclass
class VoteResult:
    out: Path
    inputs: list[str]
    tie_rule: str
    tie_voxels: int
    voxels: dict = field(default_factory=dict)        # class -> voxels in the consensus
    ignored_segments: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"out": str(self.out), "inputs": self.inputs, "tie_rule": self.tie_rule,
                "tie_voxels": self.tie_voxels, "voxels": self.voxels,
                "ignored_segments": self.ignored_segments}


def _segment_layers(ref: LabelVolume, other: LabelVolume) -> tuple[np.ndarray, list[str]]:
    """``other``'s segments drawn in ``ref``'s layout (layer, label value), matched by name."""
    ref_segs, segs = ref.header.segments, other.header.segments
    by_name = {}
    for s in segs:
        by_name.setdefault(s.name, s)
    out = np.zeros(ref.layers.shape, ref.layers.dtype, order="F")  # like the read layers
    for s in reversed(ref_segs):  # first-listed segment written last: it wins an overlap
        mine = by_name.get(s.name)
        if mine is not None:
            out[s.layer][other.layers[mine.layer] == mine.label_value] = s.label_value
    ref_names = {s.name for s in ref_segs}
    return out, [s.name for s in segs if s.name not in ref_names]


def vote_files(paths: Sequence, out, tie: str = "background") -> VoteResult:
    """Majority vote of label files -> NRRD ``out`` with the first input's geometry."""
    if len(paths) < 2:
        raise InputError("vote needs at least two label files")
    if tie not in TIE_RULES:
        raise OptionError("tie", f"must be one of {', '.join(TIE_RULES)}, got '{tie}'")
    vols = [read_volume(p) for p in paths]
    ref = vols[0]
    seg = ref.header.segments is not None
    for v in vols[1:]:
        check_same_grid(ref.header, v.header)
        if (v.header.segments is not None) != seg:
            raise InputError("inputs mix Slicer segmentations and plain label maps "
                             f"(first input {ref.header.path.name} is "
                             f"{'a segmentation' if seg else 'a plain map'})", v.header.path)
        if not seg and v.layers.shape[0] != ref.layers.shape[0]:
            raise InputError(f"layer count {v.layers.shape[0]} differs from "
                             f"{ref.layers.shape[0]} in {ref.header.path.name}", v.header.path)
    ignored: list[str] = []
    if seg:
        stacks = []
        for v in vols:
            drawn, extra = _segment_layers(ref, v)
            stacks.append(drawn)
            ignored += [f"{v.header.path.name}: {n}" for n in extra]
    else:
        stacks = [v.layers for v in vols]

    n_layers = ref.layers.shape[0]
    result = None
    tie_voxels = 0
    for layer in range(n_layers):
        won, ties = majority_vote([s[layer] for s in stacks], tie)
        if result is None:
            result = np.zeros((n_layers, *won.shape), won.dtype)
        result[layer] = won
        tie_voxels += int(np.count_nonzero(ties))

    h = ref.header
    extra = {}
    voxels = {}
    if seg:
        for k, val in h.fields.items():
            if _SEGMENT_FIELD.match(k):
                extra[k] = str(val)
        I, J, K = h.spatial_shape
        for s in h.segments:
            mask = result[s.layer] == s.label_value
            voxels[s.name] = voxels.get(s.name, 0) + int(np.count_nonzero(mask))
            key = f"Segment{s.index}_Extent"
            if key in extra:
                ext = segment_extent(mask) or (0, I - 1, 0, J - 1, 0, K - 1)
                extra[key] = " ".join(map(str, ext))
    else:
        values, counts = np.unique(result, return_counts=True)
        voxels = {str(int(v)): int(c) for v, c in zip(values, counts) if v != 0}
    data = result if int(h.fields.get("dimension", 3)) == 4 else result[0]
    try:
        write_nrrd(out, data, directions=h.directions, origin=h.origin, extra=extra,
                   space=str(h.fields.get("space", "left-posterior-superior")))
    except OSError as exc:
        raise InputError(f"cannot write the consensus ({exc.strerror or exc})", out) from None
    return VoteResult(Path(out), [str(p) for p in paths], tie, tie_voxels, voxels, ignored)


