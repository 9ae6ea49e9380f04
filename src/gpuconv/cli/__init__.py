"""Command line: typer apps over the Python API; ``main`` is the console entry point."""

from gpuconv.cli.app import app, main

__all__ = ["app", "main"]
