"""Table 1 of a segmentation dataset, per class, from the 3D instance tables of its exams.

Column definitions (also in the README; tests/test_stats.py checks each on a hand-made corpus):
- ``instances``: number of 3D instances (segmentations) of the class over all scans;
- ``patients``: distinct patients with at least one instance of the class (a patient is an exam
  unless a ``--patients`` CSV maps exams to patients); ``scans``: exams with the class;
- ``mean_volume_mm3`` / ``sd_volume_mm3``: mean and *sample* standard deviation (ddof=1) of
  the instances' volumes; SD is empty for fewer than 2 instances, both for none;
- ``instances_per_scan``: instances / scans that contain the class (how many a positive scan
  holds); ``instances_per_scan_all``: instances / all scans analysed;
- ``share_instances_pct``: 100 x instances / instances of all classes (sums to 100);
- ``share_patients_pct``: 100 x patients / all patients analysed, including patients without
  any instance (does not sum to 100: a patient can have several classes);
- the ``all`` row pools every class: patients/scans with any instance.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gpuconv.writers.atomic import write_text_atomic

CSV_NAME = "stats.csv"
MD_NAME = "stats.md"
PNG_NAME = "stats.png"
ALL = "all"


@dataclass
class ClassRow:
    class_id: int | None          # None for the pooled "all" row
    class_name: str
    instances: int
    patients: int
    scans: int
    mean_volume_mm3: float        # nan when no instance
    sd_volume_mm3: float          # sample SD (ddof=1); nan when fewer than 2 instances
    median_volume_mm3: float
    min_volume_mm3: float
    max_volume_mm3: float
    instances_per_scan: float     # over scans having the class; nan when none has it
    instances_per_scan_all: float  # over all scans
    share_instances_pct: float
    share_patients_pct: float


@dataclass
class Table1:
    rows: list[ClassRow]
    total: ClassRow
    n_scans: int
    n_patients: int
    # calcium scores next to the Table-1 columns (issue 17): ``calcium.summary`` output,
    # (one dict per class row, one for the "all" row), or None without CTs
    calcium: tuple | None = None


def read_patients_csv(path) -> dict[str, str]:
    """``exam,patient`` rows -> {exam: patient} (several scans of one patient count once)."""
    from gpuconv.dataset.exams import read_csv_rows
    rows = read_csv_rows(path, ("exam", "patient"), "patients")
    return {(r["exam"] or "").strip(): (r["patient"] or "").strip() for r in rows}


def _row(class_id, name, volumes, exams_with, patient_of, n_scans, n_patients, n_all
         ) -> ClassRow:
    n = len(volumes)
    patients = len({patient_of.get(e, e) for e in exams_with})
    scans = len(exams_with)
    nan = float("nan")
    return ClassRow(
        class_id=class_id, class_name=name, instances=n, patients=patients, scans=scans,
        mean_volume_mm3=float(np.mean(volumes)) if n else nan,
        sd_volume_mm3=float(np.std(volumes, ddof=1)) if n >= 2 else nan,
        median_volume_mm3=float(np.median(volumes)) if n else nan,
        min_volume_mm3=float(np.min(volumes)) if n else nan,
        max_volume_mm3=float(np.max(volumes)) if n else nan,
        instances_per_scan=n / scans if scans else nan,
        instances_per_scan_all=n / n_scans if n_scans else nan,
        share_instances_pct=100.0 * n / n_all if n_all else nan,
        share_patients_pct=100.0 * patients / n_patients if n_patients else nan)


def table1(tables, exams, class_names: list[str], patient_of: dict | None = None) -> Table1:
    """Aggregate per-exam instance tables (``instances.InstanceTable``) into Table 1.

    ``exams``: every scan analysed, including those without instances (they count in the
    denominators).  Classes are listed in class-id order, classes without instances included.
    """
    patient_of = patient_of or {}
    exams = sorted(set(exams))
    tables = sorted(tables, key=lambda t: t.exam)
    n_scans = len(exams)
    n_patients = len({patient_of.get(e, e) for e in exams})
    cls = np.concatenate([t.cls for t in tables]).astype(np.int64) if tables else np.zeros(0, int)
    vol = np.concatenate([t.volume_mm3 for t in tables]) if tables else np.zeros(0)
    exam_of = np.concatenate([np.full(len(t), i) for i, t in enumerate(tables)]
                             ) if tables else np.zeros(0, int)
    names = [t.exam for t in tables]
    n_classes = max(len(class_names), int(cls.max()) + 1 if len(cls) else 0)
    rows = []
    for c in range(n_classes):
        sel = cls == c
        with_c = {names[i] for i in np.unique(exam_of[sel]).tolist()}
        name = class_names[c] if c < len(class_names) else ""
        rows.append(_row(c, name, vol[sel], with_c, patient_of, n_scans, n_patients, len(vol)))
    with_any = {names[i] for i in np.unique(exam_of).tolist()}
    total = _row(None, ALL, vol, with_any, patient_of, n_scans, n_patients, len(vol))
    return Table1(rows=rows, total=total, n_scans=n_scans, n_patients=n_patients)


CSV_COLUMNS = tuple(ClassRow.__dataclass_fields__)


def _num(x, digits: int) -> str:
    if x is None:
        return ""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return "" if not math.isfinite(x) else f"{x:.{digits}f}"


def table1_csv_text(t: Table1) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    extra = _calcium_csv_columns(t)
    w.writerow(CSV_COLUMNS + extra)
    for n, r in enumerate([*t.rows, t.total]):
        d = asdict(r)
        w.writerow([d["class_name"] if k == "class_name" else _num(d[k], 4) for k in CSV_COLUMNS]
                   + [_num(v, 4) for v in _calcium_values(t, n, extra)])
    return buf.getvalue()


# -- calcium columns (issue 17; values from analysis/calcium.py) ---------------------------

def _calcium_csv_columns(t: Table1) -> tuple:
    if t.calcium is None:
        return ()
    from gpuconv.analysis.calcium import SUMMARY_COLUMNS
    return SUMMARY_COLUMNS


def _calcium_values(t: Table1, n: int, keys) -> list:
    """Row n's calcium values (n = len(rows) is the "all" row)."""
    if t.calcium is None:
        return []
    per_class, total = t.calcium
    d = total if n >= len(t.rows) else (per_class[n] if n < len(per_class) else {})
    return [d.get(k) for k in keys]


# (Markdown header, terminal header, summary key, decimals) of the calcium columns on display
CALCIUM_DISPLAY = (("Scans with CT", "CT scans", "ct_scans", 0),
                   ("Agatston mean", "Ag. mean", "agatston_mean", 1),
                   ("Agatston median", "Ag. median", "agatston_median", 1),
                   ("Volume score mean (mm³)", "Vol. mm³", "volume_mean_mm3", 1),
                   ("Mass score mean (mg)", "Mass mg", "mass_mean_mg", 2))


def _calcium_display_cells(t: Table1, n: int) -> list[str]:
    if t.calcium is None:
        return []
    vals = _calcium_values(t, n, [k for _, _, k, _ in CALCIUM_DISPLAY])
    return [_num(v, d) or "–" for v, (_, _, _, d) in zip(vals, CALCIUM_DISPLAY)]


# (Markdown header, terminal header, field, decimals) of the Table-1 columns on display
DISPLAY = (("Class", "Class", "class_name", None),
           ("Segmentations (3D instances)", "Instances", "instances", 0),
           ("Patients", "Patients", "patients", 0),
           ("Mean volume (mm³)", "Mean mm³", "mean_volume_mm3", 1),
           ("Volume SD (mm³)", "SD mm³", "sd_volume_mm3", 1),
           ("Segmentations per scan", "Per scan", "instances_per_scan", 2),
           ("Share of instances (%)", "% inst.", "share_instances_pct", 1),
           ("Share of patients (%)", "% pat.", "share_patients_pct", 1))


def _display_cells(r: ClassRow) -> list[str]:
    d = asdict(r)
    out = []
    for _, _, key, digits in DISPLAY:
        v = d[key]
        out.append(str(v) if digits is None else (_num(v, digits) or "–"))
    return out


def table1_markdown(t: Table1, title: str = "Dataset statistics") -> str:
    lines = [f"# {title}", "",
             f"{t.n_scans} scans, {t.n_patients} patients, {t.total.instances} 3D instances.",
             "", "| " + " | ".join(h for h, _, _, _ in DISPLAY + _calcium_display(t)) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(DISPLAY + _calcium_display(t)) - 1))
             + "|"]
    for n, r in enumerate([*t.rows, t.total]):
        cells = _display_cells(r) + _calcium_display_cells(t, n)
        if r.class_id is None:
            cells = [f"**{c}**" if c != "–" else c for c in cells]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Mean and SD over 3D instances (SD: sample, ddof=1). Segmentations per scan: "
              "over the scans that contain the class. Share of patients: of all patients "
              "analysed. Per-instance rows: instances.csv.", ""]
    if t.calcium is not None:
        lines[-1:] = ["Calcium scores per scan with a CT (means over those scans; Agatston "
                      "normalised to 3 mm slices; definitions in docs/stats.md). Per exam: "
                      "calcium.csv.", ""]
    return "\n".join(lines)


def _calcium_display(t: Table1) -> tuple:
    return CALCIUM_DISPLAY if t.calcium is not None else ()


def render_table1(t: Table1, console=None) -> None:
    """Print Table 1 as a rich table (to stdout unless ``console`` says otherwise)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from gpuconv.errors import one_line
    console = console or Console()
    table = Table(title=f"{t.n_scans} scans, {t.n_patients} patients, "
                        f"{t.total.instances} 3D instances",
                  caption="Mean/SD of instance volumes (SD: ddof=1); per scan: over scans "
                          "with the class; % pat.: of all patients")
    for n, (_, header, _, _) in enumerate(DISPLAY):
        table.add_column(header, justify="left" if n == 0 else "right")
    def cells(r):  # class names are user text: never rich markup
        return [escape(one_line(c)) for c in _display_cells(r)]
    for r in t.rows:
        table.add_row(*cells(r))
    table.add_section()
    table.add_row(*cells(t.total), style="bold")
    console.print(table)
    if t.calcium is not None:  # issue 17: its own table, so both fit a terminal
        console.print(_calcium_rich_table(t, escape, one_line))


def _calcium_rich_table(t: Table1, escape, one_line):
    from rich.table import Table
    per_class, total = t.calcium
    table = Table(title=f"Calcium scores ({total.get('ct_scans', 0)} scans with a CT)",
                  caption="means over scans with a CT; Agatston normalised to 3 mm slices; "
                          "risk: scans per category of the row's Agatston score")
    heads = ["Class"] + [h for _, h, _, _ in CALCIUM_DISPLAY[1:]] + ["0", "1-99", "100-399",
                                                                     ">=400"]
    for n, h in enumerate(heads):
        table.add_column(escape(h), justify="left" if n == 0 else "right")
    risk = ("risk_0", "risk_1_99", "risk_100_399", "risk_400_plus")
    for n, r in enumerate([*t.rows, t.total]):
        vals = _calcium_display_cells(t, n)[1:] + [_num(v, 0) for v in _calcium_values(t, n, risk)]
        if n == len(t.rows):
            table.add_section()
        table.add_row(escape(one_line(r.class_name)), *vals,
                      style="bold" if n == len(t.rows) else None)
    return table


def write_table1(out, t: Table1) -> list[Path]:
    """OUT/stats.csv and OUT/stats.md, written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / CSV_NAME, out / MD_NAME
    write_text_atomic(csv_path, table1_csv_text(t))
    write_text_atomic(md_path, table1_markdown(t))
    return [csv_path, md_path]


def table1_json(t: Table1) -> dict:
    def clean(d):
        # NaN and +-inf -> null: the output stays JSON (no NaN / Infinity tokens)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in d.items()}
    doc = {"scans": t.n_scans, "patients": t.n_patients,
           "classes": [clean(asdict(r)) for r in t.rows], "all": clean(asdict(t.total))}
    if t.calcium is not None:  # issue 17: the calcium summary beside each row
        per_class, total = t.calcium
        for row, cal in zip(doc["classes"], per_class):
            row["calcium"] = clean(cal)
        doc["all"]["calcium"] = clean(total)
    return doc
