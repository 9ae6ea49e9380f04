"""The Parquet copy of a run's table is streamed from its CSV a block at a time (bounded
memory): what pyarrow reads back must equal the whole CSV read at once, types included."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pacsv = pytest.importorskip("pyarrow.csv")
pq = pytest.importorskip("pyarrow.parquet")

from gpuconv.writers import table  # noqa: E402


@pytest.mark.parametrize("rows", [0, 1, 5000, 300_000])
def test_streamed_parquet_equals_the_whole_csv(tmp_path, monkeypatch, rows):
    monkeypatch.setattr(table, "PARQUET_ROW_GROUP", 4096)   # many row groups, many blocks
    rng = np.random.default_rng(rows)
    lines = ["exam,file,class,class_name,cx,cy,w,h,pixels"]
    for n in range(rows):
        exam = f"{n % 37:04d}"   # leading zeros: must stay a string
        lines.append(f"{exam},{exam}_{n % 64 + 1}.txt,{n % 9},c{n % 9},{rng.random():.6f},"
                     f"{rng.random():.6f},{rng.random():.6f},{rng.random():.6f},"
                     f"{int(rng.integers(1, 10**6))}")
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "boxes.parquet"
    types = {"exam": "string", "file": "string", "class_name": "string"}
    table._stream_parquet(csv_path, out, types)
    got = pq.read_table(out)
    whole = pacsv.read_csv(str(csv_path), convert_options=pacsv.ConvertOptions(
        column_types={k: pa.string() for k in types}, strings_can_be_null=False))
    assert got.num_rows == rows
    assert got.schema.field("exam").type == pa.string()
    assert got.equals(whole) or got.cast(whole.schema).equals(whole)
    if rows:
        assert got.column("exam")[0].as_py() == "0000"
        meta = pq.ParquetFile(out).metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        assert sum(sizes) == rows and max(sizes) <= 4096   # bounded groups, nothing lost
