"""Issue 16: NIfTI labels and CTs, DICOM CT series, DICOM-SEG.

The same synthetic exam written in every format must give byte-identical outputs (label files,
polygons, instances, PNGs); a real DICOM-SEG (liver.dcm from pydicom-data) is checked against
an independent reading of its frames; bad inputs fail alone with one line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

import gpuconv  # noqa: E402
from gpuconv.dataset.plan import expand_inputs  # noqa: E402
from gpuconv.errors import InputError  # noqa: E402
from gpuconv.io import formats  # noqa: E402
from gpuconv.io.describe import inspect_file  # noqa: E402
from gpuconv.io.dicom_write import write_ct_series, write_seg  # noqa: E402
from gpuconv.io.nifti import write_nifti  # noqa: E402
from gpuconv.io.nrrd_write import slicer_segment_fields, write_nrrd  # noqa: E402

SHAPE = (48, 40, 7)                      # I, J, K (I * J a multiple of 8: BINARY frames)
D = np.diag([-0.7, -0.7, 3.0])           # the synthetic corpus' LPS grid
O = np.array([16.8, 14.0, -200.0])
# feet-first: k runs head to feet (normal of IOP (-1,0,0) x (0,1,0) is -z)
D_FF = np.array([[-0.7, 0.0, 0.0], [0.0, 0.7, 0.0], [0.0, 0.0, -3.0]])
O_FF = np.array([16.8, -14.0, -182.0])
NAMES = ["LAD", "RCA", "aorta"]


def exam_labels() -> np.ndarray:
    """(I, J, K) uint8, values 1..3 = segment numbers: blobs, touching segments, a 1-pixel
    lesion, lesions on the borders, a hole (polygons), an empty slice."""
    lab = np.zeros(SHAPE, np.uint8)
    lab[5:12, 3:9, 1:4] = 1
    lab[7:9, 5:7, 2] = 0                  # a hole
    lab[12:16, 3:9, 2] = 2                # touches segment 1
    lab[0, 0, 3] = 3                      # one pixel, corner
    lab[40:48, 30:40, 5] = 3              # on the far border
    lab[20:25, 20:22, 6] = 2
    lab[30, 10:20, 6] = 1                 # a line
    return lab                            # slice 0 is empty


def exam_ct() -> np.ndarray:
    rng = np.random.default_rng(16)
    return rng.integers(-1024, 1800, SHAPE).astype(np.int16)


def segs_nrrd(path, lab, d=D, o=O):
    segs = [{"name": n, "label_value": v + 1, "layer": 0} for v, n in enumerate(NAMES)]
    return write_nrrd(path, lab, directions=d, origin=o,
                      extra=slicer_segment_fields(segs, lab.shape))


def masks_of(lab):
    return np.stack([lab == v + 1 for v in range(len(NAMES))])


def outputs(out: Path) -> dict[str, bytes]:
    """Every output file but those that name paths or times."""
    got = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_file() and p.name not in ("summary.json", "manifest.jsonl") and \
                not rel.startswith(".") and "/." not in rel:
            data = p.read_bytes()
            if p.name == "dataset.yaml":
                data = b"\n".join(l for l in data.splitlines() if not l.startswith(b"path:"))
            got[rel] = data
    return got


def run(labels, out, ct=None, fmt="boxes", **kw):
    errors = []
    s = gpuconv.convert([str(labels)], str(out), images=[str(ct)] if ct else None, fmt=fmt,
                        instances=fmt != "polygons", workers=1, pool="thread", progress=False,
                        on_error=lambda p, r: errors.append((Path(p).name, r)), **kw)
    return s, errors


def both_formats(labels, tmp, name, ct=None, **kw):
    got = {}
    for fmt in ("boxes", "polygons"):
        s, errors = run(labels, tmp / f"{name}-{fmt}", ct, fmt, **kw)
        assert not errors and s["files"] == 1, errors
        got.update({f"{fmt}/{k}": v for k, v in outputs(tmp / f"{name}-{fmt}").items()})
    return got


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("formats")
    lab, hu = exam_labels(), exam_ct()
    for sub in ("nrrd", "seg", "segf", "segsparse", "plain", "nii", "niigz", "ct"):
        (tmp / sub).mkdir()
    segs_nrrd(tmp / "nrrd/COCA_0007.seg.nrrd", lab)
    write_seg(tmp / "seg/COCA_0007.dcm", masks_of(lab), NAMES, D, O, exam="0007",
              frame_order=np.random.default_rng(1).permutation(3 * SHAPE[2]))
    write_seg(tmp / "segf/COCA_0007.dcm", masks_of(lab), NAMES, D, O, exam="0007",
              fractional=True)
    write_seg(tmp / "segsparse/COCA_0007.dcm", masks_of(lab), NAMES, D, O, exam="0007",
              omit_empty=True)
    write_nrrd(tmp / "plain/COCA_0007.nrrd", lab, directions=D, origin=O)
    write_nifti(tmp / "nii/COCA_0007.nii", lab, D, O)
    write_nifti(tmp / "niigz/COCA_0007.nii.gz", lab, D, O)
    write_nrrd(tmp / "ct/CT_0007.nrrd", hu, directions=D, origin=O)
    return tmp


def test_readers_agree_on_geometry_and_voxels(corpus):
    ref = formats.read_volume(corpus / "nrrd/COCA_0007.seg.nrrd")
    for p in ("seg/COCA_0007.dcm", "segf/COCA_0007.dcm", "plain/COCA_0007.nrrd",
              "nii/COCA_0007.nii", "niigz/COCA_0007.nii.gz"):
        v = formats.read_volume(corpus / p)
        assert v.header.spatial_shape == ref.header.spatial_shape, p
        assert v.header.directions.tolist() == ref.header.directions.tolist(), p
        assert v.header.origin.tolist() == ref.header.origin.tolist(), p
        assert np.array_equal(v.layers, ref.layers), p
    seg = formats.read_header(corpus / "seg/COCA_0007.dcm")
    assert [(s.name, s.layer, s.label_value) for s in seg.segments] == \
        [(n, 0, v + 1) for v, n in enumerate(NAMES)]
    nii = formats.read_header(corpus / "niigz/COCA_0007.nii.gz")
    assert nii.segments is None and nii.fields["affine"] == "sform"


def test_same_exam_every_label_format_same_bytes(corpus, tmp_path):
    ct = corpus / "ct"
    ref = both_formats(corpus / "nrrd", tmp_path, "nrrd", ct)
    assert any(k.startswith("boxes/images/train/") for k in ref)
    assert any(k.endswith("instances.csv") for k in ref)
    for sub in ("seg", "segf"):
        assert both_formats(corpus / sub, tmp_path, sub, ct) == ref, sub
    plain = both_formats(corpus / "plain", tmp_path, "plain", ct)
    for sub in ("nii", "niigz"):
        assert both_formats(corpus / sub, tmp_path, sub, ct) == plain, sub
    # the plain maps' files equal the named ones' but for the class names in dataset.yaml
    named = (".yaml", ".csv", ".parquet")
    assert {k: v for k, v in plain.items() if not k.endswith(named)} == \
        {k: v for k, v in ref.items() if not k.endswith(named)}


def test_sparse_seg_placed_on_its_ct_grid(corpus, tmp_path):
    """Frames of empty slices omitted (slice 0 here): placed onto the CT by position."""
    ref = both_formats(corpus / "nrrd", tmp_path, "nrrd", corpus / "ct")
    assert formats.read_header(corpus / "segsparse/COCA_0007.dcm").spatial_shape[2] == 6
    assert both_formats(corpus / "segsparse", tmp_path, "sparse", corpus / "ct") == ref


@pytest.mark.parametrize("variant", ["shuffled", "feet_first", "instance_numbers_reversed"])
def test_dicom_ct_series_same_pngs_as_nrrd_ct(tmp_path, variant):
    lab, hu = exam_labels(), exam_ct()
    d, o = (D_FF, O_FF) if variant == "feet_first" else (D, O)
    K = SHAPE[2]
    (tmp_path / "labels").mkdir()
    (tmp_path / "ct_nrrd").mkdir()
    segs_nrrd(tmp_path / "labels/COCA_0007.seg.nrrd", lab, d, o)
    write_nrrd(tmp_path / "ct_nrrd/0007.nrrd", hu, directions=d, origin=o)
    kw = {"intercept": -1024.0}                          # stored unsigned, HU = stored - 1024
    if variant == "shuffled":
        kw["file_order"] = np.random.default_rng(3).permutation(K)
    elif variant == "feet_first":
        kw["file_order"] = list(range(K))[::-1]          # first file = the lowest slice
        kw["instance_order"] = [K - k for k in range(K)]
    else:
        kw["instance_order"] = [K - k for k in range(K)]
        kw["intercept"], kw["slope"] = -2048.0, 1.0
    write_ct_series(tmp_path / "dicom/CT_0007", hu, d, o, exam="0007", **kw)
    ref = both_formats(tmp_path / "labels", tmp_path, "nrrd", tmp_path / "ct_nrrd")
    got = both_formats(tmp_path / "labels", tmp_path, "dicom", tmp_path / "dicom")
    assert got == ref
    h, data = formats.read_ct(tmp_path / "dicom/CT_0007")
    assert np.array_equal(data, hu) and data.dtype == np.int16
    assert h.directions.tolist() == d.tolist() and h.origin.tolist() == o.tolist()


def test_nifti_ct_same_pngs(corpus, tmp_path):
    (tmp_path / "ct").mkdir()
    write_nifti(tmp_path / "ct/0007.nii.gz", exam_ct(), D, O)
    ref = both_formats(corpus / "nrrd", tmp_path, "nrrd", corpus / "ct")
    assert both_formats(corpus / "nrrd", tmp_path, "nii", tmp_path / "ct") == ref


def test_liver_seg_boxes_match_an_independent_reading(tmp_path):
    from pydicom.data import get_testdata_file
    from scipy import ndimage
    src = Path(get_testdata_file("liver.dcm"))
    shutil.copy(src, tmp_path / "liver.dcm")
    s, errors = run(tmp_path / "liver.dcm", tmp_path / "out")
    assert not errors and s["classes"] == ["Liver"]
    ds = pydicom.dcmread(src)
    frames = ds.pixel_array                                      # (frames, rows, cols)
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2])
         for f in ds.PerFrameFunctionalGroupsSequence]
    H, W = frames.shape[1:]
    expected = {}
    for k, n in enumerate(np.argsort(z)):                        # slices in position order
        comp, count = ndimage.label(frames[n] != 0, structure=np.ones((3, 3)))
        rows = []
        for sl in ndimage.find_objects(comp):
            r0, r1, c0, c1 = sl[0].start, sl[0].stop - 1, sl[1].start, sl[1].stop - 1
            rows.append((r0, c0, r1, c1))
        lines = [f"0 {(c0 + c1 + 1) / 2 / W:.6f} {(r0 + r1 + 1) / 2 / H:.6f} "
                 f"{(c1 - c0 + 1) / W:.6f} {(r1 - r0 + 1) / H:.6f}"
                 for r0, c0, r1, c1 in sorted(rows)]
        if lines:
            expected[f"liver_{k + 1}.txt"] = "\n".join(lines) + "\n"
    got = {p.name: p.read_text() for p in (tmp_path / "out/labels/train").glob("*.txt")}
    assert got == expected and len(got) == 3
    info = inspect_file(tmp_path / "liver.dcm")
    assert info["format"] == "dicom-seg" and info["sizes"] == [512, 512, 3]
    assert info["segments"][0]["name"] == "Liver"
    assert info["segments"][0]["voxels"] == int((frames != 0).sum())


def test_inspect_same_table_for_every_format(corpus):
    def table(p):
        return [(s["name"], s["layer"], s["value"], s["voxels"])
                for s in inspect_file(corpus / p)["segments"]]
    assert table("seg/COCA_0007.dcm") == table("nrrd/COCA_0007.seg.nrrd")
    assert table("niigz/COCA_0007.nii.gz") == table("plain/COCA_0007.nrrd")


def test_folder_search_finds_every_format(corpus, tmp_path):
    assert [p.name for p in expand_inputs([corpus / "niigz", corpus / "nii"])] == \
        ["COCA_0007.nii", "COCA_0007.nii.gz"]
    fork = tmp_path / "msd"              # the Decathlon's archives: a ._ fork beside each file
    shutil.copytree(corpus / "niigz", fork)
    (fork / "._COCA_0007.nii.gz").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 80)
    assert [p.name for p in expand_inputs([fork])] == ["COCA_0007.nii.gz"]
    mixed = tmp_path / "mixed"
    shutil.copytree(corpus / "seg", mixed)
    write_ct_series(mixed / "CT_0007", exam_ct(), D, O, exam="0007")
    # a folder holding a DICOM-SEG contributes only segmentation files, not the CT slices
    assert [p.name for p in expand_inputs([mixed])] == ["COCA_0007.dcm"]
    from gpuconv.dataset.grid import expand_ct_inputs
    assert expand_ct_inputs([mixed]) == [mixed / "CT_0007"]
    assert expand_ct_inputs([mixed / "CT_0007" / "slice_0001.dcm"]) == [mixed / "CT_0007"]


def test_overlapping_seg_segments_are_kept_apart(tmp_path):
    lab = exam_labels()
    masks = masks_of(lab)
    masks[2] |= masks[0]                      # 'aorta' also covers all of 'LAD'
    write_seg(tmp_path / "o_1.dcm", masks, NAMES, D, O)
    v = formats.read_volume(tmp_path / "o_1.dcm")
    assert v.header.n_layers == 2
    layer = {s.name: s.layer for s in v.header.segments}
    assert layer == {"LAD": 0, "RCA": 0, "aorta": 1}
    assert np.array_equal(v.layers[1] == 3, masks[2])
    assert np.array_equal(v.layers[0] == 1, masks[0])


# --- bad cases: each fails alone, with one line ---------------------------------------------

def one_failure(labels, out, ct=None):
    s, errors = run(labels, out, ct)
    assert s["failed"] == 1 and len(errors) == 1, errors
    reason = errors[0][1]
    assert "\n" not in reason
    return reason


def test_two_series_in_one_folder(corpus, tmp_path):
    write_ct_series(tmp_path / "ct/CT_0007", exam_ct(), D, O, exam="0007")
    write_ct_series(tmp_path / "ct/CT_0007", exam_ct(), D, O, exam="0007", uid_seed="other",
                    names="other_{n:04d}.dcm")
    assert "2 series in one folder" in one_failure(corpus / "nrrd", tmp_path / "o",
                                                   tmp_path / "ct")


def test_missing_slice(corpus, tmp_path):
    write_ct_series(tmp_path / "ct/CT_0007", exam_ct(), D, O, exam="0007")
    (tmp_path / "ct/CT_0007/slice_0004.dcm").unlink()
    assert "missing slice" in one_failure(corpus / "nrrd", tmp_path / "o", tmp_path / "ct")


def test_duplicate_and_uneven_slices(tmp_path):
    write_ct_series(tmp_path / "dup", exam_ct(), D, O)
    shutil.copy(tmp_path / "dup/slice_0002.dcm", tmp_path / "dup/copy.dcm")
    with pytest.raises(InputError, match="duplicate slice"):
        formats.read_ct_header(tmp_path / "dup")
    d = D.copy()
    write_ct_series(tmp_path / "uneven", exam_ct(), d, O)
    f = tmp_path / "uneven/slice_0003.dcm"
    ds = pydicom.dcmread(f)
    ds.ImagePositionPatient = [16.8, 14.0, -193.5]            # 1.5 mm off
    ds.save_as(f)
    with pytest.raises(InputError, match="uneven slice spacing"):
        formats.read_ct_header(tmp_path / "uneven")


def test_grid_mismatch(corpus, tmp_path):
    d = np.diag([-0.8, -0.7, 3.0])
    write_ct_series(tmp_path / "ct/CT_0007", exam_ct(), d, O, exam="0007")
    reason = one_failure(corpus / "nrrd", tmp_path / "o", tmp_path / "ct")
    assert "grid mismatch" in reason and "spacing" in reason


def test_float_nifti_label(tmp_path):
    lab = exam_labels().astype(np.float32)
    (tmp_path / "ok").mkdir()
    write_nifti(tmp_path / "ok/0001.nii.gz", lab, D, O)       # whole numbers: accepted
    v = formats.read_volume(tmp_path / "ok/0001.nii.gz")
    assert v.layers.dtype == np.uint16 and np.array_equal(v.layers[0], exam_labels())
    lab[3, 3, 3] = 0.5
    (tmp_path / "bad").mkdir()
    write_nifti(tmp_path / "bad/0001.nii.gz", lab, D, O)
    assert "not a whole number" in one_failure(tmp_path / "bad", tmp_path / "o")


def test_seg_whose_referenced_grid_is_absent(corpus, tmp_path):
    reason = one_failure(corpus / "segsparse", tmp_path / "o")
    assert "referenced grid is absent" in reason and "--images" in reason


def test_not_a_seg_and_compressed_pixels(tmp_path):
    write_ct_series(tmp_path / "ct", exam_ct()[:, :, :1], D, O)
    with pytest.raises(InputError, match="must be a Segmentation"):
        formats.read_header(tmp_path / "ct/slice_0001.dcm")
    from pydicom.data import get_testdata_file
    from gpuconv.io.dicom_series import pixels
    ds = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    try:
        pixels(ds, "JPEG2000.dcm")
    except InputError as exc:
        assert "gpuconv[dicom-jpeg]" in str(exc) and "\n" not in str(exc)


# --- more CT series cases: enhanced multi-frame, RLE, gantry tilt -----------------------------

def ct_case(tmp_path, d=D, o=O):
    """Labels and the NRRD CT of the synthetic exam on grid (d, o): the reference outputs."""
    lab, hu = exam_labels(), exam_ct()
    (tmp_path / "labels").mkdir()
    (tmp_path / "ct_nrrd").mkdir()
    segs_nrrd(tmp_path / "labels/COCA_0007.seg.nrrd", lab, d, o)
    write_nrrd(tmp_path / "ct_nrrd/0007.nrrd", hu, directions=d, origin=o)
    return hu, both_formats(tmp_path / "labels", tmp_path, "ref", tmp_path / "ct_nrrd")


def test_enhanced_multiframe_ct(tmp_path):
    from gpuconv.io.dicom_write import write_enhanced_ct
    hu, ref = ct_case(tmp_path)
    (tmp_path / "ect/CT_0007").mkdir(parents=True)
    write_enhanced_ct(tmp_path / "ect/CT_0007/ct.dcm", hu, D, O, exam="0007",
                      frame_order=np.random.default_rng(5).permutation(SHAPE[2]))
    assert both_formats(tmp_path / "labels", tmp_path, "ect", tmp_path / "ect") == ref


def test_rle_compressed_series_is_read(tmp_path):
    from pydicom.uid import RLELossless
    hu, ref = ct_case(tmp_path)
    for p in write_ct_series(tmp_path / "rle/CT_0007", hu, D, O, exam="0007"):
        ds = pydicom.dcmread(p)
        ds.compress(RLELossless)
        ds.save_as(p)
    assert str(pydicom.dcmread(p).file_meta.TransferSyntaxUID) == RLELossless
    assert both_formats(tmp_path / "labels", tmp_path, "rle", tmp_path / "rle") == ref


def test_gantry_tilt_is_a_sheared_grid(tmp_path):
    tilted = np.array([[-0.7, 0.0, 0.0], [0.0, -0.7, 0.0], [0.0, 0.5, 3.0]])  # step off normal
    hu, ref = ct_case(tmp_path, tilted, O)
    write_ct_series(tmp_path / "tilt/CT_0007", hu, tilted, O, exam="0007",
                    file_order=np.random.default_rng(2).permutation(SHAPE[2]))
    assert both_formats(tmp_path / "labels", tmp_path, "tilt", tmp_path / "tilt") == ref
    h = formats.read_ct_header(tmp_path / "tilt/CT_0007")
    assert h.directions.tolist() == tilted.tolist()
    # a label on the untilted grid does not match it: one line
    (tmp_path / "straight").mkdir()
    segs_nrrd(tmp_path / "straight/COCA_0007.seg.nrrd", exam_labels())
    reason = one_failure(tmp_path / "straight", tmp_path / "o", tmp_path / "tilt")
    assert "grid mismatch" in reason


# --- NIfTI affine choice, shapes, missing extras ------------------------------------------

def test_nifti_sform_preferred_then_qform(tmp_path):
    lab = exam_labels()
    aff_lps = np.eye(4)
    aff_lps[:3, :3], aff_lps[:3, 3] = D.T, O
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff_lps
    other = ras.copy()
    other[:3, 3] += 10.0
    img = nib.Nifti1Image(lab, None)
    img.set_sform(ras, code=2)
    img.set_qform(other, code=1)
    nib.save(img, tmp_path / "s.nii.gz")
    h = formats.read_header(tmp_path / "s.nii.gz")
    assert h.fields["affine"] == "sform" and h.origin.tolist() == O.tolist()
    img.set_sform(ras, code=0)
    nib.save(img, tmp_path / "q.nii.gz")
    h = formats.read_header(tmp_path / "q.nii.gz")
    assert h.fields["affine"] == "qform" and np.allclose(h.origin, O + [-10, -10, 10])
    assert h.directions.tolist() == D.tolist()


def test_nifti_shapes(tmp_path):
    lab = exam_labels()
    nib.save(nib.Nifti1Image(lab[..., None], np.eye(4)), tmp_path / "a4.nii")
    assert formats.read_volume(tmp_path / "a4.nii").layers.shape == (1, *SHAPE)
    nib.save(nib.Nifti1Image(np.stack([lab, lab], -1), np.eye(4)), tmp_path / "b4.nii")
    with pytest.raises(InputError, match="must be 3D"):
        formats.read_header(tmp_path / "b4.nii")


def test_missing_extras_say_which(monkeypatch, corpus):
    import sys
    monkeypatch.setitem(sys.modules, "nibabel", None)
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(InputError, match=r"pip install 'gpuconv\[nifti\]'"):
        formats.read_header(corpus / "niigz/COCA_0007.nii.gz")
    with pytest.raises(InputError, match=r"pip install 'gpuconv\[dicom\]'"):
        formats.read_header(corpus / "seg/COCA_0007.dcm")


# --- worker processes, and the synthetic corpus in other formats ----------------------------

def test_overlapping_seg_in_worker_processes_equals_layered_seg_nrrd(tmp_path):
    lab = exam_labels()
    masks = masks_of(lab)
    masks[2] |= masks[0]
    (tmp_path / "dcm").mkdir()
    (tmp_path / "nrrd").mkdir()
    write_seg(tmp_path / "dcm/o_1.dcm", masks, NAMES, D, O)
    write_seg(tmp_path / "dcm/o_2.dcm", masks_of(lab), NAMES, D, O)
    layered = np.zeros((2, *SHAPE), np.uint8)
    layered[0][masks[0]] = 1
    layered[0][masks[1]] = 2
    layered[1][masks[2]] = 3
    segs = [{"name": "LAD", "label_value": 1, "layer": 0}, {"name": "RCA", "label_value": 2,
            "layer": 0}, {"name": "aorta", "label_value": 3, "layer": 1}]
    write_nrrd(tmp_path / "nrrd/o_1.seg.nrrd", layered, directions=D, origin=O,
               extra=slicer_segment_fields(segs, SHAPE))
    segs_nrrd(tmp_path / "nrrd/o_2.seg.nrrd", lab)
    outs = {}
    for name, pool in (("dcm", "process"), ("nrrd", "thread")):
        s = gpuconv.convert([str(tmp_path / name)], str(tmp_path / f"out-{name}"),
                            instances=True, workers=2, pool=pool, progress=False)
        assert s["files"] == 2 and s["failed"] == 0, s["failures"]
        outs[name] = outputs(tmp_path / f"out-{name}")
    assert outs["dcm"] == outs["nrrd"]


def test_synthetic_corpus_as_seg_and_dicom_ct_equals_nrrd(tmp_path):
    from gpuconv.dataset.synth import CLASS_NAMES, synth_corpus
    from gpuconv.io.corpus_formats import rewrite_corpus, rewrite_cts
    outs = {}
    for fmt, ct_fmt in (("nrrd", "nrrd"), ("dicom-seg", "dicom"), ("nifti", "nifti")):
        c = tmp_path / fmt
        rewrite_corpus(synth_corpus(c, n=2, shape=(64, 48, 6), seed=3, ct=True), fmt,
                       CLASS_NAMES)
        rewrite_cts(c / "ct", ct_fmt)
        labels = c / "labels" if fmt == "nifti" else c
        kw = {"classes": str(c / "labels/classes.txt")} if fmt == "nifti" else {}
        s = gpuconv.convert([str(labels)], str(tmp_path / f"out-{fmt}"), images=[str(c / "ct")],
                            split_csv=str(c / "split.csv"), workers=1, pool="thread",
                            progress=False, **kw)
        assert s["files"] == 2 and s["failed"] == 0, s["failures"]
        outs[fmt] = outputs(tmp_path / f"out-{fmt}")
    assert outs["dicom-seg"] == outs["nrrd"] == outs["nifti"]
    assert any(k.startswith("images/") for k in outs["nrrd"])


def test_series_folder_exam_id_from_its_parent(corpus, tmp_path):
    """COCA's layout: patient/<id>/<series description>/IM-*.dcm."""
    from gpuconv.dataset.grid import match_ct
    hu, ref = ct_case(tmp_path)
    write_ct_series(tmp_path / "patient/0007/Pro_Gated_CS_3.0_I30f_3_70%", hu, D, O, exam="0007")
    write_ct_series(tmp_path / "patient/0008/Pro_Gated_CS_3.0_I30f_3_70%", hu, D, O, exam="0008")
    assert match_ct([tmp_path / "patient"], [tmp_path / "labels/COCA_0007.seg.nrrd"]) == \
        {"0007": tmp_path / "patient/0007/Pro_Gated_CS_3.0_I30f_3_70%"}
    assert both_formats(tmp_path / "labels", tmp_path, "coca", tmp_path / "patient") == ref


def test_nnunet_names_match(corpus, tmp_path):
    """nnU-Net raw data: labelsTr/la_0007.nii.gz pairs with imagesTr/la_0007_0000.nii.gz."""
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "imagesTr").mkdir()
    write_nifti(tmp_path / "labelsTr/la_0007.nii.gz", exam_labels(), D, O)
    write_nifti(tmp_path / "imagesTr/la_0007_0000.nii.gz", exam_ct(), D, O)
    write_nifti(tmp_path / "imagesTr/la_0008_0000.nii.gz", exam_ct(), D, O)
    ref = both_formats(corpus / "plain", tmp_path, "plain", corpus / "ct")
    got = both_formats(tmp_path / "labelsTr", tmp_path, "nnunet", tmp_path / "imagesTr")
    assert got == ref


def test_agree_across_formats(corpus):
    """agree: a NIfTI (an nnU-Net prediction) or a DICOM-SEG against NRRD, Dice 1 everywhere."""
    from gpuconv.analysis.agreement_files import agree_files, pair_folders
    r = agree_files(corpus / "nrrd/COCA_0007.seg.nrrd", corpus / "seg/COCA_0007.dcm")
    assert r.error is None and [c["dice"] for c in r.classes] == [1.0] * 3
    r = agree_files(corpus / "plain/COCA_0007.nrrd", corpus / "niigz/COCA_0007.nii.gz")
    assert r.error is None and [c["dice"] for c in r.classes] == [1.0] * 3
    pairs, only_a, only_b = pair_folders(corpus / "plain", corpus / "niigz")
    assert [e for e, _, _ in pairs] == ["0007"] and not only_a and not only_b


def test_calcium_scores_of_a_sparse_seg_equal_the_nrrd_ones(corpus):
    """stats --ct places a DICOM-SEG on its CT as convert does."""
    from gpuconv.analysis.calcium import exam_calcium
    from gpuconv.dataset.classes import ClassMap
    cmap = ClassMap(list(NAMES))
    ct = corpus / "ct/CT_0007.nrrd"
    a = exam_calcium(corpus / "nrrd/COCA_0007.seg.nrrd", ct, cmap, 3)
    b = exam_calcium(corpus / "segsparse/COCA_0007.dcm", ct, cmap, 3)
    assert a.classes == b.classes and any(c.agatston > 0 for c in a.classes.values())


@pytest.mark.parametrize("labels", [{"0": "background", "1": "LAD", "2": "RCA", "3": "aorta"},
                                    {"background": 0, "LAD": 1, "RCA": 2, "aorta": 3}])
def test_msd_and_nnunet_dataset_json_name_plain_maps(corpus, tmp_path, labels):
    import json
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "x", "labels": labels}))
    s, errors = run(corpus / "niigz", tmp_path / "o", classes=str(tmp_path / "dataset.json"))
    assert not errors and s["classes"] == NAMES
    (tmp_path / "bad.json").write_text(json.dumps({"labels": {"background": 0, "r": [1, 2]}}))
    from gpuconv.dataset.classes import load_class_file
    with pytest.raises(InputError, match="region-based"):
        load_class_file(tmp_path / "bad.json")


def test_cli_synth_in_other_formats_converts(tmp_path):
    """gpuconv synth --format dicom-seg --ct-format dicom, then convert and inspect: the CLI."""
    import json
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "gpuconv", *map(str, args)],
                              capture_output=True, text=True)
    c = tmp_path / "c"
    r = cli("synth", c, "-n", 2, "--size", "32x24x4", "--format", "dicom-seg",
            "--ct-format", "dicom")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in c.iterdir()) == ["COCA_0001.dcm", "COCA_0002.dcm", "ct",
                                                     "split.csv"]
    assert sorted(p.name for p in (c / "ct").iterdir()) == ["CT_0001", "CT_0002"]
    r = cli("convert", c, "--images", c / "ct", "--out", tmp_path / "o", "--no-progress")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "o/summary.json").read_text())
    assert s["files"] == 2 and s["images"] == 8 and s["classes"][0] == "LM"
    r = cli("inspect", c / "COCA_0001.dcm", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["format"] == "dicom-seg"
    r = cli("synth", tmp_path / "x", "--format", "analyze")
    assert r.returncode == 2 and "--format" in r.stderr and "\n" not in r.stderr.strip()
