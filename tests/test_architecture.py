"""The layout's promises (issue 13): every module imports, no import cycle among module-level
imports, the stage folders exist, and the package is never shadowed by a folder named gpuconv."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import gpuconv

SRC = Path(gpuconv.__file__).parent
STAGES = ("io", "dataset", "backends", "results", "writers", "images", "conversion", "analysis",
          "cli", "bench")


def _modules() -> list[str]:
    names = ["gpuconv"]
    for info in pkgutil.walk_packages([str(SRC)], prefix="gpuconv."):
        names.append(info.name)
    return sorted(names)


def test_the_stage_folders_are_the_packages():
    found = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    assert set(STAGES) <= found
    flat = sorted(p.name for p in SRC.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "errors.py"], flat   # nothing else at the top


@pytest.mark.parametrize("name", [m for m in _modules() if m != "gpuconv.__main__"])
def test_every_module_imports(name):
    import signal
    before = signal.getsignal(signal.SIGINT)
    importlib.import_module(name)
    # importing changes no process-wide signal disposition (an ignored SIGINT would be
    # inherited by every program this process starts: Ctrl-C would stop working in them)
    assert signal.getsignal(signal.SIGINT) is before, name


def _module_level_imports(path: Path, name: str) -> set[str]:
    """gpuconv modules imported at module level (not inside functions: those are lazy)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            if t.startswith("gpuconv"):
                out.add(t)
    return out


def test_no_import_cycle():
    modules = {}
    for name in _modules():
        rel = name.split(".")[1:]
        path = SRC.joinpath(*rel)
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        # an edge to one's own parent package is how every package works (the parent's
        # __init__ runs first); any other edge that closes a loop is a cycle
        graph[name] = {d for d in _module_level_imports(path, name)
                       if d in modules and d != name and not name.startswith(d + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_cli_and_process_pool_from_a_folder_that_holds_a_gpuconv_folder(tmp_path):
    """A folder named gpuconv/ in the working directory (a clone, an output folder) must not
    shadow the installed package: not for ``python -m``, nor for the worker processes."""
    (tmp_path / "gpuconv").mkdir()                              # namespace-package shadow
    r = subprocess.run([sys.executable, "-m", "gpuconv", "synth", "corpus", "-n", "3", "--size",
                        "64x48x6"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "gpuconv", "convert", "corpus", "--out", "gpuconv/o",
                        "--backend", "cpu", "--pool", "process", "--workers", "2"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "3 file(s) converted" in r.stdout and "2 process worker(s)" in r.stdout
    r = subprocess.run([sys.executable, "-c", "import gpuconv; print(gpuconv.__file__)"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and Path(r.stdout.strip()) == SRC / "__init__.py", r.stdout


def test_the_repository_root_does_not_shadow_the_package():
    root = SRC.parent.parent                # src/gpuconv -> repository root (src layout)
    assert not (root / "gpuconv").exists()
    r = subprocess.run([sys.executable, "-m", "gpuconv", "--version"], cwd=root,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("gpuconv "), r.stderr


def test_one_column_order_for_component_tables():
    """The GPU's (columns, n) tables and the CPU 3D kernel's (n, columns) array use the column
    names (and order) base.py declares, and those are the result types' fields."""
    from dataclasses import fields

    from gpuconv.backends import base, cpu_kernels3d
    assert [f.name for f in fields(base.SliceComponents)] == ["layer", *base.SLICE_COLUMNS]
    assert ({f.name for f in fields(base.Instances3D)}
            == {"layer", *base.INSTANCE_COLUMNS})
    k = cpu_kernels3d
    named = {"value": k.VAL, "voxels": k.VOX, "i0": k.I0, "i1": k.I1, "j0": k.J0, "j1": k.J1,
             "k0": k.K0, "k1": k.K1, "sum_i": k.SI, "sum_j": k.SJ, "sum_k": k.SK}
    assert [c for c, _ in sorted(named.items(), key=lambda kv: kv[1])] == list(
        base.INSTANCE_COLUMNS)
