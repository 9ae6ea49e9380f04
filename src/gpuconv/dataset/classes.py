"""The dataset's class list: which YOLO class id each segment gets.

Rules (documented in the README):
- Slicer segmentations: classes are identified by segment *name* across the dataset.  Without
  ``--classes`` the list is built from headers alone, in order of first appearance with files
  sorted by exam id and segments in their ``SegmentN`` order.
- Plain label maps (no Segment fields): label value v is class v-1, named ``str(v)`` unless a
  ``--classes`` file names it (line/entry v-1 names value v).
- ``--single-class``: every instance is class 0.
- A CT is not a label map: a plain map (no ``--classes``) with negative values, or with more
  distinct non-zero values than ``--max-classes`` (default 255; not counted with
  ``--single-class``), is refused with one line that points to ``--images``
  (``plain_map_problem``, also shown by ``gpuconv inspect``).  An unsigned CT (HU + 1024) has
  thousands of distinct values; a label map has a handful.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from gpuconv.errors import InputError
from gpuconv.io.safe_yaml import read_user_text
from gpuconv.io.nrrd_read import VolumeHeader

SINGLE_CLASS_NAME = "object"
MAX_CLASSES = 255   # --max-classes: more distinct values than this in a plain map = an image


def plain_map_problem(values, max_classes: int | None = MAX_CLASSES) -> str | None:
    """Why a plain map with these non-zero label ``values`` (any order, repeats allowed) looks
    like an image rather than a label map, or None.  ``max_classes`` None: no count limit."""
    import numpy as np
    values = np.unique(np.asarray(values))
    values = values[values != 0]
    if len(values) == 0:
        return None
    if values[0] < 0:
        return (f"not a label map: it has negative values (down to {values[0]}), as a CT in HU "
                "does")
    if max_classes is not None and len(values) > max_classes:
        return (f"not a label map: {len(values)} distinct values, more than --max-classes "
                f"{max_classes}, as a CT image has")
    if max_classes is not None and values[-1] > max_classes:
        # value v is class v - 1: the class list (and dataset.yaml) would grow with the value
        return (f"label value {values[-1]} is above --max-classes {max_classes} (a plain map's "
                f"value v is class v-1, so the class list would have {values[-1]} entries)")
    return None


def image_hint(problem: str) -> str:
    """The one-line refusal: the problem and where a CT belongs."""
    way_out = ("--classes" if "negative" in problem else "--classes or a higher --max-classes")
    if problem.startswith("label value"):
        return f"{problem}; give --classes (one name per value used) or a higher --max-classes"
    return (f"{problem}; give CT volumes with --images (label maps as the inputs), or "
            f"{way_out} if these really are label values")


def load_class_file(path) -> list[str]:
    """YAML (a list, an {id: name} mapping, or an Ultralytics dataset.yaml with ``names``), an
    MSD / nnU-Net ``dataset.json`` (its ``labels``), or plain text with one name per line."""
    path = Path(path)
    try:
        text = read_user_text(path, "classes file")  # UTF-8, size cap, one line (issue 14)
    except OSError as exc:
        raise InputError(f"cannot read classes file ({exc.strerror or exc})", path) from None
    names = None
    if path.suffix.lower() in (".yaml", ".yml"):
        from gpuconv.io.safe_yaml import load_yaml_text  # size and alias caps (issue 14)
        doc = load_yaml_text(text, "classes file", path)
        if isinstance(doc, dict) and "names" in doc:
            doc = doc["names"]
        if isinstance(doc, list):
            names = [str(n) for n in doc]
        elif isinstance(doc, dict):
            try:
                ids = sorted(int(k) for k in doc)
            except (TypeError, ValueError):
                raise InputError("class ids must be integers 0..N-1", path) from None
            if ids != list(range(len(ids))):
                raise InputError("class ids must run 0..N-1 without gaps", path)
            names = [str(doc[k] if k in doc else doc[str(k)]) for k in ids]
    elif path.suffix.lower() == ".json":  # an MSD / nnU-Net dataset.json (issue 16)
        from gpuconv.io.nifti import dataset_json_names
        names = dataset_json_names(text, path)
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()
                 and not line.lstrip().startswith("#")]
    if not names:
        raise InputError("classes file lists no classes", path)
    if len(set(names)) != len(names):
        raise InputError("classes file lists a name twice", path)
    return names


@dataclass
class ClassMap:
    """Maps each file's (layer, label value) pairs to class ids."""

    names: list[str]
    single_class: bool = False
    fixed: bool = False          # names came from --classes: unknown segment names are errors
    value_named: bool = False    # plain label maps: id = value - 1
    max_classes: int = MAX_CLASSES   # plain maps with more distinct values are refused

    def check_plain_values(self, values, path) -> None:
        """Refuse a plain map whose values look like an image (see ``plain_map_problem``);
        with --classes the class file's own rules apply instead."""
        if self.fixed:
            return
        problem = plain_map_problem(values, None if self.single_class else self.max_classes)
        if problem is not None:
            raise InputError(image_hint(problem), path)

    def ids_for(self, hdr: VolumeHeader) -> dict[tuple[int, int], int] | None:
        """{(layer, value): class id} for a Slicer file; None for a plain map (value - 1)."""
        if hdr.segments is None:
            return None
        index = {n: i for i, n in enumerate(self.names)}
        out = {}
        for s in hdr.segments:
            if self.single_class:
                cid = 0
            elif s.name in index:
                cid = index[s.name]
            else:
                raise InputError(f"segment '{s.name}' is not in the class list", hdr.path)
            key = (s.layer, s.label_value)
            if key in out and out[key] != cid:
                raise InputError(f"label/segment mismatch: layer {s.layer} value "
                                 f"{s.label_value} is claimed by two segments", hdr.path)
            out[key] = cid
        return out

    def class_of_value(self, value: int, path) -> int:
        """Class id of a plain label map's value."""
        if self.single_class:
            return 0
        cid = int(value) - 1
        if cid < 0:
            raise InputError(f"negative label value {value} in a plain label map", path)
        if self.fixed and cid >= len(self.names):
            raise InputError(f"label value {value} has no name in the classes file "
                             f"({len(self.names)} names)", path)
        return cid

    def final_names(self, max_plain_value: int = 0) -> list[str]:
        """Names for dataset.yaml; plain maps extend the list up to the largest value seen."""
        if self.single_class:
            return [SINGLE_CLASS_NAME]
        names = list(self.names)
        for v in range(len(names) + 1, max_plain_value + 1):
            names.append(str(v))
        return names


def build_class_map(headers: list[VolumeHeader], classes_file=None,
                    single_class: bool = False, max_classes: int = MAX_CLASSES) -> ClassMap:
    """Header-only pre-pass.  ``headers`` should be sorted by exam id for a stable order."""
    cm = _build_class_map(headers, classes_file, single_class)
    cm.max_classes = max_classes
    return cm


def _build_class_map(headers, classes_file, single_class) -> ClassMap:
    has_seg = any(h.segments is not None for h in headers)
    has_plain = any(h.segments is None for h in headers)
    if single_class:
        return ClassMap([SINGLE_CLASS_NAME], single_class=True)
    if classes_file is not None:
        return ClassMap(load_class_file(classes_file), fixed=True, value_named=has_plain)
    if has_seg and has_plain:
        plain = next(h.path for h in headers if h.segments is None)
        raise InputError(f"inputs mix Slicer segmentations with plain label maps (e.g. {plain}); "
                         "give --classes to say which name each label value has")
    names: list[str] = []
    seen = set()
    for h in headers:
        for s in h.segments or []:
            if s.name not in seen:
                seen.add(s.name)
                names.append(s.name)
    return ClassMap(names, value_named=has_plain)
