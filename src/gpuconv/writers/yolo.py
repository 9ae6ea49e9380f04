"""Ultralytics layout: labels/{split}/{exam}_{k+1}.txt and dataset.yaml.

dataset.yaml has no ``path:`` key: Ultralytics' ``check_det_dataset`` then takes the dataset
root from the yaml file's own folder (``Path(data.get("path") or
Path(data["yaml_file"]).parent)``, ``yaml_file`` being the path it was given), so a dataset
folder that is copied or moved stays loadable where it lands.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import yaml

from gpuconv.results.boxes import BoxTable, yolo_views_by_slice
from gpuconv.dataset.exams import SPLITS, split_counts, val_source
from gpuconv.writers.atomic import write_bytes_atomic, write_text_atomic

_LABEL_NAME = re.compile(r"^(.+)_(\d+)\.txt$")


def index_exam_files(dirs, pattern: re.Pattern) -> dict[str, list[Path]]:
    """{exam: files} already in ``dirs`` (created if missing) whose names ``pattern`` matches
    with the exam id as group 1: what a re-run must replace or remove."""
    existing: dict[str, list[Path]] = defaultdict(list)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        for p in d.iterdir():
            m = pattern.match(p.name)
            if m:
                existing[m.group(1)].append(p)
    return existing


def label_name(exam: str, k: int) -> str:
    """Slice k (0-based) of an exam -> its label file name; slices are numbered from 1."""
    return f"{exam}_{k + 1}.txt"


class LabelDirs:
    """labels/{train,val,test}/ under OUT, with an index of files already there (for re-runs)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.existing = index_exam_files([self.dir(split) for split in SPLITS], _LABEL_NAME)

    def dir(self, split: str) -> Path:
        return self.out / "labels" / split

    def write_exam(self, exam: str, split: str, boxes: BoxTable, write_empty: bool) -> list[Path]:
        """Box labels of one exam (see ``write_texts``); each file's bytes are a view of one
        text buffer for the whole exam (no string per file)."""
        return self.write_texts(exam, split, yolo_views_by_slice(boxes), boxes.slices,
                                write_empty)

    def write_texts(self, exam: str, split: str, texts: dict, n_slices: int,
                    write_empty: bool) -> list[Path]:
        """Write one exam's label files from ready text (str, or bytes-like) per slice k (boxes
        or polygons, never both in one file); remove its files left from an earlier run.
        Returns the files written.  On failure, the files written for this exam are removed
        again."""
        if write_empty:
            texts = {k: texts.get(k, "") for k in range(n_slices)}
        d = self.dir(split)
        written: list[Path] = []
        try:
            for k in sorted(texts):
                p = d / label_name(exam, k)
                text = texts[k]
                if isinstance(text, str):
                    write_text_atomic(p, text)
                else:
                    write_bytes_atomic(p, text)
                written.append(p)
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        keep = set(written)
        for p in self.existing.pop(exam, []):
            if p not in keep:
                p.unlink(missing_ok=True)
        return written


def split_presence(out: Path) -> dict[str, int]:
    """{split: files} under OUT/labels and OUT/images (for a yaml written without counts)."""
    out = Path(out)
    found = {}
    for split in SPLITS:
        n = sum(1 for top in ("labels", "images") if (out / top / split).is_dir()
                for _ in (out / top / split).iterdir())
        if n or split != "test":
            found[split] = n
    return found


def dataset_yaml_doc(names: list[str], counts: dict[str, int]) -> dict:
    """train, val (images/train when no exam went to val), test when there is one, names."""
    doc = {"train": "images/train", "val": val_source(counts)}
    if counts.get("test"):
        doc["test"] = "images/test"
    doc["names"] = {i: n for i, n in enumerate(names)}
    return doc


def write_dataset_yaml(out: Path, names: list[str], counts=None) -> Path:
    """OUT/dataset.yaml, relative folders only.  ``counts``: exams per split (or {exam: split});
    without it, which split folders hold files.  Empty test folders are removed."""
    out = Path(out)
    if counts is None:
        counts = split_presence(out)
    elif not all(isinstance(v, int) for v in counts.values()):
        counts = split_counts(counts)
    if not counts.get("test"):
        for top in ("labels", "images"):
            try:
                (out / top / "test").rmdir()   # only when empty
            except OSError:
                pass
    p = out / "dataset.yaml"
    write_text_atomic(p, yaml.safe_dump(dataset_yaml_doc(names, counts), sort_keys=False,
                                        allow_unicode=True))
    return p


IMAGE_SUFFIXES = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp"}


def resolve_dataset_yaml(yaml_path) -> dict[str, Path]:
    """{split key: folder} as Ultralytics' ``check_det_dataset`` resolves them: the root is
    ``path:`` when given, else the yaml file's own folder; each of train/val/test is
    ``(root / value).resolve()``."""
    yaml_path = Path(yaml_path)
    doc = yaml.safe_load(yaml_path.read_text()) or {}
    root = Path(doc.get("path") or yaml_path.parent)
    return {k: (root / doc[k]).resolve() for k in ("train", "val", "test") if doc.get(k)}


def dataset_problems(yaml_path) -> list[str]:
    """What would stop Ultralytics training on this dataset, as sentences (empty: trainable):
    a train or val folder without images, a label file without its image."""
    problems = []
    yaml_path = Path(yaml_path)
    if not yaml_path.is_file():
        return [f"{yaml_path} does not exist"]
    for key, folder in resolve_dataset_yaml(yaml_path).items():
        images = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES] \
            if folder.is_dir() else []
        if not images and key in ("train", "val"):
            problems.append(f"{key}: no images in {folder} (convert with --images CT...)")
        labels = folder.parent.parent / "labels" / folder.name
        stems = {p.stem for p in images}
        orphans = [p.name for p in labels.glob("*.txt") if p.stem not in stems] \
            if labels.is_dir() else []
        if orphans and images:
            problems.append(f"{key}: {len(orphans)} label files without an image "
                            f"(e.g. {orphans[0]})")
    return problems
