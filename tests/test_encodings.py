"""Files written by pynrrd in each encoding read back to the same labels."""

import gzip

import nrrd
import numpy as np
import pytest

from gpuconv.io.decode import gunzip
from gpuconv.io.nrrd_read import read_header, read_volume
from conftest import write_seg


def _volume():
    rng = np.random.default_rng(3)
    vol = np.zeros((9, 7, 5), np.int16)           # non-square, signed, multi-byte
    vol[rng.random(vol.shape) < 0.1] = 2
    vol[1, 2, 3] = -1
    return vol


@pytest.mark.parametrize("encoding", ["raw", "gzip", "bzip2"])
@pytest.mark.parametrize("detached", [False, True])
@pytest.mark.parametrize("endian", ["little", "big"])
def test_pynrrd_encodings_round_trip(tmp_path, encoding, detached, endian):
    vol = _volume()
    name = "v.nhdr" if detached else "v.nrrd"
    nrrd.write(str(tmp_path / name), vol, {"encoding": encoding, "endian": endian},
               detached_header=detached)
    got = read_volume(tmp_path / name)
    assert got.layers.shape == (1, 9, 7, 5)
    np.testing.assert_array_equal(got.layers[0], vol)
    ref, _ = nrrd.read(str(tmp_path / name))
    np.testing.assert_array_equal(got.layers[0], ref)


def test_layered_4d_file(tmp_path):
    layers = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5) % 3
    write_seg(tmp_path / "l.seg.nrrd", layers, [("a", 0, 1), ("b", 1, 2)])
    got = read_volume(tmp_path / "l.seg.nrrd")
    np.testing.assert_array_equal(got.layers, layers)
    assert [s.layer for s in got.header.segments] == [0, 1]


def test_spacing_and_voxel_volume_from_space_directions(tmp_path):
    vol = np.zeros((2, 2, 2), np.uint8)
    d = np.array([[0.0, 0.5, 0.0], [-0.4, 0.0, 0.0], [0.0, 0.0, 2.5]])  # axes swapped/flipped
    nrrd.write(str(tmp_path / "o.nrrd"), vol, {"space": "left-posterior-superior",
                                                 "space directions": d})
    h = read_header(tmp_path / "o.nrrd")
    np.testing.assert_allclose(h.spacing, [0.5, 0.4, 2.5])
    assert h.voxel_volume_mm3 == pytest.approx(0.5 * 0.4 * 2.5)


def test_older_slicer_fields_default_layer_and_value(tmp_path):
    layers = np.zeros((2, 2, 2, 1), np.uint8)
    nrrd.write(str(tmp_path / "old.seg.nrrd"), layers,
               {"kinds": ["list", "domain", "domain", "domain"],
                "Segment0_Name": "first", "Segment1_Name": "second"})
    segs = read_header(tmp_path / "old.seg.nrrd").segments
    assert [(s.name, s.layer, s.label_value) for s in segs] == [("first", 0, 1),
                                                                 ("second", 1, 1)]


def test_multi_member_gzip_falls_back_to_streaming():
    raw = bytes(range(256)) * 1000
    payload = gzip.compress(raw[:1000]) + gzip.compress(raw[1000:])
    assert bytes(gunzip(payload, len(raw))) == raw
