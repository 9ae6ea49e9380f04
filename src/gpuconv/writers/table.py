"""One table of all boxes per run (``--format table``): OUT/boxes.csv, and boxes.parquet when
pyarrow is installed.  Millions of tiny label files are a bottleneck of their own at scale.

Each exam first writes its rows to OUT/.parts/boxes/{exam}.csv (so resumed runs keep finished
exams); the run's end concatenates the parts in exam order.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from gpuconv.results.boxes import BoxTable, _fixed_width_lut

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


_PART_ROWS = 1 << 15   # rows formatted at a time (their Python strings are ~0.5 kB a row)


def part_text(exam: str, split: str, boxes: BoxTable, names: list[str]) -> str:
    """The CSV rows of one exam's boxes (columns ``BOX_TABLE_PARTS``, no header).

    Values are formatted per column, not per row: the normalised coordinates are lookups into
    the same formatted tables ``yolo_text`` uses (so they equal the label files' text), integers
    go through one ``str`` each.  A run with 10^5 boxes spent seconds here when every field of
    every row was formatted on its own."""
    return "".join(part_blocks(exam, split, boxes, names))


def part_blocks(exam: str, split: str, boxes: BoxTable, names: list[str],
                rows: int | None = None):
    """``part_text`` as consecutive blocks of at most ``rows`` rows (a dense map's 10^6 boxes
    formatted at once took ~0.7 kB a box of Python strings and lists)."""
    n = len(boxes)
    if n == 0:
        return
    rows = rows or _PART_ROWS
    W, H = boxes.width, boxes.height
    cx = _lut_strings(2 * W + 1, 2.0, float(W))
    cy = _lut_strings(2 * H + 1, 2.0, float(H))
    w = _lut_strings(W + 1, 1.0, float(W))
    h = _lut_strings(H + 1, 1.0, float(H))
    class_field: dict[int, str] = {}
    head = f"{_csv_field(exam)},{_csv_field(split)},"
    plain_exam = _csv_field(exam) == exam
    for a in range(0, n, rows):
        b = min(n, a + rows)
        i0, i1, j0, j1 = (np.asarray(c[a:b], np.int64)
                          for c in (boxes.i0, boxes.i1, boxes.j0, boxes.j1))
        cls = np.asarray(boxes.cls[a:b], np.int64).tolist()
        for c in set(cls) - class_field.keys():
            class_field[c] = _csv_field(names[c] if c < len(names) else str(c + 1))
        k = np.asarray(boxes.k[a:b], np.int64)
        k1 = (k + 1).tolist()
        if plain_exam:
            files = [f"{exam}_{kk}.txt" for kk in k1]
        else:
            files = [_csv_field(f"{exam}_{kk}.txt") for kk in k1]
        cols = zip(files, map(str, k.tolist()), cls,
                   map(str, i0.tolist()), map(str, i1.tolist()), map(str, j0.tolist()),
                   map(str, j1.tolist()), (i0 + i1 + 1).tolist(), (j0 + j1 + 1).tolist(),
                   (i1 - i0 + 1).tolist(), (j1 - j0 + 1).tolist(),
                   map(str, np.asarray(boxes.pixels[a:b], np.int64).tolist()))
        yield "".join(
            f"{head}{f},{kk},{c},{class_field[c]},{p},{q},{d},{e},{cx[x]},{cy[y]},{w[u]},"
            f"{h[v]},{px}\n"
            for f, kk, c, p, q, d, e, x, y, u, v, px in cols)


@contextmanager
def _atomic_target(path: Path):
    """A temporary path beside ``path`` (named as ``writers/atomic.py`` names its temporaries,
    so a killed run's leftovers are cleaned the same way), renamed over ``path`` when the block
    ends without error, removed otherwise: for files written in pieces."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-gpuconv")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_part(out: Path, kind: str, exam: str, split: str, boxes: BoxTable,
               names: list[str]) -> Path:
    """Rows of one exam (no header line), written a block of rows at a time; returns the part's
    path."""
    p = part_path(out, kind, exam)
    p.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_target(p) as tmp, open(tmp, "wb") as f:
        for block in part_blocks(exam, split, boxes, names, _PART_ROWS):
            f.write(block.encode("utf-8"))
    return p


def part_texts(out: Path, kind: str, exams) -> str:
    """The parts of ``exams`` in that order, concatenated (an exam without a part, a failed one,
    is left out).  The one reader of part files: boxes and 3D instances merge through it."""
    return b"".join(_part_bytes(out, kind, exams)).decode("utf-8")


def _part_bytes(out: Path, kind: str, exams):
    """Each existing part's bytes as ``part_texts`` reads it (newlines as text mode reads
    them), one part at a time."""
    for exam in exams:
        p = part_path(Path(out), kind, exam)
        if p.exists():
            data = p.read_bytes()
            if b"\r" in data:   # text mode's universal newlines, as read_text() did
                data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            yield data


def parquet_available() -> bool:
    try:
        import pyarrow.csv  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def typed_parquet(csv_text, column_types: dict) -> bytes:
    """Parquet bytes of a CSV text (str, or the path of a UTF-8 CSV file), the named columns
    with their pyarrow types (strings stay strings: exam '0042' is not the number 42), the
    others as pyarrow infers them."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    sink = pa.BufferOutputStream()
    pq.write_table(_typed_table(csv_text, column_types), sink)
    return sink.getvalue().to_pybytes()


def _typed_table(source, column_types: dict):
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv
    types = {c: (getattr(pa, t)() if isinstance(t, str) else t) for c, t in column_types.items()}
    if isinstance(source, str):
        source = io.BytesIO(source.encode("utf-8"))
    else:
        source = str(source)
    return pacsv.read_csv(source, convert_options=pacsv.ConvertOptions(
        column_types=types, strings_can_be_null=False))


def merge_parts(out: Path, kind: str, exams: list[str], columns) -> list[Path]:
    """OUT/{kind}.csv from the parts of ``exams`` in that order (+ Parquet when pyarrow is
    installed); returns what was written (``convert``'s summary lists it under ``tables``).
    The CSV is written a part at a time and the Parquet file is made from that file, so a run's
    rows are never all in memory as Python text."""
    out = Path(out)
    paths = [out / f"{kind}.csv"]
    with _atomic_target(paths[0]) as tmp, open(tmp, "wb") as f:
        f.write((",".join(columns) + "\n").encode("utf-8"))
        for data in _part_bytes(out, kind, exams):
            f.write(data)
    if parquet_available():
        paths.append(out / f"{kind}.parquet")
        with _atomic_target(paths[1]) as tmp:
            _stream_parquet(paths[0], tmp, {"exam": "string", "file": "string",
                                            "class_name": "string"})
    return paths


#: rows per Parquet row group when a CSV is streamed into Parquet (about 15 MB of Arrow data
#: for the box table): the peak memory of the step, whatever the run's size
PARQUET_ROW_GROUP = 1 << 18


def _stream_parquet(csv_path, parquet_path, column_types: dict) -> None:
    """The CSV file as Parquet, read a block at a time and written a row group of
    ``PARQUET_ROW_GROUP`` rows at a time (reading the whole CSV into one table held 1 GB for
    the 2 M boxes of two dense maps).  Column types as ``_typed_table``: the named ones fixed,
    the others inferred from the first block (the CSV's columns have one type throughout)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    types = {c: (getattr(pa, t)() if isinstance(t, str) else t) for c, t in column_types.items()}
    reader = pacsv.open_csv(str(csv_path), convert_options=pacsv.ConvertOptions(
        column_types=types, strings_can_be_null=False))
    pending, rows = [], 0
    with pq.ParquetWriter(str(parquet_path), reader.schema) as writer:
        for batch in reader:
            pending.append(batch)
            rows += batch.num_rows
            if rows >= PARQUET_ROW_GROUP:
                writer.write_table(pa.Table.from_batches(pending, reader.schema),
                                   row_group_size=PARQUET_ROW_GROUP)
                pending, rows = [], 0
        if pending:
            writer.write_table(pa.Table.from_batches(pending, reader.schema),
                               row_group_size=PARQUET_ROW_GROUP)
