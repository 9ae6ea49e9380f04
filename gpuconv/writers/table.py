"""One table of all boxes per run (``--format table``): OUT/boxes.csv, and boxes.parquet when
pyarrow is installed.  Millions of tiny label files are a bottleneck of their own at scale.

Each exam first writes its rows to OUT/.parts/boxes/{exam}.csv (so resumed runs keep finished
exams); the run's end concatenates the parts in exam order.
"""

from __future__ import annotations

from pathlib import Path

from ..boxes import BoxTable, normalised_boxes
from .atomic import write_bytes_atomic, write_text_atomic

BOX_TABLE_PARTS = ("exam", "split", "file", "k", "class_id", "class_name", "i0", "i1", "j0",
                   "j1", "cx", "cy", "w", "h", "pixels")


def _csv_field(v) -> str:
    s = str(v)
    if any(c in s for c in ',"\n'):
        s = '"' + s.replace('"', '""') + '"'
    return s


def part_path(out: Path, kind: str, exam: str) -> Path:
    return Path(out) / ".parts" / kind / f"{exam}.csv"


def write_part(out: Path, kind: str, exam: str, split: str, boxes: BoxTable,
               names: list[str]) -> Path:
    """Rows of one exam (no header line); returns the part's path."""
    xywh = normalised_boxes(boxes)
    lines = []
    for n in range(len(boxes)):
        k, c = int(boxes.k[n]), int(boxes.cls[n])
        name = names[c] if c < len(names) else str(c + 1)
        row = [exam, split, f"{exam}_{k + 1}.txt", k, c, name, int(boxes.i0[n]),
               int(boxes.i1[n]), int(boxes.j0[n]), int(boxes.j1[n])]
        row += [f"{x:.6f}" for x in xywh[n]] + [int(boxes.pixels[n])]
        lines.append(",".join(_csv_field(v) for v in row) + "\n")
    p = part_path(out, kind, exam)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(p, "".join(lines))
    return p


def merge_parts(out: Path, kind: str, exams: list[str], columns) -> Path:
    """OUT/{kind}.csv from the parts of ``exams`` in that order (+ Parquet with pyarrow)."""
    out = Path(out)
    chunks = [",".join(columns) + "\n"]
    for exam in exams:
        p = part_path(out, kind, exam)
        if p.exists():
            chunks.append(p.read_text())
    csv_path = out / f"{kind}.csv"
    data = "".join(chunks)
    write_text_atomic(csv_path, data)
    try:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
    except ImportError:
        return csv_path
    import io
    tbl = pacsv.read_csv(io.BytesIO(data.encode()), convert_options=pacsv.ConvertOptions(
        column_types={"exam": "string", "file": "string", "class_name": "string"}))
    buf = io.BytesIO()
    pq.write_table(tbl, buf)
    write_bytes_atomic(out / f"{kind}.parquet", buf.getvalue())
    return csv_path
