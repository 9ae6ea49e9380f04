"""Majority vote: hand-made annotator volumes (ties included), a per-voxel Counter reference,
and real NRRD / Slicer-layout files through ``vote_files`` and the CLI."""

from __future__ import annotations

import json
from collections import Counter

import nrrd
import numpy as np
import pytest

from conftest import slicer_fields
from gpuconv.errors import InputError
from gpuconv.io.nrrd_read import read_header
from gpuconv.io.nrrd_write import write_nrrd
from gpuconv.analysis.vote import majority_vote, vote_files

DIRS = np.array([[0.0, 0.38, 0.0], [-0.38, 0.0, 0.0], [0.0, 0.0, 0.625]])  # rotated, anisotropic
ORIGIN = (-101.5, 22.25, -310.0)


def ref_vote(maps, tie):
    """One voxel at a time with a Counter: the top label, ties by the stated rule."""
    out = np.zeros(maps[0].shape, np.int64)
    for idx in np.ndindex(maps[0].shape):
        votes = [int(m[idx]) for m in maps]
        counts = Counter(votes)
        top = max(counts.values())
        winners = {v for v, c in counts.items() if c == top}
        if len(winners) == 1:
            out[idx] = winners.pop()
        elif tie == "first":
            out[idx] = next(v for v in votes if v in winners)
    return out


def test_hand_made_three_annotators_binary_and_ties():
    # voxel:      0  1  2  3  4  5
    a = np.array([1, 1, 0, 1, 2, 0], np.uint8).reshape(1, 1, 6)
    b = np.array([1, 0, 0, 2, 2, 3], np.uint8).reshape(1, 1, 6)
    c = np.array([0, 0, 1, 0, 1, 0], np.uint8).reshape(1, 1, 6)
    won, ties = majority_vote([a, b, c])
    # 2 of 3 wins (0: 1; 1: 0; 2: 0; 4: 2; 5: 0 with two background votes); voxel 3: 1/2/0 tie
    assert won.ravel().tolist() == [1, 0, 0, 0, 2, 0]
    assert ties.ravel().tolist() == [False, False, False, True, False, False]
    first, _ = majority_vote([a, b, c], tie="first")
    assert first.ravel().tolist() == [1, 0, 0, 1, 2, 0]          # voxel 3: annotator A's 1
    first_bca, _ = majority_vote([b, c, a], tie="first")
    assert first_bca.ravel()[3] == 2                              # now B comes first


def test_even_number_of_annotators_needs_strict_majority():
    a = np.array([1, 1, 1, 1], np.uint8)
    b = np.array([1, 1, 0, 2], np.uint8)
    c = np.array([0, 1, 0, 2], np.uint8)
    d = np.array([0, 0, 0, 0], np.uint8)
    won, ties = majority_vote([a, b, c, d])
    # 2-2 binary tie -> background; 3 of 4 -> 1; 1 of 4 -> 0; 1,2,2,0 -> plurality 2
    assert won.tolist() == [0, 1, 0, 2]
    assert ties.tolist() == [True, False, False, False]
    two, two_ties = majority_vote([a, d])
    assert two.tolist() == [0, 0, 0, 0] and two_ties.all()


def test_plurality_without_majority_and_random_against_counter():
    five = [np.array([v], np.uint8) for v in (1, 1, 2, 0, 3)]
    assert majority_vote(five)[0].tolist() == [1]                 # 2 of 5 is the plurality
    rng = np.random.default_rng(0)
    for n in (2, 3, 4, 5):
        maps = [rng.integers(0, 4, size=(5, 4, 3)).astype(np.int16) for _ in range(n)]
        for tie in ("background", "first"):
            won, _ = majority_vote(maps, tie)
            assert np.array_equal(won, ref_vote(maps, tie)), (n, tie)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="tie"):
        majority_vote([np.zeros(2, np.uint8)] * 2, tie="random")
    with pytest.raises(ValueError, match="two"):
        majority_vote([np.zeros(2, np.uint8)])


# -- files ---------------------------------------------------------------------------------

def annotators(shape=(9, 7, 5), seed=1):
    rng = np.random.default_rng(seed)
    base = np.zeros(shape, np.uint8)
    base[2:7, 1:5, 1:4] = 1
    out = []
    for _ in range(3):
        m = base.copy()
        flip = rng.random(shape) < 0.25
        m[flip] = rng.integers(0, 3, size=int(flip.sum()))
        out.append(m)
    return out


def test_vote_files_plain_maps_keep_first_geometry(tmp_path):
    maps = annotators()
    paths = [write_nrrd(tmp_path / f"r{n}_12.nrrd", m, directions=DIRS, origin=ORIGIN)
             for n, m in enumerate(maps)]
    res = vote_files(paths, tmp_path / "consensus_12.nrrd")
    data, hdr = nrrd.read(str(res.out))
    assert np.array_equal(data, ref_vote(maps, "background"))
    expected_ties = sum(len(set(v)) == 3 for v in zip(*(m.ravel() for m in maps)))
    assert res.tie_voxels == expected_ties > 0
    h = read_header(res.out)
    assert np.allclose(h.directions, DIRS) and np.allclose(h.origin, ORIGIN)
    assert h.spatial_shape == maps[0].shape
    assert res.voxels == {str(v): int((data == v).sum()) for v in (1, 2) if (data == v).any()}


def seg_fields(segments, color="0.9 0.1 0.1"):
    return slicer_fields(segments, color=color, extent="0 0 0 0 0 0", master="Binary labelmap")


def test_vote_files_slicer_segments_matched_by_name(tmp_path):
    lad, rca = annotators(seed=2), annotators(seed=3)
    lad = [m == 1 for m in lad]
    rca = [m == 2 for m in rca]
    # annotator 0 (the layout): one layer, LAD=1, RCA=2, segments that never overlap there
    l0 = np.zeros((9, 7, 5), np.uint8)
    l0[lad[0]] = 1
    l0[rca[0] & ~lad[0]] = 2
    # annotator 1: two layers, RCA first in layer 0 with value 5, LAD in layer 1 value 1
    l1 = np.zeros((2, 9, 7, 5), np.uint8)
    l1[0][rca[1]] = 5
    l1[1][lad[1]] = 1
    # annotator 2: one layer, values swapped, plus a segment the first input lacks
    l2 = np.zeros((9, 7, 5), np.uint8)
    l2[rca[2]] = 1
    l2[lad[2]] = 2
    l2[0, 0, 0] = 3
    p0 = write_nrrd(tmp_path / "a0.seg.nrrd", l0, directions=DIRS, origin=ORIGIN,
                    extra=seg_fields([("LAD", 0, 1), ("RCA", 0, 2)]))
    p1 = write_nrrd(tmp_path / "a1.seg.nrrd", l1, directions=DIRS, origin=ORIGIN,
                    extra=seg_fields([("RCA", 0, 5), ("LAD", 1, 1)], color="0 1 0"))
    p2 = write_nrrd(tmp_path / "a2.seg.nrrd", l2, directions=DIRS, origin=ORIGIN,
                    extra=seg_fields([("RCA", 0, 1), ("LAD", 0, 2), ("Aorta", 0, 3)]))
    res = vote_files([p0, p1, p2], tmp_path / "consensus.seg.nrrd")
    assert res.ignored_segments == ["a2.seg.nrrd: Aorta"]
    data, hdr = nrrd.read(str(res.out))
    assert data.shape == (9, 7, 5)               # the first input's 3D single-layer layout
    # what each annotator marked, read back from the files by hand (layer/value per file)
    d0, d1, d2 = (nrrd.read(str(p))[0] for p in (p0, p1, p2))
    votes = [np.where(d0 == 1, 1, np.where(d0 == 2, 2, 0)),
             # annotator 1 overlaps: LAD is listed first in the layout, so LAD wins there
             np.where(d1[1] == 1, 1, np.where(d1[0] == 5, 2, 0)),
             np.where(d2 == 2, 1, np.where(d2 == 1, 2, 0))]
    assert np.array_equal(data, ref_vote(votes, "background"))
    assert (data == 1).any() and (data == 2).any()
    # the first input's Segment fields, with each extent recomputed from the consensus
    assert hdr["Segment0_Name"] == "LAD" and hdr["Segment1_Name"] == "RCA"
    assert hdr["Segment1_Color"] == "0.9 0.1 0.1"
    assert hdr["Segmentation_MasterRepresentation"] == "Binary labelmap"
    for n, v in enumerate((1, 2)):
        idx = np.argwhere(data == v)
        lo, hi = idx.min(axis=0), idx.max(axis=0)
        assert hdr[f"Segment{n}_Extent"].split() == [str(x) for p in zip(lo, hi) for x in p]
    h = read_header(res.out)
    assert [(s.name, s.layer, s.label_value) for s in h.segments] == [("LAD", 0, 1),
                                                                       ("RCA", 0, 2)]
    assert np.allclose(h.directions, DIRS) and np.allclose(h.origin, ORIGIN)


def test_vote_files_reads_back_with_slicerio(tmp_path, slicer_data):
    """A layered Slicer-written file (overlapping segments in two layers) voted three times:
    the consensus is the file itself, and slicerio reads the result."""
    slicerio = pytest.importorskip("slicerio")
    src = slicer_data / "SegmentationOverlapping.seg.nrrd"
    res = vote_files([src, src, src], tmp_path / "c.seg.nrrd", tie="first")
    a, _ = nrrd.read(str(src))
    b, _ = nrrd.read(str(res.out))
    assert np.array_equal(a, b) and res.tie_voxels == 0
    seg = slicerio.read_segmentation(str(res.out))
    assert sorted(s["name"] for s in seg["segments"]) == sorted(
        s["name"] for s in slicerio.read_segmentation(str(src))["segments"])


def test_vote_grid_mismatch_and_kind_mix_are_one_line_errors(tmp_path):
    m = annotators()[0]
    p0 = write_nrrd(tmp_path / "a.nrrd", m, directions=DIRS, origin=ORIGIN)
    p1 = write_nrrd(tmp_path / "b.nrrd", m, directions=DIRS, origin=(0.0, 0.0, 0.0))
    p2 = write_nrrd(tmp_path / "c.nrrd", m[:, :, :4], directions=DIRS, origin=ORIGIN)
    ps = write_nrrd(tmp_path / "s.seg.nrrd", m, directions=DIRS, origin=ORIGIN,
                    extra=seg_fields([("LAD", 0, 1)]))
    for paths, words in [([p0, p0, p1], "origin"), ([p0, p2], "sizes 9x7x4 vs 9x7x5"),
                         ([p0, ps], "mix")]:
        with pytest.raises(InputError, match=words) as e:
            vote_files(paths, tmp_path / "out.nrrd")
        assert "\n" not in str(e.value)
    assert not (tmp_path / "out.nrrd").exists()


def test_cli_vote_then_agree(tmp_path):
    from click.testing import CliRunner
    from gpuconv.cli.app import app
    maps = annotators(seed=4)
    paths = [str(write_nrrd(tmp_path / f"r{n}.nrrd", m, directions=DIRS, origin=ORIGIN))
             for n, m in enumerate(maps)]
    out = tmp_path / "consensus.nrrd"
    res = CliRunner().invoke(app, ["vote", *paths, "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["tie_rule"] == "background" and doc["out"] == str(out)
    data, _ = nrrd.read(str(out))
    assert np.array_equal(data, ref_vote(maps, "background"))
    res = CliRunner().invoke(app, ["agree", paths[0], str(out), "--json", "--backend", "cpu",
                                   "--class", "1"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)["pairs"][0]["classes"][0]
    a, c = maps[0] == 1, data == 1
    assert row["dice"] == pytest.approx(2 * (a & c).sum() / (a.sum() + c.sum()))
    bad = CliRunner().invoke(app, ["vote", paths[0], "--out", str(out)])
    assert bad.exit_code == 2 and "at least two" in bad.output
