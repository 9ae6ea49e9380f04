"""``--format table`` rows: formatted per column (writers/table.py), checked against the csv
module and per-row float formatting, an independent way to write the same rows."""

import csv
import io

import numpy as np
import pytest

from gpuconv.results.boxes import BoxTable, normalised_boxes
from gpuconv.writers.table import BOX_TABLE_PARTS, part_text


def _table(rng, n, width, height) -> BoxTable:
    i0 = rng.integers(0, width, n)
    i1 = np.minimum(width - 1, i0 + rng.integers(0, 5, n))
    j0 = rng.integers(0, height, n)
    j1 = np.minimum(height - 1, j0 + rng.integers(0, 5, n))
    k = np.sort(rng.integers(0, 40, n))
    return BoxTable(k=k.astype(np.int32), cls=rng.integers(0, 12, n).astype(np.int32),
                    i0=i0.astype(np.int32), i1=i1.astype(np.int32), j0=j0.astype(np.int32),
                    j1=j1.astype(np.int32), pixels=rng.integers(1, 400, n).astype(np.int64),
                    width=width, height=height, slices=40)


def _expected(exam, split, t: BoxTable, names) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for n, (cx, cy, bw, bh) in enumerate(normalised_boxes(t)):
        k, c = int(t.k[n]), int(t.cls[n])
        w.writerow([exam, split, f"{exam}_{k + 1}.txt", k, c,
                    names[c] if c < len(names) else str(c + 1), int(t.i0[n]), int(t.i1[n]),
                    int(t.j0[n]), int(t.j1[n]), f"{cx:.6f}", f"{cy:.6f}", f"{bw:.6f}",
                    f"{bh:.6f}", int(t.pixels[n])])
    return buf.getvalue()


@pytest.mark.parametrize("exam", ["COCA_0007", 'odd,"name"'])
@pytest.mark.parametrize("size", [(512, 512), (37, 301)])   # non-square, odd sizes
def test_part_rows_equal_csv_module_rows(exam, size):
    rng = np.random.default_rng(len(exam) + size[0])
    t = _table(rng, 500, *size)
    names = ["LM", "LAD", "a,b", 'q"uote'] + [f"c{i}" for i in range(6)]   # ids 10, 11 unnamed
    text = part_text(exam, "train", t, names)
    assert text == _expected(exam, "train", t, names)
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == 500 and all(len(r) == len(BOX_TABLE_PARTS) for r in rows)
    assert rows[0][0] == exam


def test_part_of_an_exam_without_boxes_is_empty():
    t = _table(np.random.default_rng(0), 0, 64, 48)
    assert part_text("e", "val", t, ["x"]) == ""
