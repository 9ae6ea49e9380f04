"""3D instances: components against scipy.ndimage.label (matching structure per label value),
volumes and centroids against the header's own geometry, Slicer files against direct counts,
and the canonical order that makes instances.csv independent of the backend's row order."""

from __future__ import annotations

import csv
import io

import nrrd
import numpy as np
import pytest
from scipy import ndimage

from conftest import write_seg
from gpuconv.backends import CpuBackend, Instances3D
from gpuconv.dataset.classes import ClassMap
from gpuconv.results.instances import COLUMNS, instance_rows, instances_csv_text, write_instances
from gpuconv.io.nrrd_read import read_volume

RANK = {6: 1, 18: 2, 26: 3}  # generate_binary_structure(3, rank) is 6/18/26-connectivity


def reference_instances(layers, connectivity):
    """Sorted [(layer, value, voxels, i0, i1, j0, j1, k0, k1, sum_i, sum_j, sum_k)] via scipy."""
    structure = ndimage.generate_binary_structure(3, RANK[connectivity])
    out = []
    for layer in range(layers.shape[0]):
        for value in np.unique(layers[layer]):
            if value == 0:
                continue
            lab, n = ndimage.label(layers[layer] == value, structure)
            for idx in range(1, n + 1):
                i, j, k = np.nonzero(lab == idx)
                out.append((layer, int(value), len(i), i.min(), i.max(), j.min(), j.max(),
                            k.min(), k.max(), i.sum(), j.sum(), k.sum()))
    return sorted(tuple(int(x) for x in r) for r in out)


def rows_of(inst: Instances3D):
    return sorted(zip(*(a.tolist() for a in (
        inst.layer, inst.value, inst.voxels, inst.i0, inst.i1, inst.j0, inst.j1, inst.k0,
        inst.k1, inst.sum_i, inst.sum_j, inst.sum_k))))


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_random_layers_match_scipy(connectivity):
    rng = np.random.default_rng(connectivity)
    # non-cubic, two layers, three values touching each other, foreground reaching every border
    shape = (2, 23, 17, 9)
    fg = rng.random(shape) < 0.35
    layers = (fg * rng.integers(1, 4, shape)).astype(np.uint8)
    got = CpuBackend().instances_3d(layers, connectivity)
    assert rows_of(got) == reference_instances(layers, connectivity)
    assert got.voxels.sum() == fg.sum()


def test_connectivity_hand_cases():
    """Corner contact across slices links only at 26, edge contact at 18 and 26, face at all;
    different values never link even when touching; the same value in another layer neither."""
    v = np.zeros((2, 6, 6, 6), np.uint8)
    v[0, 0, 0, 0] = v[0, 1, 1, 1] = 1          # corner contact (dk=1, dj=1, di=1)
    v[0, 4, 0, 0] = v[0, 4, 1, 1] = 2          # edge contact (dk=1, dj=1)
    v[0, 0, 4, 4] = v[0, 0, 4, 5] = 3          # face contact (dk=1)
    v[0, 3, 4, 4] = 4
    v[0, 3, 4, 5] = 5                          # face contact, different values
    v[1, 0, 0, 0] = v[1, 1, 1, 1] = 1          # same as layer 0, other layer
    be = CpuBackend()
    counts = {c: len(be.instances_3d(v, c)) for c in (6, 18, 26)}
    # layer 0: corner pair, edge pair, face pair, 4, 5; layer 1: corner pair
    assert counts == {26: 1 + 1 + 1 + 2 + 1, 18: 2 + 1 + 1 + 2 + 2, 6: 2 + 2 + 1 + 2 + 2}
    got = be.instances_3d(v, 26)
    assert sorted(zip(got.layer.tolist(), got.value.tolist(), got.voxels.tolist())) == [
        (0, 1, 2), (0, 2, 2), (0, 3, 2), (0, 4, 1), (0, 5, 1), (1, 1, 2)]
    with pytest.raises(ValueError):
        be.instances_3d(v, 8)


def test_empty_volume_and_single_voxel_at_far_corner():
    be = CpuBackend()
    v = np.zeros((1, 5, 4, 3), np.uint8)
    assert len(be.instances_3d(v)) == 0
    v[0, 4, 3, 2] = 7
    got = be.instances_3d(v)
    assert rows_of(got) == [(0, 7, 1, 4, 4, 3, 3, 2, 2, 4, 3, 2)]


def test_u_shape_merges_late():
    """Two arms that meet only in the last slice: one instance (union across slices)."""
    v = np.zeros((1, 7, 3, 5), np.uint8)
    v[0, 0, 1, :] = 1
    v[0, 6, 1, :] = 1
    v[0, :, 1, 4] = 1
    got = CpuBackend().instances_3d(v, 6)
    assert rows_of(got) == reference_instances(v, 6) and len(got) == 1


def _geometry_case(tmp_path, directions, name):
    rng = np.random.default_rng(7)
    shape = (21, 14, 8)
    data = np.zeros(shape, np.uint8)
    fg = ndimage.binary_dilation(rng.random(shape) < 0.03, iterations=1)
    data[fg] = rng.integers(1, 3, shape)[fg]
    path = tmp_path / f"{name}.seg.nrrd"
    header = {"space": "left-posterior-superior", "space directions": directions,
              "space origin": [10.0, -20.0, 5.0], "kinds": ["domain"] * 3, "encoding": "gzip"}
    for n, (seg, value) in enumerate([("A", 1), ("B", 2)]):
        header.update({f"Segment{n}_Name": seg, f"Segment{n}_LabelValue": str(value),
                       f"Segment{n}_Layer": "0", f"Segment{n}_ID": f"S{n}"})
    nrrd.write(str(path), data, header)
    return path


@pytest.mark.parametrize("name,directions", [
    ("aniso", [[0.7, 0, 0], [0, 0.45, 0], [0, 0, 3.0]]),
    # oblique: rotated about z by 30 degrees and sheared slice axis (not orthogonal)
    ("oblique", [[0.8 * np.cos(0.5236), 0.8 * np.sin(0.5236), 0.0],
                 [-0.6 * np.sin(0.5236), 0.6 * np.cos(0.5236), 0.0],
                 [0.3, 0.2, 2.5]]),
])
def test_volume_and_centroids_from_header_geometry(tmp_path, name, directions):
    path = _geometry_case(tmp_path, directions, name)
    data, header = nrrd.read(str(path))
    d = np.asarray(header["space directions"], float)   # independent: pynrrd's parse
    origin = np.asarray(header["space origin"], float)
    voxel_mm3 = abs(np.linalg.det(d))
    vol = read_volume(path)
    cmap = ClassMap(["A", "B"])
    table = instance_rows("e", "train", CpuBackend().instances_3d(vol.layers, 26), vol.header,
                          cmap)
    structure = ndimage.generate_binary_structure(3, 3)
    expected = []
    for value in (1, 2):
        lab, n = ndimage.label(data == value, structure)
        for idx in range(1, n + 1):
            ijk = np.argwhere(lab == idx).astype(float)
            c = ijk.mean(axis=0)
            expected.append((value - 1, len(ijk), len(ijk) * voxel_mm3,
                             tuple(c), tuple(origin + d.T @ c)))
    assert len(table) == len(expected) > 5
    got = sorted(zip(table.cls.tolist(), table.voxels.tolist(), table.volume_mm3.tolist(),
                     map(tuple, table.centroid_ijk.tolist()),
                     map(tuple, table.centroid_xyz.tolist())))
    for g, e in zip(got, sorted(expected)):
        assert g[0:2] == e[0:2]
        assert g[2] == pytest.approx(e[2], rel=1e-12)
        assert g[3] == pytest.approx(e[3], abs=1e-12)
        assert g[4] == pytest.approx(e[4], abs=1e-9)
    if name == "oblique":  # the spacing product would be wrong here: the test must see it
        assert not np.isclose(voxel_mm3, np.prod(np.linalg.norm(d, axis=1)))


@pytest.mark.parametrize("fname", ["Segmentation.seg.nrrd", "SegmentationOverlapping.seg.nrrd"])
def test_slicer_files_voxel_counts_per_segment(slicer_data, fname):
    path = slicer_data / fname
    data, header = nrrd.read(str(path))
    layers = data if data.ndim == 4 else data[None]
    vol = read_volume(path)
    inst = CpuBackend().instances_3d(vol.layers, 26)
    n_seg = sum(1 for k in header if k.endswith("_LabelValue"))
    for n in range(n_seg):
        layer = int(header.get(f"Segment{n}_Layer", 0))
        value = int(header[f"Segment{n}_LabelValue"])
        direct = int((layers[layer] == value).sum())
        sel = (inst.layer == layer) & (inst.value == value)
        assert int(inst.voxels[sel].sum()) == direct > 0
    assert rows_of(inst) == reference_instances(layers, 26)


def test_csv_is_canonical_whatever_the_row_order(slicer_data, tmp_path):
    """A backend may return rows in any order (a GPU does): the file must not change."""
    path = slicer_data / "SegmentationOverlapping.seg.nrrd"
    vol = read_volume(path)
    names = [s.name for s in vol.header.segments]
    cmap = ClassMap(names)
    inst = CpuBackend().instances_3d(vol.layers, 26)
    perm = np.random.default_rng(3).permutation(len(inst))
    a = instances_csv_text([instance_rows("x", "val", inst, vol.header, cmap)], names)
    b = instances_csv_text([instance_rows("x", "val", inst.take(perm), vol.header, cmap)], names)
    assert a == b
    rows = list(csv.DictReader(io.StringIO(a)))
    assert tuple(rows[0]) == COLUMNS and len(rows) == len(inst)
    keys = [(int(r["class_id"]), int(r["k0"]), int(r["j0"]), int(r["i0"])) for r in rows]
    assert keys == sorted(keys)
    assert [int(r["instance_id"]) for r in rows] == list(range(1, len(rows) + 1))
    sphere = [r for r in rows if r["class_name"] == "overlapping sphere"]
    assert len(sphere) == 1 and sphere[0]["layer"] == "1" and sphere[0]["label_value"] == "1"
    s = sphere[0]
    assert int(s["slices"]) == int(s["k1"]) - int(s["k0"]) + 1 == 15   # header extent k 16..30


def test_write_instances_csv_and_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow.parquet")
    v = np.zeros((3, 4, 5), np.uint8)
    v[0, 0, 0] = 1
    v[2:, 2:, 3:] = 2
    p = write_seg(tmp_path / "a_2.seg.nrrd", v, [("one", 0, 1), ("two", 0, 2)],
                  spacing=(0.5, 1.0, 2.0))
    q = write_seg(tmp_path / "a_1.seg.nrrd", v[::-1].copy(), [("two", 0, 2), ("one", 0, 1)],
                  spacing=(0.5, 1.0, 2.0))
    names = ["one", "two"]
    cmap = ClassMap(names)
    tables = []
    for path, exam in ((p, "2"), (q, "1")):
        vol = read_volume(path)
        tables.append(instance_rows(exam, "train", CpuBackend().instances_3d(vol.layers),
                                    vol.header, cmap))
    csv_path, pq_path = write_instances(tmp_path / "out", tables, names, parquet=True)
    rows = list(csv.DictReader(open(csv_path)))
    assert [(r["exam"], r["class_name"], r["voxels"], r["volume_mm3"]) for r in rows] == [
        ("1", "one", "1", "1.000000"), ("1", "two", "4", "4.000000"),
        ("2", "one", "1", "1.000000"), ("2", "two", "4", "4.000000")]
    assert (rows[1]["i0"], rows[1]["i1"]) == ("0", "0")       # mirrored along i
    assert (rows[3]["i0"], rows[3]["i1"]) == ("2", "2")
    t = pa.read_table(pq_path)
    assert t.column_names == list(COLUMNS)
    assert t.column("voxels").to_pylist() == [1, 4, 1, 4]
    assert t.column("exam").to_pylist() == ["1", "1", "2", "2"]


@pytest.mark.gpu
def test_gpu_instances_equal_cpu(slicer_data):
    from gpuconv.backends import get_backend, gpu_unavailable_reason
    if gpu_unavailable_reason() is not None:
        pytest.skip(gpu_unavailable_reason())
    gpu = get_backend("gpu")
    if not hasattr(gpu, "instances_3d"):
        pytest.skip("the GPU backend has no instances_3d yet")
    rng = np.random.default_rng(11)
    shape = (2, 67, 45, 13)
    layers = ((rng.random(shape) < 0.3) * rng.integers(1, 4, shape)).astype(np.uint8)
    for c in (6, 18, 26):
        assert rows_of(gpu.instances_3d(layers, c)) == rows_of(CpuBackend().instances_3d(layers, c))
    vol = read_volume(slicer_data / "SegmentationOverlapping.seg.nrrd")
    names = [s.name for s in vol.header.segments]
    cmap = ClassMap(names)
    texts = [instances_csv_text([instance_rows("x", "val", be.instances_3d(vol.layers), vol.header,
                                               cmap)], names) for be in (gpu, CpuBackend())]
    assert texts[0] == texts[1]


def test_parts_merge_to_the_same_file_as_one_write(tmp_path, slicer_data):
    """convert --instances writes one part per exam (resumable) and merges them at the end."""
    from gpuconv.results.instances import merge_instances_parts, write_instances_part
    tables, names = [], None
    for exam, fname in (("b", "Segmentation.seg.nrrd"), ("a", "SegmentationOverlapping.seg.nrrd")):
        vol = read_volume(slicer_data / fname)
        names = names or [s.name for s in vol.header.segments]
        names += [s.name for s in vol.header.segments if s.name not in names]
        tables.append((exam, vol))
    cmap = ClassMap(names)
    built = [instance_rows(e, "", CpuBackend().instances_3d(v.layers), v.header, cmap)
             for e, v in tables]
    one = write_instances(tmp_path / "one", built, names, parquet=False)[0].read_text()
    for t in built:
        write_instances_part(tmp_path / "parts", t, names)
    merged = merge_instances_parts(tmp_path / "parts", ["b", "a", "gone"], parquet=False)
    assert merged[0].read_text() == one
    assert one.splitlines()[1].startswith("a,,")       # sorted by exam id
