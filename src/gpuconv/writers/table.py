"""One table of all boxes per run (``--format table``): OUT/boxes.csv, and boxes.parquet when
pyarrow is installed.  Millions of tiny label files are a bottleneck of their own at scale.

Each exam first writes its rows to OUT/.parts/boxes/{exam}.csv (so resumed runs keep finished
exams); the run's end concatenates the parts in exam order.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from gpuconv.results.boxes import BoxTable, _fixed_width_lut
from gpuconv.writers.atomic import write_bytes_atomic, write_text_atomic

BOX_TABLE_PARTS = ("exam", "split", "file", "k", "class_id", "class_name", "i0", "i1", "j0",
                   "j1", "cx", "cy", "w", "h", "pixels")


def _csv_field(v) -> str:
    s = str(v)
    if any(c in s for c in ',"\n'):
        s = '"' + s.replace('"', '""') + '"'
    return s


def part_path(out: Path, kind: str, exam: str) -> Path:
    return Path(out) / ".parts" / kind / f"{exam}.csv"


@lru_cache(maxsize=64)
def _lut_strings(count: int, scale: float, divisor: float) -> tuple[str, ...]:
    """``_fixed_width_lut`` as strings: f"{k / scale / divisor:.6f}" for k < count."""
    return tuple(_fixed_width_lut(count, scale, divisor).tobytes().decode("ascii")[i:i + 8]
                 for i in range(0, 8 * count, 8))


def part_text(exam: str, split: str, boxes: BoxTable, names: list[str]) -> str:
    """The CSV rows of one exam's boxes (columns ``BOX_TABLE_PARTS``, no header).

    Values are formatted per column, not per row: the normalised coordinates are lookups into
    the same formatted tables ``yolo_text`` uses (so they equal the label files' text), integers
    go through one ``str`` each.  A run with 10^5 boxes spent seconds here when every field of
    every row was formatted on its own."""
    n = len(boxes)
    if n == 0:
        return ""
    W, H = boxes.width, boxes.height
    i0, i1, j0, j1 = (np.asarray(a, np.int64) for a in (boxes.i0, boxes.i1, boxes.j0, boxes.j1))
    cx = _lut_strings(2 * W + 1, 2.0, float(W))
    cy = _lut_strings(2 * H + 1, 2.0, float(H))
    w = _lut_strings(W + 1, 1.0, float(W))
    h = _lut_strings(H + 1, 1.0, float(H))
    cls = np.asarray(boxes.cls, np.int64).tolist()
    class_field = {c: _csv_field(names[c] if c < len(names) else str(c + 1)) for c in set(cls)}
    head = f"{_csv_field(exam)},{_csv_field(split)},"
    k1 = (np.asarray(boxes.k, np.int64) + 1).tolist()
    if _csv_field(exam) == exam:
        files = [f"{exam}_{k}.txt" for k in k1]
    else:
        files = [_csv_field(f"{exam}_{k}.txt") for k in k1]
    cols = zip(files, map(str, np.asarray(boxes.k, np.int64).tolist()), cls,
               map(str, i0.tolist()), map(str, i1.tolist()), map(str, j0.tolist()),
               map(str, j1.tolist()), (i0 + i1 + 1).tolist(), (j0 + j1 + 1).tolist(),
               (i1 - i0 + 1).tolist(), (j1 - j0 + 1).tolist(),
               map(str, np.asarray(boxes.pixels, np.int64).tolist()))
    return "".join(
        f"{head}{f},{k},{c},{class_field[c]},{a},{b},{d},{e},{cx[x]},{cy[y]},{w[u]},{h[v]},{px}\n"
        for f, k, c, a, b, d, e, x, y, u, v, px in cols)


def write_part(out: Path, kind: str, exam: str, split: str, boxes: BoxTable,
               names: list[str]) -> Path:
    """Rows of one exam (no header line); returns the part's path."""
    p = part_path(out, kind, exam)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(p, part_text(exam, split, boxes, names))
    return p


def part_texts(out: Path, kind: str, exams) -> str:
    """The parts of ``exams`` in that order, concatenated (an exam without a part, a failed one,
    is left out).  The one reader of part files: boxes and 3D instances merge through it."""
    chunks = []
    for exam in exams:
        p = part_path(Path(out), kind, exam)
        if p.exists():
            chunks.append(p.read_text(encoding="utf-8"))
    return "".join(chunks)


def parquet_available() -> bool:
    try:
        import pyarrow.csv  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def typed_parquet(csv_text: str, column_types: dict) -> bytes:
    """Parquet bytes of a CSV text, the named columns with their pyarrow types (strings stay
    strings: exam '0042' is not the number 42), the others as pyarrow infers them."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    types = {c: (getattr(pa, t)() if isinstance(t, str) else t) for c, t in column_types.items()}
    table = pacsv.read_csv(io.BytesIO(csv_text.encode("utf-8")),
                           convert_options=pacsv.ConvertOptions(column_types=types,
                                                                strings_can_be_null=False))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def merge_parts(out: Path, kind: str, exams: list[str], columns) -> list[Path]:
    """OUT/{kind}.csv from the parts of ``exams`` in that order (+ Parquet when pyarrow is
    installed); returns what was written (``convert``'s summary lists it under ``tables``)."""
    out = Path(out)
    data = ",".join(columns) + "\n" + part_texts(out, kind, exams)
    paths = [out / f"{kind}.csv"]
    write_text_atomic(paths[0], data)
    if parquet_available():
        paths.append(out / f"{kind}.parquet")
        write_bytes_atomic(paths[1], typed_parquet(
            data, {"exam": "string", "file": "string", "class_name": "string"}))
    return paths
