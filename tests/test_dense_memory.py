"""Issue 15, dense-map memory: slices labelled a chunk at a time give exactly the files of the
whole-file path, and both equal an independent computation (scipy.ndimage per slice and
value).  No timing or memory assertions here: those live in the benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

import gpuconv
from gpuconv.conversion import exam_unit
from gpuconv.io.nrrd_write import write_nrrd


def _dense_cells(rng, shape, fg=0.4, cell=3, n_values=8) -> np.ndarray:
    """Touching cell x cell squares of mixed values (the bench's 'cells' family, small)."""
    I, J, K = shape
    coarse = np.zeros((-(-I // cell), -(-J // cell), K), np.uint8)
    m = rng.random(coarse.shape) < fg
    coarse[m] = rng.integers(1, n_values + 1, int(m.sum()))
    vol = np.repeat(np.repeat(coarse, cell, 0), cell, 1)[:I, :J]
    vol[:, :, K // 3] = 0     # an empty slice inside the volume
    return np.ascontiguousarray(vol)


def _expected_texts(vol: np.ndarray) -> dict[int, str]:
    """{k: label text}: plain map value v is class v - 1; boxes from scipy.ndimage.label (8-
    connectivity) and find_objects per slice and value, sorted and formatted as the contract
    in results/boxes.py says."""
    I, J, K = vol.shape
    out = {}
    for k in range(K):
        rows = []
        sl = vol[:, :, k]
        for v in np.unique(sl[sl != 0]).tolist():
            lab, n = ndimage.label(sl == v, structure=np.ones((3, 3), int))
            for idx, (si, sj) in enumerate(ndimage.find_objects(lab), start=1):
                px = int(np.count_nonzero(lab[si, sj] == idx))
                rows.append((v - 1, sj.start, si.start, sj.stop - 1, si.stop - 1, px))
        if rows:
            rows.sort()
            out[k] = "".join(
                f"{c} {(i0 + i1 + 1) / 2.0 / I:.6f} {(j0 + j1 + 1) / 2.0 / J:.6f} "
                f"{(i1 - i0 + 1) / I:.6f} {(j1 - j0 + 1) / J:.6f}\n"
                for c, j0, i0, j1, i1, _ in rows)
    return out


def _written(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "labels").rglob("*.txt"))}


def _convert(folder: Path, out: Path, **kw) -> dict:
    return gpuconv.convert([str(folder)], str(out), backend="cpu", pool="thread", workers=2,
                           progress=False, **kw)


@pytest.fixture
def dense_map(tmp_path):
    rng = np.random.default_rng(15)
    vol = _dense_cells(rng, (61, 47, 23))
    folder = tmp_path / "in"
    folder.mkdir()
    write_nrrd(folder / "dense_0001.nrrd", vol)
    return folder, vol


def test_chunked_labels_equal_whole_file_and_scipy(dense_map, tmp_path, monkeypatch):
    folder, vol = dense_map
    # many chunks of changing sizes: ~40 boxes a chunk, a first chunk of one slice
    monkeypatch.setattr(exam_unit, "_CHUNK_BOXES", 40)
    monkeypatch.setattr(exam_unit, "_CHUNK_FIRST_VOXELS", 1)
    calls = []
    real = exam_unit.chunked_results
    monkeypatch.setattr(exam_unit, "chunked_results",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    s_chunked = _convert(folder, tmp_path / "chunked", fmt="boxes,table")
    assert calls, "the chunked path did not run"
    chunked = _written(tmp_path / "chunked")

    monkeypatch.setattr(exam_unit, "_chunkable", lambda backend, opts: False)
    s_whole = _convert(folder, tmp_path / "whole", fmt="boxes,table")
    whole = _written(tmp_path / "whole")

    assert chunked == whole
    assert (tmp_path / "chunked" / "boxes.csv").read_bytes() == \
        (tmp_path / "whole" / "boxes.csv").read_bytes()
    for key in ("boxes", "boxes_per_class", "slices_with_boxes", "label_files"):
        assert s_chunked[key] == s_whole[key], key

    want = _expected_texts(vol)
    assert len(want) == vol.shape[2] - 1
    got = {int(name.rsplit("_", 1)[1][:-4]) - 1: text.decode() for name, text in chunked.items()}
    assert got == want
    assert s_chunked["boxes"] == sum(t.count("\n") for t in want.values())


def test_chunk_sizes_follow_the_box_density(tmp_path, monkeypatch):
    """Chunks hold about _CHUNK_BOXES boxes once the density is known, and cover every slice
    once, in order."""
    from gpuconv.backends.cpu import CpuBackend
    from gpuconv.dataset.classes import build_class_map
    seen_chunks = []
    backend = CpuBackend()
    real = CpuBackend.slice_components

    def spy(self, layers, connectivity=8):
        seen_chunks.append(layers.shape[3])
        return real(self, layers, connectivity)

    # the chunk path needs CpuBackend's own method: patch the class, restored by monkeypatch
    monkeypatch.setattr(CpuBackend, "slice_components", spy)
    monkeypatch.setattr(exam_unit, "_CHUNK_BOXES", 200)
    monkeypatch.setattr(exam_unit, "_CHUNK_FIRST_VOXELS", 1)
    rng = np.random.default_rng(3)
    vol = _dense_cells(rng, (60, 60, 50))
    p = write_nrrd(tmp_path / "x.nrrd", vol)
    job = exam_unit.ExamJob("x", p, "train")
    read = exam_unit.read_step(job, None, None)
    opts = exam_unit.LabelOptions(build_class_map([read.header]))
    res = exam_unit.label_step(job, read, opts, backend)
    assert read.layers is None
    assert sum(seen_chunks) == 50 and seen_chunks[0] == 1
    per_slice = len(res.boxes) / 50
    assert max(seen_chunks[1:]) <= max(1, int(200 / per_slice * 1.5) + 1)
    assert np.all(np.diff(res.boxes.k.astype(np.int64)) >= 0)


def _plain_map_folder(tmp_path: Path, name: str, vol: np.ndarray) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    write_nrrd(folder / f"{name}_0001.nrrd", vol)
    return folder


@pytest.mark.parametrize("case", ["too_many_values", "negative_late"])
def test_chunked_failures_equal_whole_file(case, tmp_path, monkeypatch):
    """A plain map refused for what the whole file holds (300 distinct values, though no chunk
    has more than 255; a negative value in a late slice) fails with the whole-file reason."""
    K = 30
    vol = np.zeros((20, 20, K), np.int16)
    if case == "too_many_values":
        for k in range(K):   # 10 values a slice, 300 in all
            for n in range(10):
                vol[2 * n, 0, k] = 1 + k * 10 + n
    else:
        vol[::3, ::3, :] = 2
        vol[5, 5, K - 2] = -7
    folder = _plain_map_folder(tmp_path, case, vol)
    monkeypatch.setattr(exam_unit, "_CHUNK_BOXES", 8)
    monkeypatch.setattr(exam_unit, "_CHUNK_FIRST_VOXELS", 1)
    reasons = {}
    for mode in ("chunked", "whole"):
        if mode == "whole":
            monkeypatch.setattr(exam_unit, "_chunkable", lambda backend, opts: False)
        s = _convert(folder, tmp_path / f"out-{mode}", on_error=lambda *a: None)
        assert s["failed"] == 1
        reasons[mode] = [f["reason"] for f in s["failures"]]
    assert reasons["chunked"] == reasons["whole"]


def test_box_table_columns_are_compact(dense_map):
    folder, vol = dense_map
    from gpuconv.backends.cpu import CpuBackend
    from gpuconv.dataset.classes import build_class_map
    p = next(folder.iterdir())
    job = exam_unit.ExamJob("dense_0001", p, "train")
    read = exam_unit.read_step(job, None, None)
    opts = exam_unit.LabelOptions(build_class_map([read.header]))
    t = exam_unit.label_step(job, read, opts, CpuBackend()).boxes
    assert len(t) > 1000
    for name in ("k", "cls", "i0", "i1", "j0", "j1", "pixels"):
        assert getattr(t, name).dtype.itemsize <= 2, name


def test_table_part_in_blocks_equals_whole_text(tmp_path, monkeypatch):
    """``--format table`` parts are formatted and written a block of rows at a time: the same
    text as all rows at once, for any block size."""
    from gpuconv.results.boxes import BoxTable
    from gpuconv.writers import table
    rng = np.random.default_rng(7)
    n = 1000
    i0 = rng.integers(0, 60, n)
    j0 = rng.integers(0, 40, n)
    t = BoxTable(k=np.sort(rng.integers(0, 9, n)).astype(np.uint8),
                 cls=rng.integers(0, 5, n).astype(np.uint8), i0=i0.astype(np.uint16),
                 i1=np.minimum(59, i0 + rng.integers(0, 3, n)).astype(np.uint16),
                 j0=j0.astype(np.uint16),
                 j1=np.minimum(39, j0 + rng.integers(0, 3, n)).astype(np.uint16),
                 pixels=rng.integers(1, 9, n).astype(np.uint8), width=60, height=40, slices=9)
    names = ["a", "b,c", "d"]   # class 3 and 4 have no name: "4", "5"
    whole = table.part_text("ex,1", "train", t, names)
    assert whole.count("\n") == n and '"b,c"' in whole and '"ex,1"' in whole
    for rows in (1, 7, 999, 1000, 5000):
        assert "".join(table.part_blocks("ex,1", "train", t, names, rows)) == whole
    monkeypatch.setattr(table, "_PART_ROWS", 33)
    p = table.write_part(tmp_path, "boxes", "ex,1", "train", t, names)
    assert p.read_text(encoding="utf-8") == whole
    assert not [q for q in p.parent.iterdir() if q.name.startswith(".")]
