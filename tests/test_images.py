"""CT slice PNGs: windowing, orientation (boxes land on their lesion's pixels), slice choice,
CT/label grid checks and Slicer's cropped label grids."""

from __future__ import annotations

import shutil
from pathlib import Path

import nrrd
import numpy as np
import pytest
from PIL import Image

from conftest import write_seg
from gpuconv.dataset.grid import (check_same_grid, match_ct, place_on_grid, read_ct_header,
                              reference_extent)
from gpuconv.errors import InputError
from gpuconv.io.nrrd_read import read_volume
from gpuconv.images.windowing import (Window, parse_window, parse_windows, window_cpu,
                                      window_formula, window_volume)
from gpuconv.writers.images import ImageDirs, select_slices


def dicom_window(x: float, c: float, w: float) -> int:
    """DICOM PS3.3 C.11.2.1.2 linear window to 0..255, one value at a time (the reference)."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0
    if x > c - 0.5 + (w - 1) / 2:
        return 255
    return int(np.floor(((x - (c - 0.5)) / (w - 1) + 0.5) * 255 + 0.5))


def write_ct(path, data, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    nrrd.write(str(path), data, {"space": "left-posterior-superior",
                                 "space directions": np.diag(spacing).tolist(),
                                 "space origin": list(origin), "kinds": ["domain"] * 3,
                                 "encoding": "gzip"})
    return Path(path)


def test_window_values_by_hand():
    w = parse_window("mediastinum")  # 40 / 400: 0 at <= -160, 255 above 239
    got = window_cpu(np.array([-1000, -160, -159, 40, 239, 240, 3000], np.int16), [w])[0]
    # 40 -> ((40 - 39.5) / 399 + 0.5) * 255 + 0.5 = 128.32 -> 128
    assert got.tolist() == [0, 0, 1, 128, 255, 255, 255]
    assert parse_window("100,20") == Window(100.0, 20.0)
    with pytest.raises(InputError, match="preset"):
        parse_window("brain-ish")
    with pytest.raises(InputError, match="three windows"):
        parse_windows("lung", channels3=True)
    assert [str(x) for x in parse_windows(None, channels3=True)] == [
        "lung", "mediastinum", "calcium"]


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint16, np.float32])
def test_lut_and_formula_agree_with_the_dicom_reference(dtype):
    rng = np.random.default_rng(0)
    lo = 0 if np.dtype(dtype).kind == "u" else -1500
    x = rng.integers(lo, 2500, 3000).astype(dtype)
    if np.dtype(dtype).kind == "f":
        x = x + rng.random(x.shape).astype(dtype)
    for spec in ("lung", "calcium", "13,7", "0,1"):
        w = parse_window(spec)
        ref = [dicom_window(float(v), w.center, w.width) for v in x.tolist()]
        assert window_cpu(x, [w])[0].tolist() == ref
        assert window_formula(x, w).tolist() == ref


@pytest.mark.gpu
def test_gpu_window_matches_cpu():
    cp = pytest.importorskip("cupy")
    from gpuconv.backends.gpu import cupy_device_reason
    if cupy_device_reason():
        pytest.skip(cupy_device_reason())
    x = np.random.default_rng(1).integers(-1024, 3000, (64, 64, 8)).astype(np.int16)
    ws = parse_windows(None, channels3=True)
    assert np.array_equal(window_volume(x, ws, use_gpu=True), window_volume(x, ws))
    xf = x.astype(np.float32) + 0.25
    assert np.array_equal(window_volume(xf, ws, use_gpu=True), window_volume(xf, ws))
    del cp


def test_select_slices_keeps_labelled_and_seeds_background():
    a = select_slices({3, 7}, 20, 0.25, seed=1, exam="e1")
    assert {3, 7} <= set(a) and len(a) == 2 + round(18 * 0.25)
    assert a == select_slices([7, 3], 20, 0.25, seed=1, exam="e1")   # deterministic
    assert select_slices({3}, 20, None, 0, "e1") == list(range(20))
    assert select_slices({3}, 20, 0.0, 0, "e1") == [3]
    draws = {tuple(select_slices({0}, 40, 0.2, seed=s, exam="e1")) for s in range(5)}
    assert len(draws) > 1                                                # the seed matters


def test_png_orientation_marker_and_box_coincide(tmp_path):
    """An L-shaped marker on a non-square slice: the PNG row is j, the column is i."""
    I, J, K = 9, 6, 3
    ct = np.full((I, J, K), -1000, np.int16)
    marker = [(1, 1), (2, 1), (3, 1), (1, 2), (1, 3)]   # (i, j): long arm along x
    for i, j in marker:
        ct[i, j, 2] = 1000
    w = parse_windows("0,100")
    windowed = window_volume(ct, w)
    dirs = ImageDirs(tmp_path)
    assert len(dirs.write_exam("m", "train", windowed[:, :, [2]], [2])) == 1
    png = np.asarray(Image.open(tmp_path / "images/train/m_3.png"))
    assert png.shape == (J, I) and png.dtype == np.uint8
    bright = {(int(c), int(r)) for r, c in np.argwhere(png == 255)}  # (col, row)
    assert bright == set(marker)


def test_grid_check_and_matching(tmp_path):
    lab = np.zeros((4, 5, 3), np.uint8)
    seg = write_seg(tmp_path / "x_0042.seg.nrrd", lab, [("a", 0, 1)], spacing=(0.5, 0.7, 2.0))
    hdr = read_volume(seg).header
    ok = write_ct(tmp_path / "ct_0042.nrrd", np.zeros((4, 5, 3), np.int16), (0.5, 0.7, 2.0))
    check_same_grid(hdr, read_ct_header(ok))
    bad_sp = write_ct(tmp_path / "b1.nrrd", np.zeros((4, 5, 3), np.int16), (0.5, 0.5, 2.0))
    with pytest.raises(InputError, match="spacing"):
        check_same_grid(hdr, read_ct_header(bad_sp))
    bad_sz = write_ct(tmp_path / "b2.nrrd", np.zeros((5, 4, 3), np.int16), (0.5, 0.7, 2.0))
    with pytest.raises(InputError, match="sizes 5x4x3 vs 4x5x3"):
        check_same_grid(hdr, read_ct_header(bad_sz))
    bad_or = write_ct(tmp_path / "b3.nrrd", np.zeros((4, 5, 3), np.int16), (0.5, 0.7, 2.0),
                      origin=(0.0, 1.0, 0.0))
    with pytest.raises(InputError, match="origin"):
        check_same_grid(hdr, read_ct_header(bad_or))
    for name in ("b1.nrrd", "b2.nrrd", "b3.nrrd"):
        (tmp_path / name).unlink()
    assert match_ct([tmp_path], [seg]) == {"0042": ok}


def test_cropped_label_grid_is_placed_back(tmp_path, slicer_data):
    """A Slicer-style crop (extent offset, shifted origin) is padded back to the full grid."""
    full = np.zeros((12, 10, 6), np.uint8)
    full[5:8, 3:5, 2:4] = 1
    spacing, origin = np.array([0.5, 0.8, 2.0]), np.array([10.0, -4.0, 3.0])
    off = (4, 2, 1)
    crop = full[4:9, 2:6, 1:5]
    ref = "Reference image geometry|0.5;0;0;10;0;0.8;0;-4;0;0;2;3;0;0;0;1;0;11;0;9;0;5;|desc&"
    header = {"space origin": (origin + np.array(off) * spacing).tolist(),
              "Segmentation_ReferenceImageExtentOffset": " ".join(map(str, off)),
              "Segmentation_ConversionParameters": ref}
    f = write_seg(tmp_path / "c.seg.nrrd", crop, [("a", 0, 1)], spacing=tuple(spacing),
                  header=header)
    vol = read_volume(f)
    assert vol.header.extent_offset == off
    assert reference_extent(vol.header.fields) == (0, 11, 0, 9, 0, 5)
    for ref_sizes in (None, (12, 10, 6)):   # from the header's reference extent, or the CT
        placed = place_on_grid(vol, ref_sizes)
        assert np.array_equal(placed.layers[0], full)
        assert np.allclose(placed.header.origin, origin)
        assert placed.header.shape == (1, 12, 10, 6)
    with pytest.raises(InputError, match="does not fit"):
        place_on_grid(vol, (6, 6, 6), "ct.nrrd")
    # without any reference size a cropped grid is an error, never silently mis-normalised
    header.pop("Segmentation_ConversionParameters")
    f2 = write_seg(tmp_path / "d.seg.nrrd", crop, [("a", 0, 1)], spacing=tuple(spacing),
                   header=header)
    with pytest.raises(InputError, match="full image size is unknown"):
        place_on_grid(read_volume(f2))
    # the real Slicer file is not cropped: nothing changes
    real = read_volume(slicer_data / "Segmentation.seg.nrrd")
    assert reference_extent(real.header.fields) == (0, 127, 0, 127, 0, 33)
    assert place_on_grid(real) is real


# --- through convert ------------------------------------------------------------------------

def run_convert(tmp_path, inputs, **kw):
    import gpuconv
    kw.setdefault("val_fraction", 0.0)
    return gpuconv.convert([str(f) for f in inputs], tmp_path / "out", backend="cpu",
                           progress=False, **kw)


def test_convert_marker_box_and_png_coincide(tmp_path):
    """convert --images: the box written for a lesion covers exactly its bright PNG pixels."""
    I, J, K = 11, 7, 4
    ct = np.full((I, J, K), -1000, np.int16)
    lab = np.zeros((I, J, K), np.uint8)
    marker = [(2, 1), (3, 1), (4, 1), (5, 1), (2, 2), (2, 3)]   # asymmetric L
    for i, j in marker:
        ct[i, j, 1] = 800
        lab[i, j, 1] = 1
    d = tmp_path / "in"
    d.mkdir()
    write_ct(d / "p_0003.nrrd", ct, (0.7, 0.7, 3.0))
    write_seg(d / "p_0003.seg.nrrd", lab, [("calc", 0, 1)], spacing=(0.7, 0.7, 3.0))
    s = run_convert(tmp_path, [d], images=[d], window="0,200")
    assert s["failed"] == 0 and s["images"] == K
    png = np.asarray(Image.open(tmp_path / "out/images/train/0003_2.png"))
    assert png.shape == (J, I)
    cls, cx, cy, w, h = map(float, (tmp_path / "out/labels/train/0003_2.txt").read_text().split())
    x0, x1 = round((cx - w / 2) * I), round((cx + w / 2) * I)
    y0, y1 = round((cy - h / 2) * J), round((cy + h / 2) * J)
    bright = np.argwhere(png == 255)
    assert (bright[:, 1].min(), bright[:, 1].max() + 1, bright[:, 0].min(),
            bright[:, 0].max() + 1) == (x0, x1, y0, y1) == (2, 6, 1, 4)


def test_convert_background_fraction_grid_mismatch_and_missing_ct(tmp_path):
    lab = np.zeros((6, 5, 10), np.uint8)
    lab[1, 1, 3] = lab[2, 2, 7] = 1
    d = tmp_path / "in"
    d.mkdir()
    write_seg(d / "a_1.seg.nrrd", lab, [("x", 0, 1)])
    write_ct(d / "a_1.nrrd", np.zeros((6, 5, 10), np.int16))
    write_seg(d / "b_2.seg.nrrd", lab, [("x", 0, 1)])
    write_ct(d / "b_2.nrrd", np.zeros((6, 5, 10), np.int16), spacing=(1.0, 1.0, 2.5))
    write_seg(d / "c_3.seg.nrrd", lab, [("x", 0, 1)])
    errors = []
    s = run_convert(tmp_path, [d], images=[d], background_fraction=0.25, seed=4,
                    on_error=lambda p, r: errors.append((Path(p).name, r)))
    assert s["files"] == 1 and s["failed"] == 2
    reasons = dict(errors)
    assert "spacing" in reasons["b_2.seg.nrrd"] and "b_2.nrrd" in reasons["b_2.seg.nrrd"]
    assert "no CT volume with exam id '3'" in reasons["c_3.seg.nrrd"]
    names = sorted(p.name for p in (tmp_path / "out/images/train").iterdir())
    assert len(names) == 2 + 2 and {"1_4.png", "1_8.png"} <= set(names)   # 2 + round(8 * .25)
    assert not list((tmp_path / "out/labels/train").glob("2_*"))        # nothing for b
    with pytest.raises(InputError, match="background_fraction need images"):
        run_convert(tmp_path, [d], window="lung")


def test_convert_cropped_grid_matches_uncropped(tmp_path):
    full = np.zeros((12, 10, 6), np.uint8)
    full[5:8, 3:5, 2:4] = 1
    full[9, 8, 3] = 1
    spacing, origin = np.array([0.5, 0.8, 2.0]), np.array([10.0, -4.0, 3.0])
    off = (4, 2, 1)
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir(), b.mkdir()
    write_seg(a / "x_9.seg.nrrd", full, [("l", 0, 1)], spacing=tuple(spacing),
              header={"space origin": origin.tolist()})
    write_seg(b / "x_9.seg.nrrd", full[4:10, 2:9, 1:5], [("l", 0, 1)], spacing=tuple(spacing),
              header={"space origin": (origin + np.array(off) * spacing).tolist(),
                      "Segmentation_ReferenceImageExtentOffset": "4 2 1"})
    write_ct(b / "x_9.nrrd", np.zeros((12, 10, 6), np.int16), tuple(spacing), tuple(origin))
    import gpuconv
    gpuconv.convert([str(a)], tmp_path / "oa", val_fraction=0, backend="cpu", progress=False)
    s = gpuconv.convert([str(b)], tmp_path / "ob", val_fraction=0, backend="cpu",
                        progress=False, images=[str(b)])
    assert s["failed"] == 0
    ta = {p.name: p.read_text() for p in (tmp_path / "oa/labels/train").iterdir()}
    tb = {p.name: p.read_text() for p in (tmp_path / "ob/labels/train").iterdir()}
    assert ta == tb and len(ta) == 2
    assert Image.open(tmp_path / "ob/images/train/9_1.png").size == (12, 10)


def test_real_slicer_ct_and_segmentation_align(tmp_path, slicer_data):
    """CTChest4.nrrd + Segmentation.seg.nrrd (real Slicer files): PNGs are the windowed CT in
    the (K, J, I) view, and each segment's polygons fall on matching tissue: ribs and
    vertebrae bright, lungs dark (on the transposed image it would be the other way round)."""
    from test_polygons import even_odd
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(slicer_data / "CTChest4.nrrd", d / "chest_4.nrrd")
    shutil.copy(slicer_data / "Segmentation.seg.nrrd", d / "chest_4.seg.nrrd")
    s = run_convert(tmp_path, [d], images=[d], window="bone", fmt="polygons")
    assert s["failed"] == 0 and s["images"] == 34
    ct, _ = nrrd.read(str(slicer_data / "CTChest4.nrrd"))
    names = s["classes"]
    bright = {names.index(n) for n in ("ribs", "thoracic vertebral column")}
    dark = {names.index(n) for n in ("right lung", "left lung")}
    means = {"bright": [], "dark": []}
    lut = np.array([dicom_window(v, 400, 1800) for v in range(-1100, 3100)], np.uint8)
    for k in (12, 20):
        png = np.asarray(Image.open(tmp_path / f"out/images/train/4_{k + 1}.png"))
        assert np.array_equal(png, lut[np.clip(ct[:, :, k].T, -1100, 3099) + 1100])
        for line in (tmp_path / f"out/labels/train/4_{k + 1}.txt").read_text().splitlines():
            parts = line.split()
            c = int(parts[0])
            pts = np.rint(np.array(parts[1:], float).reshape(-1, 2) * [128, 128])
            inside = even_odd(pts, 128, 128)
            if inside.sum() >= 20 and (c in bright or c in dark):
                means["bright" if c in bright else "dark"].append(png[inside].mean())
    assert means["bright"] and means["dark"]
    assert min(means["bright"]) > 60 and max(means["dark"]) < 25


def test_images_in_worker_processes_match_threads_and_fail_alone(tmp_path):
    """--images with --pool process: the PNGs and labels equal a thread run's, byte for byte,
    and a CT grid mismatch still fails only its own exam."""
    rng = np.random.default_rng(8)
    d = tmp_path / "in"
    d.mkdir()
    for n in range(5):
        lab = np.zeros((24, 18, 6), np.uint8)
        lab[rng.integers(0, 24, 30), rng.integers(0, 18, 30), rng.integers(0, 6, 30)] = 1
        write_seg(d / f"e_{n}.seg.nrrd", lab, [("calc", 0, 1)])
        spacing = (1.0, 1.0, 2.5) if n == 3 else (1.0, 1.0, 1.0)     # exam 3: grid mismatch
        write_ct(d / f"e_{n}.nrrd", rng.integers(-1000, 1500, (24, 18, 6)).astype(np.int16),
                 spacing=spacing)
    outs = {}
    for pool in ("thread", "process"):
        outs[pool] = tmp_path / pool
        s = gpuconv_convert(d, outs[pool], pool)
        assert s["pool"] == pool and s["files"] == 4 and s["failed"] == 1
        assert "spacing" in s["failures"][0]["reason"]
    files = {p: sorted(q.relative_to(outs[p]).as_posix() for q in outs[p].rglob("*.png"))
             for p in outs}
    assert files["thread"] == files["process"] and len(files["thread"]) == 4 * 6
    for rel in files["thread"] + [q.relative_to(outs["thread"]).as_posix()
                                  for q in outs["thread"].rglob("*.txt")]:
        assert (outs["thread"] / rel).read_bytes() == (outs["process"] / rel).read_bytes(), rel


def gpuconv_convert(inputs, out, pool):
    import gpuconv
    return gpuconv.convert([str(inputs)], out, backend="cpu", progress=False, images=[str(inputs)],
                           val_fraction=0.0, workers=2, pool=pool)
