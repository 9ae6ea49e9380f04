"""Writing one exam's outputs under OUT (label files, images, table parts, instance parts)."""

from __future__ import annotations

import copy
from pathlib import Path

from gpuconv.conversion.exam_unit import ExamResult
from gpuconv.writers.table import write_part
from gpuconv.writers.yolo import LabelDirs


class ExamWriter:
    """Writes one exam's outputs under OUT and says which files it wrote (for the manifest)."""

    def __init__(self, out: Path, names: list[str], formats: tuple[str, ...], write_empty: bool,
                 images=None):
        self.out = Path(out)
        self.names = names
        self.formats = formats
        self.write_empty = write_empty
        self.dirs = LabelDirs(out) if ("boxes" in formats or "polygons" in formats) else None
        self.images = images  # (exam -> CT path, ImageOptions) with images, else None
        self.image_dirs = None
        if images is not None:
            from gpuconv.writers.images import ImageDirs
            self.image_dirs = ImageDirs(out)

    def for_exams(self, exams: set[str]) -> "ExamWriter":
        """A copy whose index of files from an earlier run holds only ``exams`` (the whole index
        would otherwise be pickled with every batch sent to a worker process)."""
        w = copy.copy(self)
        for attr in ("dirs", "image_dirs"):
            dirs = getattr(w, attr)
            if dirs is not None and getattr(dirs, "existing", None) is not None:
                d = copy.copy(dirs)
                d.existing = {e: p for e, p in dirs.existing.items() if e in exams}
                setattr(w, attr, d)
        return w

    def remove_outputs(self, exam: str, recorded: list[str]) -> None:
        """Delete what an earlier run wrote for ``exam`` (its manifest ``recorded`` files and any
        label or image file named after it): the exam failed this time."""
        for rel in recorded:
            p = (self.out / rel)
            if p.resolve().is_relative_to(self.out.resolve()):
                p.unlink(missing_ok=True)
        for dirs in (self.dirs, self.image_dirs):
            existing = getattr(dirs, "existing", None) if dirs is not None else None
            if existing is not None:
                for p in existing.pop(exam, []):
                    Path(p).unlink(missing_ok=True)

    def write(self, res: ExamResult, split: str) -> list[str]:
        files: list[Path] = []
        if self.image_dirs is not None:  # first: a CT/label grid mismatch writes nothing
            from gpuconv.images.ct_slices import write_exam_images
            ct_of, image_opts = self.images
            files += write_exam_images(self.image_dirs, res.exam, split, ct_of[res.exam],
                                       res.header, set(res.boxes.k.tolist()), image_opts)
        if self.dirs is not None and res.polygons is not None:
            from gpuconv.results.polygons import polygon_lines_by_slice
            files += self.dirs.write_texts(res.exam, split,
                                           polygon_lines_by_slice(res.polygons),
                                           res.boxes.slices, self.write_empty)
        elif self.dirs is not None:
            files += self.dirs.write_exam(res.exam, split, res.boxes, self.write_empty)
        if "table" in self.formats:
            files.append(write_part(self.out, "boxes", res.exam, split, res.boxes, self.names))
        if res.instances is not None:
            from gpuconv.results.instances import write_instances_part
            files.append(write_instances_part(self.out, res.instances, self.names, split))
        return [p.relative_to(self.out).as_posix() for p in files]
