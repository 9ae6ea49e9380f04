"""Real files written by 3D Slicer (shipped by slicerio): boxes against an independent scipy
reference built from pynrrd's own read of the same files."""

import nrrd
import pytest

import gpuconv
from conftest import expected_label_files, read_label_dir


@pytest.mark.parametrize("connectivity", [8, 4])
def test_segmentation_seg_nrrd(tmp_path, slicer_data, connectivity):
    path = slicer_data / "Segmentation.seg.nrrd"
    data, header = nrrd.read(str(path))          # pynrrd: (I, J, K)
    names = [header[f"Segment{n}_Name"] for n in range(7)]
    value_to_class = {int(header[f"Segment{n}_LabelValue"]): n for n in range(7)}
    s = gpuconv.convert([str(path)], tmp_path / "out", backend="cpu", val_fraction=0.0,
                        connectivity=connectivity, progress=False)
    assert s["failed"] == 0 and s["classes"] == names
    expected = expected_label_files(data[None], lambda layer, v: value_to_class[v],
                                    connectivity)
    got = read_label_dir(tmp_path / "out", "Segmentation")
    assert got == expected
    assert s["boxes"] == sum(len(v) for v in expected.values()) > 50


def test_overlapping_layers(tmp_path, slicer_data):
    path = slicer_data / "SegmentationOverlapping.seg.nrrd"
    data, header = nrrd.read(str(path))          # (L=2, I, J, K)
    assert data.shape[0] == 2
    segs = {(int(header[f"Segment{n}_Layer"]), int(header[f"Segment{n}_LabelValue"])): n
            for n in range(8)}
    assert segs[(1, 1)] == 7 and header["Segment7_Name"] == "overlapping sphere"
    s = gpuconv.convert([str(path)], tmp_path / "out", backend="cpu", val_fraction=0.0,
                        progress=False)
    assert s["classes"][7] == "overlapping sphere"
    expected = expected_label_files(data, lambda layer, v: segs[(layer, v)])
    got = read_label_dir(tmp_path / "out", "SegmentationOverlapping")
    assert got == expected
    sphere_lines = [ln for lines in got.values() for ln in lines if ln.startswith("7 ")]
    # the sphere's extent in the header is k 16..30: one box per slice there
    assert len(sphere_lines) == 15


def test_inspect_counts_voxels_per_segment(slicer_data):
    from gpuconv.io.describe import inspect_file
    path = slicer_data / "SegmentationOverlapping.seg.nrrd"
    data, header = nrrd.read(str(path))
    info = inspect_file(path)
    for seg in info["segments"]:
        assert seg["voxels"] == int((data[seg["layer"]] == seg["value"]).sum())
    assert info["spacing_mm"] == pytest.approx([3.046876, 3.046876, 10.0], abs=1e-5)
    assert len(info["segments"]) == 8 and all(s["name"] for s in info["segments"])


def test_ct_volume_is_not_taken_from_a_folder_of_segmentations(tmp_path, slicer_data):
    from gpuconv.conversion.pipeline import expand_inputs
    found = [p.name for p in expand_inputs([slicer_data])]
    assert found == ["Segmentation.seg.nrrd", "SegmentationOverlapping.seg.nrrd"]
