"""Dice / HD95: hand-computed cases on anisotropic grids, and cross-checks against independent
implementations written here (KD-tree nearest neighbours; medpy's hd95 re-expressed with
neighbour shifts for the surface instead of an erosion; no distance transforms)."""

from __future__ import annotations

import csv
import json
import math
import warnings

import nrrd
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from conftest import slicer_fields
from gpuconv.analysis import agreement
from gpuconv.analysis.agreement import compare_masks, dice, hd95
from gpuconv.analysis.agreement_files import agree_files, pair_folders
from gpuconv.errors import InputError
from gpuconv.io.nrrd_write import write_nrrd

SPACING = (0.35, 0.4, 0.625)   # ASOCA-like: sub-mm in-plane, 0.625 mm slices


# -- independent references ----------------------------------------------------------------

def coords_mm(mask, spacing):
    return np.argwhere(mask) * np.asarray(spacing, float)


def nn_dist(src, dst, spacing):
    """Distance (mm) from each voxel of src to the nearest voxel of dst, by KD-tree."""
    return cKDTree(coords_mm(dst, spacing)).query(coords_mm(src, spacing))[0]


def ref_asoca(a, b, spacing):
    return max(np.percentile(nn_dist(a, b, spacing), 95), np.percentile(nn_dist(b, a, spacing), 95))


def surface_by_shifts(mask):
    """Foreground voxels with a background 6-neighbour; outside the array is background
    (what medpy's ``mask ^ binary_erosion(mask)`` gives)."""
    p = np.pad(mask, 1)
    inner = np.ones_like(mask)
    core = (slice(1, -1),) * 3
    for axis in range(3):
        for step in (-1, 1):
            inner &= np.roll(p, step, axis=axis)[core]
    return mask & ~inner


def ref_medpy(a, b, spacing):
    """medpy.metric.binary.hd95: P95 of both directed surface-distance sets pooled."""
    sa, sb = surface_by_shifts(a), surface_by_shifts(b)
    return np.percentile(np.hstack([nn_dist(sa, sb, spacing), nn_dist(sb, sa, spacing)]), 95)


def ref_surface(a, b, spacing):
    sa, sb = surface_by_shifts(a), surface_by_shifts(b)
    return max(np.percentile(nn_dist(sa, sb, spacing), 95),
               np.percentile(nn_dist(sb, sa, spacing), 95))


def blob(shape, seed, level=0.6, sigma=1.5):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), sigma) > np.quantile(
        ndimage.gaussian_filter(rng.random(shape), sigma), level)


def random_pair(seed, shape=(18, 20, 14)):
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.random(shape), 1.5)
    b = a + 0.02 * ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
    t = np.quantile(a, 0.7)
    return a > t, b > t


# -- hand-computed cases -------------------------------------------------------------------

def test_cube_shifted_two_slices_on_anisotropic_grid():
    a = np.zeros((12, 12, 12), bool)
    a[2:6, 2:6, 2:6] = True
    b = np.roll(a, 2, axis=2)                    # 2 slices of 0.625 mm further along k
    r = compare_masks(a, b, SPACING, ("asoca_mm",))
    # overlap 4x4x2 of 64 each; A->B: 32 voxels at 0, 16 at 0.625, 16 at 1.25 mm, P95 = 1.25
    assert r["dice"] == pytest.approx(0.5)
    assert (r["voxels_a"], r["voxels_b"], r["intersection"]) == (64, 64, 32)
    assert r["hd95_asoca_mm"] == pytest.approx(1.25)
    # the same shift along i (0.35 mm voxels) is 0.7 mm
    assert hd95(a, np.roll(a, 2, axis=0), SPACING) == pytest.approx(0.7)


def test_parallel_planes_all_definitions_agree():
    a = np.zeros((5, 6, 9), bool)
    a[:, :, 2] = True
    b = np.zeros_like(a)
    b[:, :, 5] = True                            # every voxel is surface; 3 slices apart
    r = compare_masks(a, b, SPACING, ("asoca_mm", "medpy", "surface"))
    for key in ("hd95_asoca_mm", "hd95_medpy", "hd95_surface"):
        assert r[key] == pytest.approx(3 * 0.625)
    assert r["dice"] == 0.0


def test_solid_cube_vs_its_shell_separates_all_voxel_from_surface_definitions():
    a = np.zeros((9, 9, 9), bool)
    a[2:7, 2:7, 2:7] = True                      # 5x5x5
    b = a.copy()
    b[3:6, 3:6, 3:6] = False                     # hollow shell
    r = compare_masks(a, b, 1.0, ("asoca_mm", "medpy", "surface"))
    # A->B: 98 shell voxels at 0, 26 inner at 1, the centre at 2: P95 (index 117.8) = 1
    assert r["hd95_asoca_mm"] == pytest.approx(1.0)
    # both surfaces are the shell
    assert r["hd95_medpy"] == 0.0 and r["hd95_surface"] == 0.0


def test_pooled_versus_max_of_directed_percentiles():
    a = np.zeros((3, 3, 24), bool)
    a[1, 1, 0] = True
    b = np.zeros_like(a)
    b[1, 1, 0:20] = True                         # a line: all surface, all A->B distances 0
    sp = (0.35, 0.4, 0.625)
    r = compare_masks(a, b, sp, ("asoca_mm", "medpy", "surface"))
    # B->A = 0..19 slices: P95 at index 18.05 -> 18.05 slices; pooled [0,0,1..19]: index 19 -> 18
    assert r["hd95_surface"] == pytest.approx(18.05 * 0.625)
    assert r["hd95_asoca_mm"] == pytest.approx(18.05 * 0.625)
    assert r["hd95_medpy"] == pytest.approx(18 * 0.625)


def test_diagonal_offset_uses_each_axis_spacing():
    a = np.zeros((6, 6, 6), bool)
    b = np.zeros_like(a)
    a[1, 1, 1] = True
    b[4, 3, 2] = True                            # (3, 2, 1) voxels away
    expected = math.sqrt((3 * 0.35) ** 2 + (2 * 0.4) ** 2 + 0.625 ** 2)
    for d in agreement.HD95_DEFINITIONS:
        want = math.sqrt(3 ** 2 + 2 ** 2 + 1) if d == "asoca_challenge" else expected
        assert hd95(a, b, SPACING, d) == pytest.approx(want)


# -- the ASOCA challenge's own algorithm ----------------------------------------------------

def challenge_hausdorff_95(submission, groundtruth):
    """ramtingh/ASOCA_MICCAI2020_Evaluation, evaluation.py, re-expressed: thresholds at 0.5
    (score_case), all foreground indices as uint16, cKDTree both ways, max of the two
    np.quantile(., 0.95) - voxel units, no spacing anywhere."""
    submission, groundtruth = submission > 0.5, groundtruth > 0.5
    if np.count_nonzero(submission) == 0:
        raise ValueError("Submission is empty")             # what score_case does
    sp = np.array(np.where(submission), dtype=np.uint16).T
    gp = np.array(np.where(groundtruth), dtype=np.uint16).T
    d1, _ = cKDTree(sp).query(gp)
    d2, _ = cKDTree(gp).query(sp)
    return max(np.quantile(d1, 0.95), np.quantile(d2, 0.95))


ASOCA_SPACING = (0.35, 0.35, 0.625)


def test_issue_pair_challenge_gives_2_voxels_and_mm_gives_1_25():
    a = np.zeros((12, 12, 12), bool)
    a[2:6, 2:6, 2:6] = True
    b = np.roll(a, 2, axis=2)
    r = compare_masks(a, b, ASOCA_SPACING, ("asoca_challenge", "asoca_mm"))
    assert challenge_hausdorff_95(b.astype(float), a.astype(float)) == 2.0
    assert r["hd95_asoca_challenge"] == 2.0
    assert r["hd95_asoca_mm"] == pytest.approx(1.25)


@pytest.mark.parametrize("backend,seed", [("cpu", 0), ("cpu", 1), ("scipy", 2), ("cpu", 3)])
def test_asoca_challenge_reproduces_the_challenge_code_exactly(backend, seed):
    rng = np.random.default_rng(seed)
    a, b = random_pair(seed, (22, 19, 16))
    # thin, shifted, partly disjoint: a coronary-like pair with long tails
    b = np.roll(b, int(rng.integers(-3, 4)), axis=2)
    b[rng.integers(0, 22), :, rng.integers(0, 16)] = True
    truth, pred = a.astype(np.float32) * 0.9, b.astype(np.uint8)
    want = challenge_hausdorff_95(pred, truth)
    r = compare_masks(pred > 0.5, truth > 0.5, ASOCA_SPACING, ("asoca_challenge", "asoca_mm"),
                      backend=backend)
    assert r["hd95_asoca_challenge"] == want             # bit for bit, not approx
    assert agreement.hd95_asoca_challenge(pred, truth, backend=backend) == want
    assert agreement.asoca_challenge_kdtree(pred, truth) == want
    assert r["hd95_asoca_mm"] == pytest.approx(ref_asoca(pred > 0.5, truth > 0.5,
                                                         ASOCA_SPACING), rel=1e-12)
    # threshold > 0.5, not != 0: a 0.4 voxel is background for the challenge
    soft = truth.copy()
    soft[0, 0, 0] = 0.4
    assert agreement.hd95_asoca_challenge(pred, soft) == challenge_hausdorff_95(pred, soft)


def test_asoca_challenge_empty_masks_and_the_challenges_own_behaviour():
    z = np.zeros((5, 6, 7))
    one = z.copy()
    one[1, 2, 3] = 1
    with pytest.raises(ValueError, match="empty"):
        challenge_hausdorff_95(z, one)                      # the challenge refuses
    with pytest.raises(IndexError):
        challenge_hausdorff_95(one, z)                      # and crashes on an empty truth
    assert agreement.hd95_asoca_challenge(z, one) == math.inf   # gpuconv's rule instead
    assert agreement.hd95_asoca_challenge(one, z) == math.inf
    assert agreement.hd95_asoca_challenge(z, z) == 0.0
    assert agreement.hd95_asoca_challenge(one, one) == 0.0 == challenge_hausdorff_95(one, one)


def test_asoca_challenge_follows_the_uint16_wrap_on_axes_over_65536():
    a = np.zeros((70000, 1, 2), bool)
    b = np.zeros_like(a)
    a[[3, 10, 69990], 0, 0] = True        # 69990 wraps to 4454 in the challenge's uint16
    b[[5, 4460, 69000], 0, 1] = True
    want = challenge_hausdorff_95(b, a)
    assert compare_masks(b, a, 1.0, ("asoca_challenge",))["hd95_asoca_challenge"] == want
    assert want != compare_masks(b, a, 1.0, ("asoca_mm",))["hd95_asoca_mm"]


def test_deprecated_asoca_alias_keeps_its_key_and_mm_values():
    a, b = random_pair(5)
    with pytest.warns(DeprecationWarning, match="asoca_challenge"):
        r = compare_masks(a, b, SPACING, ("asoca",))
    assert r["hd95_asoca"] == compare_masks(a, b, SPACING, ("asoca_mm",))["hd95_asoca_mm"]
    assert agreement.canonical("asoca") == "asoca_mm" and agreement.unit("asoca") == "mm"


# -- empty masks ---------------------------------------------------------------------------

def test_empty_masks_have_defined_results_without_warnings():
    z = np.zeros((4, 5, 6), bool)
    one = z.copy()
    one[1, 2, 3] = True
    defs = tuple(agreement.HD95_DEFINITIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        both = compare_masks(z, z, SPACING, defs)
        a_empty = compare_masks(z, one, SPACING, defs)
        b_empty = compare_masks(one, z, SPACING, defs)
    assert both["dice"] == 1.0 and both["empty"] == "both"
    assert all(both[f"hd95_{d}"] == 0.0 for d in defs)
    assert a_empty["empty"] == "a" and b_empty["empty"] == "b"
    for r in (a_empty, b_empty):
        assert r["dice"] == 0.0
        assert all(math.isinf(r[f"hd95_{d}"]) for d in defs)
    assert dice(z, z) == 1.0


# -- cross-checks against the independent references ---------------------------------------

@pytest.mark.parametrize("backend,seed", [("cpu", 0), ("cpu", 1), ("cpu", 2), ("scipy", 3)])
def test_matches_kdtree_and_reexpressed_medpy_on_random_blobs(backend, seed):
    a, b = random_pair(seed)
    assert a.any() and b.any() and (a != b).any()
    r = compare_masks(a, b, SPACING, ("asoca_mm", "medpy", "surface"), backend=backend)
    assert r["hd95_asoca_mm"] == pytest.approx(ref_asoca(a, b, SPACING), rel=1e-12)
    assert r["hd95_medpy"] == pytest.approx(ref_medpy(a, b, SPACING), rel=1e-12)
    assert r["hd95_surface"] == pytest.approx(ref_surface(a, b, SPACING), rel=1e-12)
    assert r["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_unrelated_blobs_touching_the_array_border():
    a, b = blob((16, 15, 12), 7), blob((16, 15, 12), 8)
    assert a[0].any() and b[-1].any()            # surface rule at the border is exercised
    r = compare_masks(a, b, SPACING, ("asoca_mm", "medpy", "surface"))
    assert r["hd95_asoca_mm"] == pytest.approx(ref_asoca(a, b, SPACING), rel=1e-12)
    assert r["hd95_medpy"] == pytest.approx(ref_medpy(a, b, SPACING), rel=1e-12)
    assert r["hd95_surface"] == pytest.approx(ref_surface(a, b, SPACING), rel=1e-12)


def test_cropping_to_the_union_box_changes_nothing():
    """Small objects in a big volume (crop active) and objects on the border (crop trivial)."""
    a = np.zeros((40, 36, 30), bool)
    b = np.zeros_like(a)
    a[10:14, 12:15, 8:10] = True
    a[20, 25, 20] = True
    b[11:15, 12:16, 9:11] = True
    b[30, 5, 25] = True
    cases = [(a, b), random_pair(11, (14, 13, 12)), (blob((16, 15, 12), 7), blob((16, 15, 12), 8))]
    defs = tuple(agreement.HD95_DEFINITIONS)
    for x, y in cases:
        cropped = compare_masks(x, y, SPACING, defs, crop=True)
        full = compare_masks(x, y, SPACING, defs, crop=False)
        for d in defs:
            assert cropped[f"hd95_{d}"] == pytest.approx(full[f"hd95_{d}"], rel=1e-12)
        assert cropped["dice"] == full["dice"]
    # and the sparse case against the KD-tree reference
    assert compare_masks(a, b, SPACING)["hd95_asoca_mm"] == pytest.approx(ref_asoca(a, b, SPACING))
    assert agreement.union_box(a, b) == (slice(10, 31), slice(5, 26), slice(8, 26))


def test_numba_edt_equals_scipy_edt_on_anisotropic_grids():
    from gpuconv.analysis.edt import distance_to
    rng = np.random.default_rng(1)
    for _ in range(40):
        shape = tuple(int(n) for n in rng.integers(1, 12, 3))
        spacing = tuple(rng.uniform(0.2, 2.0, 3))
        target = rng.random(shape) < rng.choice([0.003, 0.05, 0.5, 0.97])
        got = distance_to(target, spacing)
        if not target.any():
            assert np.isinf(got).all()
            continue
        want = ndimage.distance_transform_edt(~target, sampling=spacing)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_cpu_and_scipy_backends_agree_and_2d_works():
    defs = tuple(agreement.HD95_DEFINITIONS)
    a, b = random_pair(21, (20, 17, 15))
    cpu = compare_masks(a, b, SPACING, defs, backend="cpu")
    ref = compare_masks(a, b, SPACING, defs, backend="scipy")
    for k, v in ref.items():
        assert cpu[k] == (v if isinstance(v, str) else pytest.approx(v, rel=1e-12)), k
    flat_a, flat_b = a[:, :, 7], b[:, :, 7]
    r2 = compare_masks(flat_a, flat_b, SPACING[:2], ("asoca_mm",))
    want = ref_asoca(flat_a[..., None], flat_b[..., None], SPACING)
    assert r2["hd95_asoca_mm"] == pytest.approx(want)


def test_bad_arguments():
    a = np.zeros((3, 3, 3), bool)
    with pytest.raises(ValueError, match="shape"):
        compare_masks(a, np.zeros((3, 3, 4), bool), 1.0)
    with pytest.raises(ValueError, match="unknown HD95"):
        compare_masks(a, a, 1.0, ("hausdorff",))
    with pytest.raises(ValueError, match="spacing"):
        compare_masks(a, a, (1.0, 0.0, 1.0))


@pytest.mark.gpu
def test_gpu_equals_cpu():
    reason = agreement.gpu_unavailable_reason()
    if reason:
        pytest.skip(reason)
    defs = tuple(agreement.HD95_DEFINITIONS)
    for seed in range(3):
        a, b = random_pair(seed, (40, 44, 30))
        cpu = compare_masks(a, b, SPACING, defs, backend="cpu")
        gpu = compare_masks(a, b, SPACING, defs, backend="gpu")
        for k, v in cpu.items():
            assert gpu[k] == (v if isinstance(v, str) else pytest.approx(v, rel=1e-9)), k


# -- files ---------------------------------------------------------------------------------

DIRS = np.diag(SPACING)


def write_plain(path, data, origin=(10.0, -5.0, 3.0), directions=DIRS):
    return write_nrrd(path, data.astype(np.uint8), directions=directions, origin=origin)


def test_agree_files_plain_label_maps_per_value(tmp_path):
    a, b = random_pair(3)
    la = a.astype(np.uint8) * 2
    lb = b.astype(np.uint8) * 2
    la[0:2, 0:2, 0:2] = 5                        # value 5 only in A: one-empty case
    r = agree_files(write_plain(tmp_path / "A_7.nrrd", la), write_plain(tmp_path / "B_7.nrrd", lb),
                    definitions=("asoca_mm", "medpy"))
    assert r.exam == "7"
    assert r.spacing_mm == pytest.approx(list(SPACING))
    rows = {row["class"]: row for row in r.classes}
    assert list(rows) == ["2", "5"]
    ma, mb = la == 2, lb == 2
    assert rows["2"]["hd95_asoca_mm"] == pytest.approx(ref_asoca(ma, mb, SPACING))
    assert rows["2"]["hd95_medpy"] == pytest.approx(ref_medpy(ma, mb, SPACING))
    assert rows["5"]["empty"] == "b" and math.isinf(rows["5"]["hd95_asoca_mm"])


def test_agree_files_slicer_segments_by_name_across_layouts(tmp_path):
    lad_a, rca_a = random_pair(5, (14, 12, 10))
    lad_b, rca_b = random_pair(6, (14, 12, 10))
    # A: one layer, LAD=1, RCA=2 (RCA wins overlaps); B: two layers, RCA in layer 0 value 3
    la = np.zeros((14, 12, 10), np.uint8)
    la[lad_a] = 1
    la[rca_a] = 2
    lb = np.zeros((2, 14, 12, 10), np.uint8)
    lb[1][lad_b] = 1
    lb[0][rca_b] = 3
    pa = write_nrrd(tmp_path / "a.seg.nrrd", la, directions=DIRS,
                    extra=slicer_fields([("LAD", 0, 1), ("RCA", 0, 2)]))
    pb = write_nrrd(tmp_path / "b.seg.nrrd", lb, directions=DIRS,
                    extra=slicer_fields([("RCA", 0, 3), ("LAD", 1, 1)]))
    r = agree_files(pa, pb)
    rows = {row["class"]: row for row in r.classes}
    assert list(rows) == ["LAD", "RCA"]
    da, _ = nrrd.read(str(pa))
    db, _ = nrrd.read(str(pb))
    for name, ma, mb in [("LAD", da == 1, db[1] == 1), ("RCA", da == 2, db[0] == 3)]:
        assert rows[name]["dice"] == pytest.approx(2 * (ma & mb).sum() / (ma.sum() + mb.sum()))
        assert rows[name]["hd95_asoca_mm"] == pytest.approx(ref_asoca(ma, mb, SPACING))
    only = agree_files(pa, pb, classes=["RCA"])
    assert [row["class"] for row in only.classes] == ["RCA"]


def test_agree_files_on_a_slicer_written_layered_file(tmp_path, slicer_data):
    """Slicer's 2-layer file vs a copy whose layer-1 sphere moved one 10 mm slice and whose
    'ribs' lost their first occupied slice; other segments identical."""
    src = slicer_data / "SegmentationOverlapping.seg.nrrd"
    data, header = nrrd.read(str(src))
    moved = data.copy()
    moved[1] = np.roll(data[1], 1, axis=2)
    ribs = data[0] == 1
    k0 = int(np.flatnonzero(ribs.any(axis=(0, 1)))[0])
    moved[0][:, :, k0][ribs[:, :, k0]] = 0
    nrrd.write(str(tmp_path / "moved.seg.nrrd"), moved, header)
    r = agree_files(src, tmp_path / "moved.seg.nrrd", definitions=("asoca_mm", "surface"))
    rows = {row["class"]: row for row in r.classes}
    assert len(rows) == 8 and r.spacing_mm == pytest.approx([3.046876, 3.046876, 10.0])
    spacing = r.spacing_mm
    for name in ("cervical vertebral column", "tissue"):
        assert rows[name]["dice"] == 1.0 and rows[name]["hd95_asoca_mm"] == 0.0
    for name, a, b in [("overlapping sphere", data[1] == 1, moved[1] == 1),
                       ("ribs", ribs, moved[0] == 1)]:
        assert rows[name]["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
        assert rows[name]["hd95_asoca_mm"] == pytest.approx(ref_asoca(a, b, spacing))
        assert rows[name]["hd95_surface"] == pytest.approx(ref_surface(a, b, spacing))
    assert rows["overlapping sphere"]["hd95_asoca_mm"] > 0


def test_grid_mismatch_and_mixed_kinds_are_one_line_errors(tmp_path):
    x = np.zeros((6, 5, 4), np.uint8)
    x[2, 2, 2] = 1
    pa = write_plain(tmp_path / "a.nrrd", x)
    pb = write_plain(tmp_path / "b.nrrd", x, origin=(10.0, -5.0, 3.5))
    with pytest.raises(InputError, match="origin") as e:
        agree_files(pa, pb)
    assert "\n" not in str(e.value) and "b.nrrd" in str(e.value)
    pc = write_plain(tmp_path / "c.nrrd", x, directions=np.diag((0.35, 0.4, 0.7)))
    with pytest.raises(InputError, match="spacing"):
        agree_files(pa, pc)
    ps = write_nrrd(tmp_path / "s.seg.nrrd", x, directions=DIRS, origin=(10.0, -5.0, 3.0),
                    extra=slicer_fields([("LAD", 0, 1)]))
    with pytest.raises(InputError, match="--class"):
        agree_files(pa, ps)
    assert agree_files(pa, ps, classes=["1"]).classes[0]["dice"] == 1.0
    sheared = np.array([[0.35, 0.0, 0.0], [0.1, 0.4, 0.0], [0.0, 0.0, 0.625]])
    pq = write_plain(tmp_path / "q.nrrd", x, directions=sheared)
    with pytest.raises(InputError, match="sheared"):
        agree_files(pq, pq)


def test_pair_folders_by_exam_id(tmp_path):
    x = np.zeros((4, 4, 4), np.uint8)
    for d, names in {"r1": ["ASOCA_1.nrrd", "ASOCA_2.nrrd", "ASOCA_3.nrrd"],
                     "r2": ["case1.nrrd", "case2.nrrd", "case4.nrrd"]}.items():
        (tmp_path / d).mkdir()
        for n in names:
            write_plain(tmp_path / d / n, x)
    pairs, only_a, only_b = pair_folders(tmp_path / "r1", tmp_path / "r2")
    assert [(e, pa.name, pb.name) for e, pa, pb in pairs] == [
        ("1", "ASOCA_1.nrrd", "case1.nrrd"), ("2", "ASOCA_2.nrrd", "case2.nrrd")]
    assert only_a == ["3"] and only_b == ["4"]


# -- CLI -----------------------------------------------------------------------------------

def test_cli_agree_folders_json_and_csv(tmp_path):
    from click.testing import CliRunner
    from gpuconv.cli.app import app
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    a, b = random_pair(9)
    write_plain(tmp_path / "A" / "Normal_1.nrrd", a)
    write_plain(tmp_path / "B" / "Normal_1.nrrd", b)
    write_plain(tmp_path / "A" / "Normal_2.nrrd", a)
    write_plain(tmp_path / "B" / "Normal_2.nrrd", np.zeros_like(a))   # B missed everything
    out_csv = tmp_path / "agree.csv"
    res = CliRunner().invoke(app, ["agree", str(tmp_path / "A"), str(tmp_path / "B"), "--json",
                                   "--hd95", "asoca_mm,medpy", "--backend", "cpu",
                                   "--csv", str(out_csv)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert set(doc["definitions"]) == {"dice", "hd95_asoca_mm", "hd95_medpy"}
    assert doc["backend"] == "cpu"
    p1, p2 = doc["pairs"]
    assert (p1["exam"], p2["exam"]) == ("1", "2")
    row = p1["classes"][0]
    assert row["class"] == "1"
    assert row["hd95_asoca_mm"] == pytest.approx(ref_asoca(a, b, SPACING))
    assert row["hd95_medpy"] == pytest.approx(ref_medpy(a, b, SPACING))
    miss = p2["classes"][0]
    assert miss["hd95_asoca_mm"] is None and miss["empty"] == "b" and miss["dice"] == 0.0
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["exam"] for r in rows] == ["1", "2"]
    assert float(rows[0]["hd95_asoca_mm"]) == pytest.approx(row["hd95_asoca_mm"])
    assert rows[1]["hd95_asoca_mm"] == "inf"


def test_cli_agree_errors(tmp_path):
    from click.testing import CliRunner
    from gpuconv.cli.app import app
    x = np.zeros((4, 4, 4), np.uint8)
    pa = write_plain(tmp_path / "a.nrrd", x)
    res = CliRunner().invoke(app, ["agree", str(pa), str(pa), "--hd95", "all"])
    assert res.exit_code == 0 and "hd95 medpy" in res.output and "hd95 surface" in res.output
    res = CliRunner().invoke(app, ["agree", str(pa), str(tmp_path), "--backend", "cpu"])
    assert res.exit_code == 2 and "two files or two folders" in res.output
    res = CliRunner().invoke(app, ["agree", str(pa), str(pa), "--hd95", "hd99"])
    assert res.exit_code == 2 and "unknown HD95" in res.output
    if agreement.gpu_unavailable_reason():
        res = CliRunner().invoke(app, ["agree", str(pa), str(pa), "--backend", "gpu"])
        assert res.exit_code == 2 and "--backend: 'gpu' cannot run here" in res.output
