"""Small text files from users (``--classes``, ``--split``, ``--patients``): read with a size
cap and as UTF-8 (``read_user_text``), and YAML loaded without alias-expansion bombs.

``yaml.safe_load`` builds aliases as shared references, so a 400-byte document of nested aliases
is small in memory - until anything walks it (``str(names)``, a comparison, a JSON dump) and
meets 10^9 nodes.  So before constructing anything the document is *composed* (nodes only)
and refused when:

- the text is larger than ``MAX_YAML_BYTES`` (1 MiB),
- it holds more than ``MAX_YAML_ALIASES`` aliases (100; a class list needs none), or
- the node tree with every alias expanded would exceed ``MAX_YAML_NODES`` (100,000), counted on
  the composed graph with each node's expanded size computed once (so the check itself is
  linear), or nests deeper than ``MAX_YAML_DEPTH`` (200).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from gpuconv.errors import InputError, shown

MAX_YAML_BYTES = 1 << 20
MAX_YAML_ALIASES = 100
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 200


class _CountingLoader(yaml.SafeLoader):
    """SafeLoader that counts alias events while composing."""

    def __init__(self, stream):
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise _Limit(f"more than {MAX_YAML_ALIASES} YAML aliases")
        return super().compose_node(parent, index)


class _Limit(Exception):
    pass


def _expanded_size(root) -> int:
    """Number of nodes of ``root``'s tree with aliases expanded, without expanding them:
    iterative post-order over the graph, each node's size computed once."""
    size: dict[int, int] = {}
    stack = [(root, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_YAML_DEPTH:
            raise _Limit(f"YAML nests deeper than {MAX_YAML_DEPTH} levels")
        if id(node) in size:
            continue
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [c for kv in node.value for c in kv]
        else:
            size[id(node)] = 1
            continue
        if done:
            total = 1 + sum(size[id(c)] for c in children)
            if total > MAX_YAML_NODES:
                raise _Limit(f"YAML expands to more than {MAX_YAML_NODES} nodes (aliases)")
            size[id(node)] = total
            continue
        stack.append((node, depth, True))
        for c in children:
            if id(c) not in size:
                stack.append((c, depth + 1, False))
    return size[id(root)]


def load_yaml_text(text: str, what: str = "YAML file", path=None):
    """``yaml.safe_load(text)`` within the limits above; any problem is one InputError."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise InputError(f"{what} is larger than {MAX_YAML_BYTES} bytes", path)
    try:
        loader = _CountingLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _expanded_size(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except _Limit as exc:
        raise InputError(f"{what} refused: {exc}", path) from None
    except yaml.YAMLError as exc:
        raise InputError(f"{what} is not valid YAML ({shown(exc, 200)})", path) from None
    except RecursionError:
        raise InputError(f"{what} refused: YAML nests too deeply", path) from None


MAX_USER_TEXT_BYTES = 64 << 20   # a split CSV of a million exams is ~20 MB


def read_user_text(path, what: str = "file", max_bytes: int = MAX_USER_TEXT_BYTES) -> str:
    """A small UTF-8 text file (a BOM is dropped), or one InputError: unreadable, not a
    regular file, larger than ``max_bytes`` or not UTF-8 (the byte and its offset named)."""
    from gpuconv.io.nrrd_read import open_regular
    path = Path(path)
    fd, _ = open_regular(path, what, path)
    try:
        with open(fd, "rb", closefd=True) as fh:
            blob = fh.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(f"cannot read {what} ({exc.strerror or exc})", path) from None
    if len(blob) > max_bytes:
        raise InputError(f"{what} is larger than {max_bytes} bytes", path)
    try:
        return blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not UTF-8 text (byte 0x{blob[exc.start]:02x} at offset "
                         f"{exc.start})", path) from None


def load_yaml_file(path, what: str = "YAML file"):
    """Read a UTF-8 YAML file (at most 1 MiB) and load it with ``load_yaml_text``."""
    text = read_user_text(path, what, MAX_YAML_BYTES)
    return load_yaml_text(text, what, path)
