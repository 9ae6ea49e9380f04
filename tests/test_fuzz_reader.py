"""Fuzzing the reader (issue 14): header mutations and payload damage give success or the tool's
own ``InputError`` - never another exception - in bounded time and memory.

Seeded and derandomised: CI runs a few hundred cases (``GPUCONV_FUZZ_EXAMPLES``, default 150 for
the in-process property test); set it higher to hunt, e.g. ``GPUCONV_FUZZ_EXAMPLES=20000``.
Every crash found is kept below as a regression case (``REGRESSIONS``), generated in code.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gpuconv.errors import InputError  # noqa: E402
from gpuconv.io.nrrd_read import read_volume  # noqa: E402

# a warning (NumPy's cast warnings from pynrrd, say) would be a second stderr line: fail on it
pytestmark = pytest.mark.filterwarnings("error")

N_EXAMPLES = int(os.environ.get("GPUCONV_FUZZ_EXAMPLES", "150"))
FIELDS = ["type", "dimension", "sizes", "encoding", "endian", "space", "space directions",
          "space origin", "kinds", "spacings", "line skip", "byte skip", "data file",
          "Segment0_Name", "Segment0_LabelValue", "Segment0_Layer", "Segment0_Extent",
          "Segment1_LabelValue", "Segment1_Layer", "Segmentation_ReferenceImageExtentOffset"]
HOSTILE = ["", "abc", "-1", "0", "1", "2", "3", "4", "-2", "1.5", "nan", "inf", "-inf", "1e400",
           "18446744073709551615", "18446744073709551616", "2147483648", "1000000000",
           "9" * 60, "4 4 2", "1 4 4 2", "2147483648 2147483648 2147483648", "4 4", "4 4 0",
           "(1,0,0) (0,1,0) (0,0,1)", "(0,0,0) (0,1,0) (0,0,1)", "(1,0,0) (1,0,0) (0,0,1)",
           "none (1,0,0) (0,1,0) (0,0,1)", "(inf,0,0) (0,1,0) (0,0,1)",
           "(1e300,0,0) (0,1,0) (0,0,1)",
           "1 1", "nan 1 1 1", "raw", "gzip", "bzip2", "hex", "text", "little", "big",
           "unsigned char", "uint64", "int8", "short", "float", "block",
           "list domain domain domain",
           "domain domain domain", "/dev/zero", "a\x00b", "payload.raw", "LIST", "%03d 1 2 1",
           "左冠", "L\u00e4sion", "\x1b[31m", "[bold]", "0 3 0 3 0 1", "0 1 z", "1 2 3 4 5 6 7"]
LINE_ENDS = ["\n", "\r\n"]


def _base_files() -> dict[str, tuple[str, bytes]]:
    """A few valid inputs: (header text without the blank line, payload)."""
    vol = np.zeros((4, 4, 2), np.uint8)
    vol[0:2, 0:2, 0] = 1
    vol[3, 3, 1] = 2
    seg = ("Segment0_Name:=a\nSegment0_LabelValue:=1\nSegment0_Layer:=0\n"
           "Segment0_Extent:=0 1 0 1 0 0\n"
           "Segment1_Name:=b\nSegment1_LabelValue:=2\nSegment1_Layer:=0\n"
           "Segmentation_ReferenceImageExtentOffset:=0 0 0\n")
    base3 = ("NRRD0004\ntype: unsigned char\ndimension: 3\nspace: left-posterior-superior\n"
             "sizes: 4 4 2\nspace directions: (1,0,0) (0,1,0) (0,0,2.5)\n"
             "kinds: domain domain domain\nencoding: gzip\nspace origin: (0,0,0)\n")
    lay = np.zeros((2, 4, 4, 2), np.uint8)
    lay[0, 1, 1, 0] = 1
    lay[1, 1, 1, 0] = 1
    base4 = ("NRRD0004\ntype: unsigned char\ndimension: 4\nspace: left-posterior-superior\n"
             "sizes: 2 4 4 2\nspace directions: none (1,0,0) (0,1,0) (0,0,1)\n"
             "kinds: list domain domain domain\nencoding: raw\nspace origin: (0,0,0)\n"
             "Segment0_Name:=a\nSegment0_LabelValue:=1\nSegment0_Layer:=0\n"
             "Segment1_Name:=b\nSegment1_LabelValue:=1\nSegment1_Layer:=1\n")
    plain = vol.astype(">u2")
    base_plain = ("NRRD0004\ntype: unsigned short\nendian: big\ndimension: 3\nsizes: 4 4 2\n"
                  "spacings: 1 1 1\nencoding: bzip2\n")
    u64 = vol.astype("<u8")
    u64[3, 3, 1] = 2**64 - 1
    base_u64 = ("NRRD0004\ntype: uint64\nendian: little\ndimension: 3\nsizes: 4 4 2\n"
                "encoding: raw\nSegment0_Name:=a\nSegment0_LabelValue:=1\n"
                "Segment1_Name:=m\nSegment1_LabelValue:=18446744073709551615\n")
    return {
        "seg3_gzip": (base3 + seg, gzip.compress(vol.tobytes(order="F"))),
        "seg4_raw": (base4, lay.tobytes(order="F")),
        "plain_bz2": (base_plain, bz2.compress(plain.tobytes(order="F"))),
        "u64_raw": (base_u64, u64.tobytes(order="F")),
    }


BASES = _base_files()


def build(base: str, ops: list) -> bytes:
    """Apply mutation ``ops`` to a base file; the result is what gets written."""
    header, payload = BASES[base]
    lines = header.rstrip("\n").split("\n")
    end = "\n"
    raw_tail = b""
    for op in ops:
        kind = op[0]
        if kind == "set" and len(lines) > 1:        # a line's value replaced
            n = op[1] % len(lines) or 1
            key = lines[n].split(":", 1)[0]
            sep = ":=" if lines[n][len(key):].startswith(":=") else ": "
            lines[n] = f"{key}{sep}{op[2]}"
        elif kind == "add":                          # a field added (or duplicated)
            sep = ":=" if op[1][0].isupper() else ": "
            lines.append(f"{op[1]}{sep}{op[2]}")
        elif kind == "del" and len(lines) > 1:
            del lines[op[1] % len(lines) or 1]
        elif kind == "dup" and len(lines) > 1:
            lines.append(lines[op[1] % len(lines) or 1])
        elif kind == "crlf":
            end = "\r\n"
        elif kind == "truncate":                     # payload cut
            payload = payload[: op[1] % (len(payload) + 1)]
        elif kind == "flip" and payload:             # one payload byte changed
            i = op[1] % len(payload)
            payload = payload[:i] + bytes([(payload[i] + 1 + op[2] % 255) % 256]) + payload[i + 1:]
        elif kind == "append":                       # bytes after the payload
            payload = payload + op[1]
        elif kind == "noblank":                      # no blank line: header runs into data
            raw_tail = b"\x00"
        elif kind == "bytes":                        # raw bytes into the header text
            n = op[1] % len(lines)
            lines[n] = lines[n] + op[2].decode("latin-1")
    text = end.join(lines) + end
    head = text.encode("utf-8", "surrogateescape") if not any(o[0] == "bytes" for o in ops) \
        else text.encode("latin-1", "replace")
    return head + (raw_tail or end.encode()) + payload


OPS = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 40), st.sampled_from(HOSTILE)),
    st.tuples(st.just("set"), st.integers(0, 40), st.text(max_size=12)),
    st.tuples(st.just("add"), st.sampled_from(FIELDS), st.sampled_from(HOSTILE)),
    st.tuples(st.just("del"), st.integers(0, 40)),
    st.tuples(st.just("dup"), st.integers(0, 40)),
    st.tuples(st.just("crlf")),
    st.tuples(st.just("truncate"), st.integers(0, 400)),
    st.tuples(st.just("flip"), st.integers(0, 400), st.integers(0, 254)),
    st.tuples(st.just("append"), st.binary(max_size=16)),
    st.tuples(st.just("noblank")),
    st.tuples(st.just("bytes"), st.integers(0, 40), st.binary(min_size=1, max_size=3)),
)

# Crashes and wrong results found by the fuzzing and probing of issue 14 (before its fixes),
# kept as regression cases; add every new one here.
REGRESSIONS = [
    ("seg3_gzip", [("set", 10, "abc")]),                     # Segment0_LabelValue:=abc
    ("seg3_gzip", [("set", 11, "")]),                        # Segment0_Layer:=
    ("seg3_gzip", [("set", 12, "0 1 0 1 0 z")]),             # Segment0_Extent
    ("seg3_gzip", [("set", 16, "a b c")]),                   # ReferenceImageExtentOffset
    ("seg4_raw", [("add", "spacings", "1 1")]),              # 4D spacings too short
    ("seg4_raw", [("del", 5), ("add", "spacings", "nan 1")]),
    ("seg3_gzip", [("set", 2, "18446744073709551616")]),     # dimension: OverflowError
    ("seg3_gzip", [("set", 4, "2147483648 2147483648 2147483648")]),  # count wraps to 0
    ("seg3_gzip", [("add", "data file", "a\x00b")]),         # NUL in data file
    ("seg3_gzip", [("crlf",)]),                              # CRLF: "truncated: 0 of 32"
    ("u64_raw", [("set", 9, "-1")]),                         # uint64 declared as -1
    ("seg3_gzip", [("bytes", 9, b"\xe4")]),                  # Latin-1 byte in a name
    ("seg3_gzip", [("set", 5, "(1,0,0) (1,0,0) (0,0,1)")]),  # singular directions
    ("seg3_gzip", [("set", 5, "(inf,0,0) (0,1,0) (0,0,1)")]),
    ("plain_bz2", [("append", b"BZh91AY&SY")]),              # a torn second stream
    ("seg3_gzip", [("append", gzip.compress(b"x"))]),        # a member beyond the size
    ("seg3_gzip", [("noblank",)]),
    # found by this file's fuzzing: pynrrd parses 'sizes' through float() - "nan" warned from
    # a NumPy cast, "4.7" became 4, 2**64 + 1 wrapped
    ("seg3_gzip", [("set", 4, "nan")]),
    ("seg3_gzip", [("set", 4, "4.7 4 2")]),
    ("seg3_gzip", [("set", 4, "18446744073709551617 1 1")]),
]


def check(path: Path) -> str:
    """'ok' or 'InputError'; anything else propagates and fails the test."""
    try:
        vol = read_volume(path)
    except InputError as exc:
        assert "\n" not in str(exc) and exc.path == str(path)
        return "InputError"
    assert vol.layers.shape == vol.header.shape
    return "ok"


@pytest.fixture
def small_limit(monkeypatch):
    # in-process memory bound: no mutated header may make the reader decode more than 64 MiB
    monkeypatch.setenv("GPUCONV_MAX_VOLUME_BYTES", str(64 << 20))


@pytest.mark.parametrize("case", range(len(REGRESSIONS)))
def test_regressions(tmp_path, small_limit, case):
    base, ops = REGRESSIONS[case]
    p = tmp_path / "r.seg.nrrd"
    p.write_bytes(build(base, ops))
    check(p)


@settings(max_examples=N_EXAMPLES, derandomize=True, deadline=5000, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(base=st.sampled_from(sorted(BASES)), ops=st.lists(OPS, min_size=1, max_size=4))
@example(base="seg3_gzip", ops=[("set", 10, "abc")])
def test_mutated_headers_and_payloads_read_or_fail_cleanly(tmp_path, small_limit, base, ops):
    p = tmp_path / "f.seg.nrrd"
    p.write_bytes(build(base, ops))
    check(p)


def _random_cases(n: int, seed: int) -> list[tuple[str, list]]:
    """Seeded cases without hypothesis (for the subprocess runs)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ops = []
        for _ in range(rng.randint(1, 3)):
            k = rng.choice(["set", "add", "del", "truncate", "flip", "crlf"])
            if k == "set":
                ops.append(("set", rng.randint(0, 40), rng.choice(HOSTILE)))
            elif k == "add":
                ops.append(("add", rng.choice(FIELDS), rng.choice(HOSTILE)))
            elif k in ("del", "truncate"):
                ops.append((k, rng.randint(0, 400)))
            elif k == "flip":
                ops.append(("flip", rng.randint(0, 400), rng.randint(0, 254)))
            else:
                ops.append(("crlf",))
        out.append((rng.choice(sorted(BASES)), ops))
    return out


def _limits(mem_mb: int, seconds: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
    return apply


def test_reader_under_real_limits_in_a_subprocess(tmp_path):
    """The default (8 GiB) volume limit, 1 GiB of address space, 60 s of CPU: 60 seeded cases
    read in one child; each must give 'ok' or 'InputError' (nothing killed, nothing else)."""
    cases = _random_cases(60, seed=14) + REGRESSIONS
    paths = []
    for n, (base, ops) in enumerate(cases):
        p = tmp_path / f"c{n}.seg.nrrd"
        p.write_bytes(build(base, ops))
        paths.append(str(p))
    code = textwrap.dedent(f"""
        import json, sys
        from gpuconv.errors import InputError
        from gpuconv.io.nrrd_read import read_volume
        out = {{}}
        for p in {paths!r}:
            try:
                read_volume(p)
                out[p] = "ok"
            except InputError:
                out[p] = "InputError"
            except BaseException as exc:
                out[p] = f"{{type(exc).__name__}}: {{exc}}"
        print(json.dumps(out))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, preexec_fn=_limits(1024, 60))
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    bad = {p: v for p, v in got.items() if v not in ("ok", "InputError")}
    assert not bad


def test_cli_on_fuzzed_files_one_line_each(tmp_path):
    """A handful through ``gpuconv convert`` (a child under RLIMIT_AS and a timeout): exit 0 or
    1, no traceback, at most one ``error: FILE: reason`` line per file, nothing else on stderr.
    (``--single-class``: plain maps and Slicer files may mix after mutation.)"""
    d = tmp_path / "in"
    d.mkdir()
    cases = _random_cases(12, seed=1414) + REGRESSIONS[:6]
    for n, (base, ops) in enumerate(cases):
        (d / f"c_{n}.seg.nrrd").write_bytes(build(base, ops))
    r = subprocess.run([sys.executable, "-m", "gpuconv", "convert", str(d), "--out",
                        str(tmp_path / "out"), "--backend", "cpu", "--no-progress",
                        "--pool", "thread", "--workers", "1", "--single-class"],
                       capture_output=True, text=True, timeout=300,
                       preexec_fn=_limits(4096, 240))
    assert r.returncode in (0, 1), r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert all(ln.startswith(f"error: {d}/c_") for ln in lines), r.stderr
    files = [ln.split(": ", 2)[1] for ln in lines]
    assert len(files) == len(set(files))
    # the same files through stats: the same boundary
    r = subprocess.run([sys.executable, "-m", "gpuconv", "stats", str(d), "--out",
                        str(tmp_path / "stats"), "--backend", "cpu", "--no-plot", "--json",
                        "--single-class", "--workers", "1"],
                       capture_output=True, text=True, timeout=300,
                       preexec_fn=_limits(4096, 240))
    assert r.returncode in (0, 1), r.stderr[-3000:]
    assert all(ln.startswith(f"error: {d}/c_") for ln in r.stderr.splitlines()), r.stderr
    json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"{c} in stats --json"))
