"""Bad input: one clear line per file, the rest converts, nothing partial, non-zero exit."""

import gzip
import json
import os
import resource
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import nrrd
import numpy as np
import pytest

import gpuconv
from gpuconv.errors import InputError
from gpuconv.io.nrrd_read import read_header, read_volume, reread_input
from conftest import write_seg


def _good(tmp_path, n):
    vol = np.zeros((4, 4, 2), np.uint8)
    vol[1, 1, 0] = 1
    return write_seg(tmp_path / f"good_{n}.seg.nrrd", vol, [("l", 0, 1)])


def _bad_files(tmp_path):
    bad = {}
    # truncated gzip
    vol = np.zeros((64, 64, 8), np.uint8)
    vol[::3, ::5, :] = 1
    p = write_seg(tmp_path / "trunc_101.seg.nrrd", vol, [("l", 0, 1)])
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) - 40])
    bad["trunc_101.seg.nrrd"] = "truncated"
    # garbage header
    p = tmp_path / "garbage_102.nrrd"
    p.write_bytes(b"NRRD0004\ntype: unsigned char\nsizes: 2 two 2\ndimension: 3\n"
                  b"encoding: raw\n\n" + bytes(8))
    bad["garbage_102.nrrd"] = "'sizes' is not an integer (two)"
    # float data
    nrrd.write(str(tmp_path / "float_103.nrrd"), np.zeros((2, 2, 2), np.float32))
    bad["float_103.nrrd"] = "must be integer"
    # wrong dimension
    nrrd.write(str(tmp_path / "flat_104.nrrd"), np.zeros((2, 2), np.uint8))
    bad["flat_104.nrrd"] = "wrong dimension"
    # label/segment mismatch: value 3 in the data, no segment declares it
    vol = np.zeros((3, 3, 1), np.uint8)
    vol[0, 0, 0] = 3
    write_seg(tmp_path / "mismatch_105.seg.nrrd", vol, [("l", 0, 1)])
    bad["mismatch_105.seg.nrrd"] = "label/segment mismatch"
    # not NRRD at all
    (tmp_path / "junk_106.nrrd").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    bad["junk_106.nrrd"] = "not an NRRD file"
    return bad


def test_each_bad_file_fails_alone_with_its_reason(tmp_path):
    goods = [_good(tmp_path, n) for n in (1, 2)]
    bad = _bad_files(tmp_path)
    seen = []
    s = gpuconv.convert([str(tmp_path / "*.nrrd")], tmp_path / "out", backend="cpu",
                        val_fraction=0.0, progress=False, on_error=lambda p, r: seen.append((p, r)))
    assert s["files"] == len(goods)
    assert s["failed"] == len(bad)
    reasons = {f["file"].rsplit("/", 1)[1]: f["reason"] for f in s["failures"]}
    for name, words in bad.items():
        assert words in reasons[name], (name, reasons[name])
        assert "\n" not in reasons[name]
    assert len(seen) == len(bad)
    labels = sorted(p.name for p in (tmp_path / "out/labels").rglob("*"))
    assert labels == ["1_1.txt", "2_1.txt", "train", "val"]   # nothing from a bad file
    assert not list((tmp_path / "out").rglob("*.tmp*"))         # no temporary leftovers
    assert json.loads((tmp_path / "out/summary.json").read_text())["failed"] == len(bad)


def test_cli_exit_status_and_one_line_errors(tmp_path):
    _good(tmp_path, 1)
    _bad_files(tmp_path)
    r = subprocess.run([sys.executable, "-m", "gpuconv", "convert", str(tmp_path / "*.nrrd"),
                        "--out", str(tmp_path / "out"), "--backend", "cpu", "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 6
    assert any("trunc_101.seg.nrrd: " in ln and "truncated" in ln for ln in errors)
    assert "1 file(s) converted, 6 failed" in r.stdout


def test_duplicate_exam_ids_stop_before_anything_is_written(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _good(tmp_path / "a", 7)
    _good(tmp_path / "b", 7)
    with pytest.raises(InputError, match="duplicate exam ids: '7'"):
        gpuconv.convert([str(tmp_path / "a"), str(tmp_path / "b")], tmp_path / "out",
                        backend="cpu", progress=False)
    assert not (tmp_path / "out").exists()
    r = subprocess.run([sys.executable, "-m", "gpuconv", "convert", str(tmp_path / "a"),
                        str(tmp_path / "b"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "duplicate exam ids" in r.stderr


def test_exams_missing_from_the_split_csv_are_reported(tmp_path):
    for n in (1, 2, 3):
        _good(tmp_path, n)
    csv = tmp_path / "split.csv"
    csv.write_text("exam,split\n1,train\n3,val\n")
    s = gpuconv.convert([str(tmp_path)], tmp_path / "out", split_csv=csv, backend="cpu",
                        progress=False)
    assert s["files"] == 2 and s["failed"] == 1
    assert "exam '2' is missing from the split CSV" in s["failures"][0]["reason"]
    assert not list((tmp_path / "out/labels").rglob("2_*.txt"))


def test_mixing_plain_and_slicer_files_needs_classes(tmp_path):
    _good(tmp_path, 1)
    nrrd.write(str(tmp_path / "plain_2.nrrd"), np.ones((2, 2, 1), np.uint8))
    with pytest.raises(InputError, match="--classes"):
        gpuconv.convert([str(tmp_path / "*.nrrd")], tmp_path / "out", backend="cpu",
                        progress=False)


# --------------------------------------------------------------------------------------------
# Issue 14: hostile headers and payloads.  Every file is built here, a few hundred bytes each;
# where time or memory is the point, the read runs in a subprocess under resource limits.


HDR = ("NRRD0004\ntype: unsigned char\ndimension: 3\nsizes: 4 4 2\nencoding: raw\n"
       "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n")
SEG = "Segment0_Name:=a\nSegment0_LabelValue:=1\nSegment0_Layer:=0\n"


def _nrrd(path, header: str, body: bytes = bytes(32)) -> Path:
    """An attached-header NRRD from header text (without its blank line) and a payload."""
    path = Path(path)
    path.write_bytes(header.encode() + b"\n" + body)
    return path


def _reason(fn, path) -> str:
    with pytest.raises(InputError) as ei:
        fn(path)
    assert ei.value.path == str(path)
    assert "\n" not in str(ei.value)
    return ei.value.reason


def _run_limited(code: str, *, mem_mb: int = 1024, seconds: int = 30):
    """Run ``code`` in a fresh Python under RLIMIT_AS and RLIMIT_CPU; returns (rc, out, err)."""
    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=seconds + 10, preexec_fn=limits)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("field, value, reason", [
    ("Segment0_LabelValue", "abc", "Segment0_LabelValue is not an integer (abc)"),
    ("Segment0_LabelValue", "", "Segment0_LabelValue is not an integer (empty)"),
    ("Segment0_Layer", "x1", "Segment0_Layer is not an integer (x1)"),
    ("Segment0_Layer", "", "Segment0_Layer is not an integer (empty)"),
    ("Segment0_Extent", "0 1 0 1 0 z", "Segment0_Extent is not an integer (z)"),
    ("Segment0_Extent", "0 1", "Segment0_Extent must be 6 integers (0 1)"),
    ("Segmentation_ReferenceImageExtentOffset", "a b c",
     "Segmentation_ReferenceImageExtentOffset is not an integer (a)"),
    ("Segmentation_ReferenceImageExtentOffset", "1.5 0 0",
     "Segmentation_ReferenceImageExtentOffset is not an integer (1.5)"),
])
def test_non_integer_segment_fields_are_one_error_naming_the_field(tmp_path, field, value,
                                                                     reason):
    seg = "".join(ln for ln in SEG.splitlines(True) if not ln.startswith(field + ":="))
    p = _nrrd(tmp_path / "f.seg.nrrd", HDR + seg + f"{field}:={value}\n")
    assert _reason(read_header, p) == reason
    assert _reason(read_volume, p) == reason


def test_non_integer_segment_field_fails_alone_in_convert_stats_inspect(tmp_path):
    good = _good(tmp_path, 1)
    bad = _nrrd(tmp_path / "bad_2.seg.nrrd", HDR + SEG.replace(":=1\nSegment0_Layer", ":=abc\n"
                                                               "Segment0_Layer"))
    line = f"error: {bad}: Segment0_LabelValue is not an integer (abc)"
    for args, rc in ((["convert", str(good), str(bad), "--out", str(tmp_path / "o"),
                       "--backend", "cpu", "--no-progress"], 1),
                     (["stats", str(good), str(bad), "--out", str(tmp_path / "s"), "--no-plot",
                       "--backend", "cpu"], 1),
                     (["inspect", str(bad)], 1)):
        r = subprocess.run([sys.executable, "-m", "gpuconv", *args], capture_output=True,
                           text=True)
        assert r.returncode == rc, (args, r.stderr)
        assert r.stderr.splitlines() == [line], (args, r.stderr)
    assert (tmp_path / "o/labels/train/1_1.txt").exists() or \
        (tmp_path / "o/labels/val/1_1.txt").exists()


@pytest.mark.parametrize("header, reason", [
    ("NRRD0004\ntype: unsigned char\ndimension: 4\nsizes: 1 4 4 2\n"
     "kinds: list domain domain domain\nspacings: 1 1\nencoding: raw\n",
     "'spacings' has 2 entries for dimension 4"),
    ("NRRD0004\ntype: unsigned char\ndimension: 18446744073709551616\nsizes: 4 4 2\n"
     "encoding: raw\n", "wrong dimension: expected a 3D label map or a 4D layered "
     "segmentation, got dimension 18446744073709551616"),
    ("NRRD0004\ntype: unsigned char\ndimension: 3\nsizes: 2147483648 2147483648 2147483648\n"
     "encoding: raw\n", "sizes 2147483648 2147483648 2147483648 declare "
     "9903520314283042199192993792 bytes of data, above the 8589934592 byte limit "
     "(GPUCONV_MAX_VOLUME_BYTES)"),
    ("NRRD0004\ntype: unsigned char\ndimension: 3\nsizes: 4 4\nencoding: raw\n",
     "bad 'sizes' field 4 4 for dimension 3"),
    ("NRRD0004\ntype: unsigned char\ndimension: 3\nsizes: 4 4 0\nencoding: raw\n",
     "bad 'sizes' field 4 4 0 for dimension 3"),
    (HDR + "byte skip: -2\n", "'byte skip' -2 is out of range (>= -1)"),
    (HDR.replace("(1,0,0) (0,1,0)", "(1,0,0) (1,0,0)"),
     "'space directions' are singular (a zero or degenerate voxel axis)"),
    (HDR.replace("(1,0,0)", "(inf,0,0)"), "'space directions' hold an infinite number"),
    (HDR.replace("(1,0,0)", "(1e300,0,0)"),
     "'space directions' give a voxel axis longer than 1e+09 mm"),
    (HDR + "encoding: hex\n".replace("encoding", "content"), None),
    (HDR.replace("encoding: raw", "encoding: hex"),
     "unsupported NRRD encoding 'hex' (use raw, gzip or bzip2)"),
])
def test_header_numbers_are_checked_before_anything_is_allocated(tmp_path, header, reason):
    p = _nrrd(tmp_path / "h.nrrd", header)
    if reason is None:
        read_volume(p)
        return
    assert _reason(read_header, p) == reason


def test_truncated_message_counts_bytes_exactly(tmp_path):
    p = _nrrd(tmp_path / "t.nrrd", "NRRD0004\ntype: unsigned short\nendian: little\n"
              "dimension: 3\nsizes: 1000 1000 3\nencoding: raw\n", bytes(10))
    assert _reason(read_volume, p) == "data is truncated: 10 of 6000000 bytes"
    z = gzip.compress(bytes(5000))
    p = _nrrd(tmp_path / "g.nrrd", HDR.replace("raw", "gzip").replace("4 4 2", "100 100 1"),
              z[:-30])
    assert _reason(read_volume, p).startswith("gzip data is truncated: got ")


def test_line_skip_beyond_the_data_is_an_error_at_once(tmp_path):
    p = _nrrd(tmp_path / "l.nrrd", HDR + "line skip: 1000000000000000000\n")
    assert _reason(read_volume, p) == ("'line skip' 1000000000000000000 passes the end of the "
                                       "data (32 bytes)")
    p = _nrrd(tmp_path / "l2.nrrd", HDR + "line skip: 3\n", b"a\nb\n" + bytes(32))
    assert _reason(read_volume, p) == "'line skip' 3 passes the end of the data"


def test_data_file_that_is_a_device_a_fifo_or_holds_nul_is_refused(tmp_path):
    detached = HDR.replace("encoding: raw\n", "encoding: raw\ndata file: {}\n")
    p = tmp_path / "z.nhdr"
    p.write_text(detached.format("/dev/zero"))
    assert _reason(read_header, p) == "data file zero is a device, not a regular file"
    assert _reason(read_volume, p) == "data file zero is a device, not a regular file"
    os.mkfifo(tmp_path / "pipe")
    p.write_text(detached.format("pipe"))
    code = f"""
        from gpuconv.io.nrrd_read import read_volume
        from gpuconv.errors import InputError
        try:
            read_volume({str(p)!r})
        except InputError as e:
            print(e.reason)
    """
    rc, out, _ = _run_limited(code, seconds=20)   # a FIFO with no writer must not block
    assert rc == 0 and out.strip() == "data file pipe is a FIFO, not a regular file"
    p.write_bytes(detached.format("a\x00b").encode())
    assert _reason(read_header, p) == "'data file' holds a NUL byte"


def test_input_that_is_a_fifo_folder_or_dangling_link_is_refused(tmp_path):
    os.mkfifo(tmp_path / "f.nrrd")
    assert _reason(read_header, tmp_path / "f.nrrd") == "file is a FIFO, not a regular file"
    (tmp_path / "d.seg.nrrd").mkdir()
    assert _reason(read_volume, tmp_path / "d.seg.nrrd") == ("file is a folder, not a regular "
                                                            "file")
    (tmp_path / "l.nrrd").symlink_to(tmp_path / "nowhere")
    assert _reason(read_header, tmp_path / "l.nrrd") == "file is a dangling symbolic link"


def test_explicit_non_regular_inputs_are_errors_not_skipped(tmp_path):
    good = _good(tmp_path, 1)
    os.mkfifo(tmp_path / "f_2.seg.nrrd")
    (tmp_path / "d_3.seg.nrrd").symlink_to(tmp_path / "nowhere")
    (tmp_path / "x_4.seg.nrrd").mkdir()
    named = [tmp_path / n for n in ("f_2.seg.nrrd", "d_3.seg.nrrd", "x_4.seg.nrrd")]
    r = subprocess.run([sys.executable, "-m", "gpuconv", "convert", str(good),
                        *map(str, named), "--out", str(tmp_path / "o"), "--backend", "cpu",
                        "--no-progress"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert sorted(r.stderr.splitlines()) == [
        f"error: {named[1]}: file is a dangling symbolic link",
        f"error: {named[0]}: file is a FIFO, not a regular file",
        f"error: {named[2]}: file is a folder, not a regular file"]
    assert "1 file(s) converted, 3 failed" in r.stdout


def test_newline_in_a_file_name_does_not_split_the_error_line(tmp_path):
    bad = _nrrd(tmp_path / "bad\nname_5.seg.nrrd", HDR + "Segment0_Name:=a\n"
                "Segment0_LabelValue:=x\n")
    r = subprocess.run([sys.executable, "-m", "gpuconv", "convert", str(bad), "--out",
                        str(tmp_path / "o"), "--backend", "cpu", "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"error: {tmp_path}/bad\\nname_5.seg.nrrd: "
                                     "Segment0_LabelValue is not an integer (x)"]
    assert str(InputError("r", "a\nb")) == "a\\nb: r"


def test_header_without_blank_line_is_capped_and_linear(tmp_path):
    p = tmp_path / "noblank.nrrd"
    p.write_bytes(b"NRRD0004\n" + b"a: b\n" * ((4 << 20) // 5))   # 4 MiB of header lines
    code = f"""
        import time
        from gpuconv.io.nrrd_read import read_header, read_volume
        from gpuconv.errors import InputError
        t = time.perf_counter()
        for fn in (read_header, read_volume):
            try:
                fn({str(p)!r})
            except InputError as e:
                print(e.reason)
        print(time.perf_counter() - t)
    """
    rc, out, err = _run_limited(code, seconds=20)
    lines = out.splitlines()
    assert rc == 0, err
    assert lines[:2] == ["header is longer than 1048576 bytes (no blank line ends it within "
                         "the limit)"] * 2
    assert float(lines[2]) < 2.0


def test_gzip_bomb_is_refused_after_the_declared_size(tmp_path):
    """A 256 MiB inflate from a ~260 KB payload, declared as 256 bytes: an error without
    allocating anything near 256 MiB (RLIMIT_AS is 1 GiB; the old decoder needed > 2x)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    payload = b"".join(c.compress(chunk) for _ in range(256)) + c.flush()
    p = _nrrd(tmp_path / "bomb.nrrd", HDR.replace("raw", "gzip").replace("4 4 2", "16 16 1"),
              payload)
    code = f"""
        import resource, time
        from gpuconv.io.nrrd_read import read_volume
        from gpuconv.errors import InputError
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        try:
            read_volume({str(p)!r})
        except InputError as e:
            print(e.reason)
        print(time.perf_counter() - t)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """
    rc, out, err = _run_limited(code, mem_mb=1024, seconds=20)
    assert rc == 0, err
    reason, seconds, grown_mb = out.splitlines()
    assert reason == "gzip data inflates to more than the 256 bytes the header declares"
    assert float(seconds) < 2.0 and int(grown_mb) < 64


def test_bzip2_payload_longer_than_declared_is_an_error(tmp_path):
    import bz2
    p = _nrrd(tmp_path / "b.nrrd", HDR.replace("raw", "bzip2"), bz2.compress(bytes(33)))
    assert _reason(read_volume, p) == ("bzip2 data inflates to more than the 32 bytes the "
                                       "header declares")


def test_crlf_header_reads_as_pynrrd_reads_it(tmp_path):
    vol = np.arange(32, dtype=np.uint8).reshape(4, 4, 2, order="F")
    p = tmp_path / "crlf.nrrd"
    p.write_bytes((HDR + "\n").replace("\n", "\r\n").encode() + vol.tobytes(order="F"))
    ref, _ = nrrd.read(str(p))
    got = read_volume(p)
    assert np.array_equal(got.layers[0], ref)


def test_utf8_segment_names_stay_distinct_classes(tmp_path):
    vol = np.zeros((4, 4, 2), np.uint8)
    vol[0, 0, 0], vol[2, 2, 0], vol[3, 3, 1] = 1, 2, 3
    names = ["左冠", "右冠", "Läsion"]
    seg = "".join(f"Segment{n}_Name:={name}\nSegment{n}_LabelValue:={n + 1}\n"
                  f"Segment{n}_Layer:=0\n" for n, name in enumerate(names))
    p = _nrrd(tmp_path / "u_1.seg.nrrd", HDR + seg, vol.tobytes(order="F"))
    assert [s.name for s in read_header(p).segments] == names
    s = gpuconv.convert([str(p)], tmp_path / "o", backend="cpu", progress=False,
                        val_fraction=0.0)
    assert s["failed"] == 0
    import yaml
    doc = yaml.safe_load((tmp_path / "o/dataset.yaml").read_text(encoding="utf-8"))
    got = doc["names"]
    assert (list(got.values()) if isinstance(got, dict) else got) == names
    r = subprocess.run([sys.executable, "-m", "gpuconv", "vote", str(p), str(p), "-o",
                        str(tmp_path / "v.seg.nrrd")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr                  # the writer keeps them too (UTF-8)
    assert [s.name for s in read_header(tmp_path / "v.seg.nrrd").segments] == names


def test_header_bytes_that_are_not_utf8_are_one_clear_error(tmp_path):
    p = tmp_path / "latin1.seg.nrrd"
    p.write_bytes((HDR + "Segment0_Name:=L").encode() + b"\xe4sion\n# caf\xe9\n\n" + bytes(32))
    assert _reason(read_header, p) == "header line 8 is not UTF-8 text (byte 0xe4 at column 17)"
    p.write_bytes((HDR + "Segment0_Name:=a\n").encode() + b"# caf\xe9 comment\n\n" + bytes(32))
    assert read_header(p).segments[0].name == "a"   # comments may hold any bytes


def test_uint64_full_range_label_values(tmp_path):
    big = 2**64 - 1
    vol = np.zeros((4, 4, 2), np.uint64)
    vol[1, 1, 0] = big
    vol[2:4, 2:4, 1] = 5
    hdr = HDR.replace("unsigned char", "uint64\nendian: little")
    seg = (f"Segment0_Name:=big\nSegment0_LabelValue:={big}\nSegment0_Layer:=0\n"
           "Segment1_Name:=five\nSegment1_LabelValue:=5\nSegment1_Layer:=0\n")
    p = _nrrd(tmp_path / "b_1.seg.nrrd", hdr + seg, vol.tobytes(order="F"))
    assert [s.label_value for s in read_header(p).segments] == [big, 5]
    s = gpuconv.convert([str(p)], tmp_path / "o", backend="cpu", progress=False,
                        val_fraction=0.0)
    assert s["failed"] == 0, s["failures"]
    assert (tmp_path / "o/labels/train/1_1.txt").read_text() == \
        "0 0.375000 0.375000 0.250000 0.250000\n"
    s = gpuconv.convert([str(p)], tmp_path / "op", backend="cpu", progress=False,
                        val_fraction=0.0, fmt="polygons")
    assert s["failed"] == 0, s["failures"]
    assert (tmp_path / "op/labels/train/1_1.txt").read_text().startswith("0 0.375000 0.375000 ")
    neg = _nrrd(tmp_path / "n_2.seg.nrrd", hdr + seg.replace(str(big), "-1"),
                vol.tobytes(order="F"))
    assert _reason(read_header, neg) == ("Segment0_LabelValue -1 is outside the range of uint64 "
                                         "data (0..18446744073709551615)")


def test_header_changed_since_the_prepass_is_not_converted_stale(tmp_path):
    p = _nrrd(tmp_path / "c.seg.nrrd", HDR + SEG)
    first = read_header(p)
    assert reread_input(p, first).header.header_hash == first.header_hash
    _nrrd(p, HDR + SEG.replace("Name:=a", "Name:=b"))
    assert _reason(lambda q: reread_input(q, first), p) == (
        "the file changed after its header was read at the start of the run (its header "
        "differs now); run again to convert it")


def test_dimension_of_a_billion_is_refused_in_bounded_time_and_memory(tmp_path):
    p = _nrrd(tmp_path / "dim.nrrd", "NRRD0004\ntype: unsigned char\ndimension: 1000000000\n"
              "sizes: 4 4 2\nkinds: domain domain domain\nencoding: raw\n")
    code = f"""
        from gpuconv.io.nrrd_read import read_volume
        from gpuconv.errors import InputError
        try:
            read_volume({str(p)!r})
        except InputError as e:
            print(e.reason)
    """
    rc, out, err = _run_limited(code, mem_mb=1024, seconds=10)
    assert rc == 0, err
    assert out.strip().endswith("got dimension 1000000000")


def test_classes_yaml_alias_bomb_is_refused_quickly(tmp_path):
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for prev, name in zip("abcdefgh", "bcdefghi"):
        bomb += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    bomb += "names: *i\n"
    y = tmp_path / "classes.yaml"
    y.write_text(bomb)
    _good(tmp_path, 1)
    r = subprocess.run([sys.executable, "-m", "gpuconv", "convert",
                        str(tmp_path / "good_1.seg.nrrd"), "--out", str(tmp_path / "o"),
                        "--classes", str(y), "--backend", "cpu", "--no-progress"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"error: {y}: classes file refused: YAML expands to more "
                                     "than 100000 nodes (aliases)"]
    from gpuconv.io.safe_yaml import load_yaml_text
    with pytest.raises(InputError, match="more than 100 YAML aliases"):
        load_yaml_text("a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]\n")
    with pytest.raises(InputError, match="larger than 1048576 bytes"):
        load_yaml_text("x" * (1 << 20) + "y")
    assert load_yaml_text("names: [a, Läsion]\n") == {"names": ["a", "Läsion"]}


def test_inspect_path_with_brackets_is_not_markup(tmp_path):
    d = tmp_path / "[bold]x["
    d.mkdir()
    p = _nrrd(d / "a[red]b.seg.nrrd", HDR + SEG)
    r = subprocess.run([sys.executable, "-m", "gpuconv", "inspect", str(p)], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "COLUMNS": "300"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"{p}  slicer-segmentation"


def test_stats_json_is_strict_json_and_out_must_be_usable(tmp_path):
    good = _good(tmp_path, 1)
    r = subprocess.run([sys.executable, "-m", "gpuconv", "stats", str(good), "--out",
                        str(tmp_path / "s"), "--no-plot", "--json", "--backend", "cpu"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr

    def no_constants(name):
        raise AssertionError(f"{name} in stats --json")
    doc = json.loads(r.stdout, parse_constant=no_constants)
    assert doc["all"]["sd_volume_mm3"] is None       # one instance: no SD -> null, not NaN
    from gpuconv.analysis.stats import ClassRow, Table1, table1_json
    inf_row = ClassRow(0, "a", 1, 1, 1, *([float("inf")] * 5), 1.0, 1.0, 100.0, 100.0)
    assert table1_json(Table1([inf_row], inf_row, 1, 1))["all"]["mean_volume_mm3"] is None

    (tmp_path / "file").write_text("")
    for out, line in ((tmp_path / "file", f"error: {tmp_path / 'file'}: --out is not a folder"),
                      (tmp_path / "file/sub", f"error: {tmp_path / 'file/sub'}: cannot create "
                       "the --out folder (Not a directory)")):
        r = subprocess.run([sys.executable, "-m", "gpuconv", "stats", str(good), "--out",
                            str(out), "--no-plot", "--backend", "cpu"], capture_output=True,
                           text=True, timeout=120)
        assert (r.returncode, r.stderr.splitlines()) == (2, [line])


def test_stats_write_failure_is_one_line_exit_2(tmp_path):
    """A write that fails part-way (RLIMIT_FSIZE stands in for a full disk): one line."""
    import signal
    good = _good(tmp_path, 1)

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
    r = subprocess.run([sys.executable, "-m", "gpuconv", "stats", str(good), "--out",
                        str(tmp_path / "s"), "--no-plot", "--backend", "cpu"],
                       capture_output=True, text=True, timeout=120, preexec_fn=small_files)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot write (File too " \
        "large)" in lines[0], r.stderr


def _preview_dataset(root):
    from PIL import Image
    (root / "images/train").mkdir(parents=True)
    (root / "labels/train").mkdir(parents=True)
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(root / "images/train/e_1.png")
    (root / "labels/train/e_1.txt").write_text("0 0.312500 0.300000 0.125000 0.200000\n")
    return root


@pytest.mark.parametrize("case, line", [
    ("scale0", "error: --scale must be a whole number from 1 to 64, got 0"),
    ("scalehuge", "error: --scale must be a whole number from 1 to 64, got 100000"),
    ("outdir", "error: {d}/o: --output is a folder; give a file name ending in .png"),
    ("nan", "error: {d}/labels/train/e_1.txt: line 1 holds a NaN or infinite number"),
    ("inf", "error: {d}/labels/train/e_1.txt: line 1 holds a NaN or infinite number"),
    ("latin1", "error: {d}/labels/train/e_1.txt: label file is not UTF-8 text (byte 0xe9 at "
               "offset 2)"),
    ("png", "error: {d}/images/train/e_1.png: cannot read image ("),
])
def test_preview_bad_input_is_one_line(tmp_path, case, line):
    d = _preview_dataset(tmp_path / "ds")
    args = ["preview", str(d), "--exam", "e", "--slice", "1"]
    lab = d / "labels/train/e_1.txt"
    if case == "scale0":
        args += ["--scale", "0"]
    elif case == "scalehuge":
        args += ["--scale", "100000"]
    elif case == "outdir":
        (d / "o").mkdir()
        args += ["-o", str(d / "o")]
    elif case == "nan":
        lab.write_text("0 nan 0.3 0.1 0.2\n")
    elif case == "inf":
        lab.write_text("0 0.5 0.3 inf 0.2\n")
    elif case == "latin1":
        lab.write_bytes(b"0 \xe9\n")
    elif case == "png":
        (d / "images/train/e_1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    r = subprocess.run([sys.executable, "-m", "gpuconv", *args], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(line.format(d=d)), r.stderr


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_convert_refuses_a_header_changed_after_the_prepass(tmp_path, monkeypatch, pool):
    """The pre-pass reads headers, then the file is rewritten before its conversion: that exam
    fails with one line (it was planned from the old header); nothing stale is written."""
    from gpuconv.dataset import plan as plan_mod
    p = _nrrd(tmp_path / "c_1.seg.nrrd", HDR + SEG, bytes([1]) + bytes(31))
    real = plan_mod.plan_run

    def plan_then_rewrite(*a, **kw):
        plan = real(*a, **kw)
        _nrrd(p, HDR + SEG.replace("Name:=a", "Name:=b"), bytes([1]) + bytes(31))
        return plan
    monkeypatch.setattr(plan_mod, "plan_run", plan_then_rewrite)
    import gpuconv.conversion.pipeline as pipe
    if hasattr(pipe, "plan_run"):
        monkeypatch.setattr(pipe, "plan_run", plan_then_rewrite)
    s = gpuconv.convert([str(p)], tmp_path / "o", backend="cpu", progress=False,
                        val_fraction=0.0, pool=pool, workers=2)
    assert s["failed"] == 1 and s["pool"] == pool
    assert s["failures"][0]["reason"].startswith("the file changed after its header was read")
    assert not list((tmp_path / "o/labels").rglob("*.txt"))


def test_ct_volumes_are_read_with_the_same_limits(tmp_path):
    """--images CTs go through the bounded reader too: a FIFO, a gzip bomb, a bad header are
    one InputError each; a good CT reads as pynrrd reads it (float data, big endian)."""
    from gpuconv.dataset.grid import read_ct, read_ct_header
    ct = (np.arange(32, dtype=">i2").reshape(4, 4, 2, order="F") - 1000)
    p = tmp_path / "ct.nrrd"
    nrrd.write(str(p), ct, {"encoding": "gzip", "endian": "big"})
    hdr, data = read_ct(p)
    assert hdr.sizes == (4, 4, 2) and data.dtype == np.int16 and np.array_equal(data, ct)
    assert data.flags.writeable
    f = tmp_path / "f.nrrd"
    nrrd.write(str(f), np.ones((2, 2, 2), np.float32))
    assert read_ct(f)[1].dtype == np.float32
    os.mkfifo(tmp_path / "fifo.nrrd")
    assert _reason(read_ct_header, tmp_path / "fifo.nrrd") == "file is a FIFO, not a regular file"
    bomb = _nrrd(tmp_path / "bomb.nrrd", HDR.replace("raw", "gzip"), gzip.compress(bytes(1 << 20)))
    assert _reason(read_ct, bomb) == ("gzip data inflates to more than the 32 bytes the header "
                                      "declares")
    flat = _nrrd(tmp_path / "flat.nrrd", "NRRD0004\ntype: short\nendian: little\ndimension: 2\n"
                 "sizes: 4 4\nencoding: raw\n")
    assert _reason(read_ct_header, flat) == "a CT volume must be 3D, got sizes 4 4"


@pytest.mark.parametrize("opt, name, content, line", [
    ("--classes", "c.txt", b"a\n\xe9\n", "{f}: classes file is not UTF-8 text (byte 0xe9 at "
                                         "offset 2)"),
    ("--classes", "c.yaml", b"a: x\n", "{f}: class ids must be integers 0..N-1"),
    ("--split", "s.csv", b"exam,split\n\xe9,train\n", "{f}: split file is not UTF-8 text (byte "
                                                      "0xe9 at offset 11)"),
])
def test_user_text_files_that_are_not_utf8_or_malformed_are_one_line(tmp_path, opt, name,
                                                                       content, line):
    good = _good(tmp_path, 1)
    f = tmp_path / name
    f.write_bytes(content)
    r = subprocess.run([sys.executable, "-m", "gpuconv", "convert", str(good), "--out",
                        str(tmp_path / "o"), opt, str(f), "--backend", "cpu", "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stderr.splitlines()) == (2, ["error: " + line.format(f=f)])


def test_one_mebibyte_header_lines_parse_in_bounded_time(tmp_path):
    """The worst a 1 MiB header can do to the parser (pynrrd's included): a few seconds at
    most, checked in a child under RLIMIT_CPU; each case one error or a header."""
    n = (1 << 20) - 400
    h = HDR
    cases = [h.replace("sizes: 4 4 2", "sizes: " + "1 " * (n // 2)),
             h + "kinds: " + "domain " * (n // 7),
             h.replace("space directions: (1,0,0) (0,1,0) (0,0,1)",
                       "space directions: " + "(" * n),
             h.replace("space directions: (1,0,0) (0,1,0) (0,0,1)",
                       "space directions: (" + "1," * (n // 2) + "1)"),
             h + "".join(f"k{i}: v\n" for i in range(n // 12)),
             h + "spacings: " + "1 " * (n // 2)]
    paths = []
    for k, text in enumerate(cases):
        paths.append(str(_nrrd(tmp_path / f"big{k}.nrrd", text.rstrip("\n"))))
    code = f"""
        import time
        from gpuconv.io.nrrd_read import read_header
        from gpuconv.errors import InputError
        for p in {paths!r}:
            t = time.perf_counter()
            try:
                read_header(p)
            except InputError:
                pass
            print(time.perf_counter() - t)
    """
    rc, out, err = _run_limited(code, seconds=60)
    assert rc == 0, err
    assert max(float(t) for t in out.split()) < 5.0
